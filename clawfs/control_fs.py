"""The `.clawfs` control tree seen as a filesystem: the read side of the VFS's calls (lookup, getattr, readdir,
open, read, readlink, xattrs) answered from the in-memory tree of clawfs/control.py, with its own handles.

clawfs/router.py sends it every inode and handle it owns; it never sees the store.  Every attribute is volatile
(the kernel must not cache what a search or `status` regenerates), every handle bypasses the page cache, and
an open takes one snapshot of the file, so `status` read in pieces stays consistent while the index moves on.
Writes never reach it: the router refuses them with EROFS before they would.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator

from .control import CTL_BASE, ControlTree, Node, Prepared
from .errors import FsError, IsADir, NoData, NotADir, NotFound, ReadOnly
from .vfs import Attr


class ControlFs:
    def __init__(self, tree: ControlTree, root_attr: Callable[[], Attr]) -> None:
        self.tree = tree
        self._root_attr = root_attr  # the mount root's attributes: the `..` of `.clawfs` itself
        self._views: dict[int, bytes] = {}  # open handle -> the generated file's contents at open
        self._next_fh = CTL_BASE  # far above the VFS's handles, so a handle alone says whose it is

    def owns(self, ino: int) -> bool:
        return self.tree.owns(ino)

    def owns_handle(self, fh: int) -> bool:
        return fh >= CTL_BASE

    def _attr(self, node: Node) -> Attr:
        t = self.tree.created_ns
        nlink = 2 if stat.S_ISDIR(node.mode) else 1
        return Attr(node.ino, 0, node.mode, nlink, self.tree.uid, self.tree.gid, 0, len(node.data), 0,
                    4096, t, t, t, volatile=True)

    def _node(self, ino: int) -> Node:
        node = self.tree.node(ino)
        if node is None:
            raise NotFound("gone from .clawfs")
        return node

    # -- lookups and attributes -----------------------------------------------------------------------------
    def prepare(self, parent: int, name: bytes) -> Callable[[], Prepared] | None:
        return self.tree.prepare(parent, name)

    def lookup_root(self) -> Attr:
        """`.clawfs` itself, looked up in the mount's root."""
        return self._attr(self._node(self.tree.root))

    def lookup(self, parent: int, name: bytes, prepared: Prepared | None = None) -> Attr:
        node = self.tree.lookup(parent, name, prepared)
        if node is None:
            raise NotFound()
        return self._attr(node)

    def getattr(self, ino: int) -> Attr:
        return self._attr(self._node(ino))

    def readlink(self, ino: int) -> bytes:
        return self._node(ino).data

    # -- files ----------------------------------------------------------------------------------------------
    def open(self, ino: int, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise ReadOnly(".clawfs is read-only")
        node = self._node(ino)
        if stat.S_ISDIR(node.mode):
            raise IsADir()
        self._next_fh += 1
        self._views[self._next_fh] = node.data  # one consistent view per open: status changes while it is read
        return self._next_fh

    def read(self, fh: int, offset: int, size: int) -> bytes:
        return self._view(fh)[offset:offset + size]

    def flush(self, fh: int) -> None:
        self._view(fh)

    def release(self, fh: int) -> None:
        self._views.pop(fh, None)

    def _view(self, fh: int) -> bytes:
        view = self._views.get(fh)
        if view is None:
            raise FsError("bad file handle", err=errno.EBADF)
        return view

    # -- directories ----------------------------------------------------------------------------------------
    def opendir(self, ino: int) -> int:
        if not stat.S_ISDIR(self._node(ino).mode):
            raise NotADir()
        return ino

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Attr, int]]:
        """As the VFS's readdir, with offsets simply counting entries: the listing is regenerated, never edited."""
        node = self._node(ino)
        parent = self.getattr(node.parent) if node.parent else self._root_attr()
        entries = [(b".", self._attr(node)), (b"..", parent)]
        entries += [(name, self._attr(child)) for name, child in self.tree.listing(ino)]
        for offset, (name, attr) in enumerate(entries[start:], start + 1):
            yield name, attr, offset

    # -- xattrs ---------------------------------------------------------------------------------------------
    def getxattr(self, ino: int, name: bytes) -> bytes:
        if not name.startswith(b"user."):
            raise NoData()
        value = self._node(ino).xattrs.get(name)
        if value is None:
            raise NoData()
        return value

    def listxattr(self, ino: int) -> list[bytes]:
        return list(self._node(ino).xattrs)
