"""Writing files into an unmounted store by path, through the VFS, idempotently.

Importers go through `clawfs.vfs.VFS` (not the store's tables), so what they write obeys the same rules as a write
through the mount: names are encrypted, secrets in `secrets/` get their write-only mark, and every file is queued
for the semantic indexer in the same unit of work.

Idempotence: `put` compares a file already at the path with the new contents and leaves it alone when they are
equal (contents, xattrs and mtime), so a rerun converges and a resumed run redoes the last batch harmlessly.
Streams (`stream`) write to a hidden temporary name and rename it over the target only when the result
differs, so a large JSON Lines file is never buffered whole and an interrupted stream never leaves half a file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from clawfs.errors import Exists, Invalid, IsADir, NameTooLong, NotADir
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

FILE_MODE = 0o644
DIR_MODE = 0o755
COMPARE_CHUNK = 1 << 20


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class PathConflict(Exception):
    """A path cannot be written because another kind of node is there (a file where a directory goes)."""


@dataclass
class HomeWriter:
    vfs: VFS
    ctx: Ctx = field(default_factory=lambda: Ctx(uid=os.getuid(), gid=os.getgid()))
    counts: Counts = field(default_factory=Counts)
    _dirs: dict[str, int] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.vfs.store

    # -- directories ----------------------------------------------------------------------------------------
    def dir(self, path: str) -> int:
        """The directory at `path` (relative; '' is the root), made with its parents when missing."""
        path = path.strip("/")
        if not path:
            return ROOT
        ino = self._dirs.get(path)
        if ino is not None:
            return ino
        parent_path, _, name = path.rpartition("/")
        parent = self.dir(parent_path)
        found = self.store.lookup(parent, name.encode())
        if found is None:
            ino = self.vfs.mkdir(parent, name.encode(), DIR_MODE, self.ctx).ino
            self.vfs.forget([(ino, 1)])
        elif stat.S_ISDIR(self.store.get(found).mode):
            ino = found
        else:
            raise PathConflict(f"{path} is a file, but a directory is needed there")
        if len(self._dirs) > 100_000:  # bounded memory on huge trees; a miss costs one lookup per level
            self._dirs.clear()
        self._dirs[path] = ino
        return ino

    # -- whole files ----------------------------------------------------------------------------------------
    def put(self, path: str, data: bytes, *, mtime_ns: int | None = None,
            xattrs: dict[str, bytes] | None = None) -> str:
        """Write the file at `path`; returns "created", "updated" or "unchanged"."""
        parent_path, _, name = path.strip("/").rpartition("/")
        parent = self.dir(parent_path)
        ino = self.store.lookup(parent, name.encode())
        if ino is None:
            fh, attr = self.vfs.create(parent, name.encode(), FILE_MODE, os.O_WRONLY, self.ctx)
            ino, outcome = attr.ino, "created"
            self.vfs.forget([(ino, 1)])
        else:
            row = self.store.get(ino)
            if not stat.S_ISREG(row.mode):
                raise PathConflict(f"{path} exists and is not a regular file")
            if self._same(ino, data, mtime_ns, xattrs or {}):
                self.counts.unchanged += 1
                return "unchanged"
            fh, outcome = self.vfs.open(ino, os.O_RDWR | os.O_TRUNC), "updated"
        try:
            if data:
                self.vfs.write(fh, 0, data)
        finally:
            self.vfs.release(fh)
        self._finish(ino, mtime_ns, xattrs or {})
        setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
        self.counts.bytes += len(data)
        return outcome

    def _finish(self, ino: int, mtime_ns: int | None, xattrs: dict[str, bytes]) -> None:
        for name, value in xattrs.items():
            self.vfs.setxattr(ino, name.encode(), value)
        if mtime_ns is not None:
            self.vfs.setattr(ino, mtime_ns=mtime_ns, atime_ns=mtime_ns)

    def _same(self, ino: int, data: bytes, mtime_ns: int | None, xattrs: dict[str, bytes]) -> bool:
        row = self.store.get(ino)
        if row.size != len(data) or (mtime_ns is not None and row.mtime_ns != mtime_ns):
            return False
        if any(self.store.xattr_get(row, k.encode()) != v for k, v in xattrs.items()):
            return False
        return self.read(ino) == data

    def read(self, ino: int) -> bytes:
        """A file's contents straight from the store (secrets included: this is the host side)."""
        row = self.store.get(ino)
        return self.store.read(row, 0, row.size)

    def file_digest(self, path: str) -> str | None:
        """sha256 hex of the file at `path`, or None when there is no regular file there."""
        ino = self.resolve(path)
        if ino is None or not stat.S_ISREG(self.store.get(ino).mode):
            return None
        return self._digest_of(ino)

    def resolve(self, path: str) -> int | None:
        ino = ROOT
        for name in path.strip("/").split("/"):
            found = self.store.lookup(ino, name.encode())
            if found is None:
                return None
            ino = found
        return ino

    # -- streamed files -------------------------------------------------------------------------------------
    @contextmanager
    def stream(self, path: str, *, mtime_ns: int | None = None) -> Iterator[_Stream]:
        """Write a file piece by piece; it replaces `path` only if its contents differ (see module doc)."""
        parent_path, _, name = path.strip("/").rpartition("/")
        parent = self.dir(parent_path)
        tmp = f".{name}.clawfs-migrating".encode()
        if self.store.lookup(parent, tmp) is not None:
            self.vfs.unlink(parent, tmp)  # left by an interrupted run
        fh, attr = self.vfs.create(parent, tmp, FILE_MODE, os.O_WRONLY, self.ctx)
        self.vfs.forget([(attr.ino, 1)])
        out = _Stream(self.vfs, fh)
        try:
            yield out
        except BaseException:
            self.vfs.release(fh)
            self.vfs.unlink(parent, tmp)
            raise
        out.flush()
        self.vfs.release(fh)
        self._settle(parent, tmp, name.encode(), attr.ino, out, mtime_ns)

    def _settle(self, parent: int, tmp: bytes, name: bytes, ino: int, out: _Stream, mtime_ns: int | None) -> None:
        old = self.store.lookup(parent, name)
        if old is not None and self._digest_of(old) == out.sha.hexdigest():
            self.vfs.unlink(parent, tmp)
            self.counts.unchanged += 1
            return
        if old is not None and not stat.S_ISREG(self.store.get(old).mode):
            self.vfs.unlink(parent, tmp)
            raise PathConflict(f"{name.decode()} exists and is not a regular file")
        self._finish(ino, mtime_ns, {})
        self.vfs.rename(parent, tmp, parent, name)
        self.counts.created += old is None
        self.counts.updated += old is not None
        self.counts.bytes += out.size

    def _digest_of(self, ino: int) -> str:
        h = hashlib.sha256()
        row = self.store.get(ino)
        for off in range(0, row.size, COMPARE_CHUNK):
            h.update(self.store.read(row, off, min(COMPARE_CHUNK, row.size - off)))
        return h.hexdigest()


class _Stream:
    """Buffers small pieces (a JSON line each) into writes of a block or more: one VFS write per line would
    cost a unit of work each."""

    BUFFER = 256 * 1024

    def __init__(self, vfs: VFS, fh: int) -> None:
        self.vfs, self.fh = vfs, fh
        self.size = 0
        self.sha = hashlib.sha256()
        self._buf: list[bytes] = []
        self._buffered = 0

    def write(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        self.sha.update(data)
        if self._buffered >= self.BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._buffered:
            self.vfs.write(self.fh, self.size, b"".join(self._buf))
            self.size += self._buffered
            self._buf, self._buffered = [], 0


# What loses one path only (the row is skipped and listed); anything else (a full disk, a store that fails
# authentication) stops the run, because every later write would fail the same way.
PATH_ERRORS = (PathConflict, NotADir, IsADir, Exists, NameTooLong, Invalid)


def conflict_reason(e: Exception) -> str:
    """A one-line reason for a path that could not be written."""
    return str(e) if isinstance(e, PathConflict) else f"path conflict ({e})"
