"""The inode table: kernel lookup counts, open handles and the unlink-while-open rule.

An inode is purged (its row, blocks and xattrs deleted) only when all three are gone: directory entries
(nlink == 0), kernel lookups (every `lookup`/`create`/`mkdir`/readdirplus entry is balanced by `forget`), and
open handles.  Until then an unlinked file stays readable and writable through its handles.  Orphans left by a
crash (nlink 0 in the store) are purged at the next mount, when the kernel holds no references at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Handle:
    ino: int
    flags: int
    dirty: bool = False  # written through: queue the file for the indexer at fsync and release
    uncached: bool = False  # its contents must bypass the kernel's page cache (generated files, secrets)


class InodeTable:
    def __init__(self, nlink_of: Callable[[int], int | None], purge: Callable[[int], None]) -> None:
        self._nlink_of = nlink_of  # None when the inode no longer exists
        self._purge = purge
        self.lookups: Counter[int] = Counter()
        self.opens: Counter[int] = Counter()
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1

    def remember(self, ino: int, n: int = 1) -> None:
        self.lookups[ino] += n

    def forget(self, ino: int, n: int) -> None:
        left = self.lookups[ino] - n
        if left > 0:
            self.lookups[ino] = left
            return
        del self.lookups[ino]
        self.release_if_unused(ino)

    def open(self, ino: int, flags: int, *, uncached: bool = False) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(ino, flags, uncached=uncached)
        self.opens[ino] += 1
        return fh

    def handle(self, fh: int) -> Handle | None:
        return self.handles.get(fh)

    def close(self, fh: int) -> int | None:
        h = self.handles.pop(fh, None)
        if h is None:
            return None
        self.opens[h.ino] -= 1
        if self.opens[h.ino] <= 0:
            del self.opens[h.ino]
            self.release_if_unused(h.ino)
        return h.ino

    def in_use(self, ino: int) -> bool:
        return ino in self.lookups or ino in self.opens

    def release_if_unused(self, ino: int) -> None:
        """Purge `ino` if no entry, lookup or handle references it any more (called after each drop)."""
        if self.in_use(ino):
            return
        if self._nlink_of(ino) == 0:
            self._purge(ino)
