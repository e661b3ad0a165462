"""The router: what the FUSE adapter calls.  It sends each request once, by inode or handle, to the `.clawfs`
control tree (clawfs/control_fs.py) or to the VFS (clawfs/vfs.py), so the VFS is POSIX over the store alone.

`.clawfs` is reachable by name in the mount's root but not listed there (as ZFS hides `.zfs`): `rsync -a`,
`tar` and `cp -r` of a mount then copy the agent's files only, and a copy restored into another mount never
tries to write into it.  Every change that names a node of the tree (or `.clawfs` itself, by its name in the
root) is refused here with EROFS, as a read-only mount refuses it.  Without a control tree (a mount's VFS used
by the migrator, or `-o` options that turn it off) everything goes to the VFS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .control import NAME as CTL_NAME
from .control import ControlTree, Prepared
from .control_fs import ControlFs
from .errors import ReadOnly
from .store import ROOT
from .vfs import VFS, Attr, Ctx, FsStats


class Router:
    def __init__(self, vfs: VFS, control: ControlTree | None = None) -> None:
        self.vfs = vfs
        self.control = ControlFs(control, lambda: vfs.getattr(ROOT)) if control is not None else None

    def _ctl(self, ino: int) -> ControlFs | None:
        """The control tree if it owns `ino`, else None (the VFS's)."""
        return self.control if self.control is not None and self.control.owns(ino) else None

    def _ctl_handle(self, fh: int) -> ControlFs | None:
        return self.control if self.control is not None and self.control.owns_handle(fh) else None

    def _refuse(self, *inos: int, names: tuple[tuple[int, bytes], ...] = ()) -> None:
        """EROFS for a change that touches the control tree."""
        if self.control is None:
            return
        if any(self.control.owns(i) for i in inos) or (ROOT, CTL_NAME) in names:
            raise ReadOnly(".clawfs is read-only")

    # -- lookups and attributes -----------------------------------------------------------------------------
    def lookup_work(self, parent: int, name: bytes) -> Callable[[], Prepared] | None:
        """Blocking work that looking up `name` needs first, to be run off the request loop and its result passed
        to `lookup`: a `.clawfs` search (see clawfs/control.py); None for every other name."""
        ctl = self._ctl(parent)
        if ctl is None:
            return None
        work = ctl.prepare(parent, name)
        if work is not None and not self.vfs.readonly:
            self.vfs.commit_pending()  # the search reads through its own connection: let it see every change
        return work

    def lookup(self, parent: int, name: bytes, prepared: Prepared | None = None) -> Attr:
        if (ctl := self._ctl(parent)) is not None:
            return ctl.lookup(parent, name, prepared)
        if self.control is not None and parent == ROOT and name == CTL_NAME:
            return self.control.lookup_root()
        return self.vfs.lookup(parent, name)

    def remember(self, ino: int) -> None:
        if self._ctl(ino) is None:  # the tree's nodes live as long as the tree decides, not the kernel
            self.vfs.remember(ino)

    def forget(self, items: list[tuple[int, int]]) -> None:
        self.vfs.forget([(ino, n) for ino, n in items if self._ctl(ino) is None])

    def getattr(self, ino: int) -> Attr:
        ctl = self._ctl(ino)
        return ctl.getattr(ino) if ctl else self.vfs.getattr(ino)

    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                size: int | None = None, atime_ns: int | None = None, mtime_ns: int | None = None,
                ctime_ns: int | None = None) -> Attr:
        self._refuse(ino)
        return self.vfs.setattr(ino, mode=mode, uid=uid, gid=gid, size=size, atime_ns=atime_ns,
                                mtime_ns=mtime_ns, ctime_ns=ctime_ns)

    def readlink(self, ino: int) -> bytes:
        ctl = self._ctl(ino)
        return ctl.readlink(ino) if ctl else self.vfs.readlink(ino)

    # -- creating and removing ------------------------------------------------------------------------------
    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Attr:
        self._refuse(parent)
        return self.vfs.mknod(parent, name, mode, rdev, ctx)

    def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Attr:
        self._refuse(parent)
        return self.vfs.mkdir(parent, name, mode, ctx)

    def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Attr:
        self._refuse(parent)
        return self.vfs.symlink(parent, name, target, ctx)

    def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx) -> tuple[int, Attr]:
        self._refuse(parent)
        return self.vfs.create(parent, name, mode, flags, ctx)

    def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        self._refuse(ino, new_parent)
        return self.vfs.link(ino, new_parent, new_name)

    def unlink(self, parent: int, name: bytes) -> None:
        self._refuse(parent, names=((parent, name),))
        self.vfs.unlink(parent, name)

    def rmdir(self, parent: int, name: bytes) -> None:
        self._refuse(parent, names=((parent, name),))
        self.vfs.rmdir(parent, name)

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int = 0) -> None:
        self._refuse(old_parent, new_parent, names=((old_parent, old_name), (new_parent, new_name)))
        self.vfs.rename(old_parent, old_name, new_parent, new_name, flags)

    # -- files ----------------------------------------------------------------------------------------------
    def open(self, ino: int, flags: int) -> int:
        ctl = self._ctl(ino)
        return ctl.open(ino, flags) if ctl else self.vfs.open(ino, flags)

    def uncached(self, fh: int) -> bool:
        """The open file must bypass the kernel's page cache: every `.clawfs` file (it changes under the cache),
        and the VFS's secrets."""
        return self._ctl_handle(fh) is not None or self.vfs.uncached(fh)

    def read(self, fh: int, offset: int, size: int) -> bytes:
        ctl = self._ctl_handle(fh)
        return ctl.read(fh, offset, size) if ctl else self.vfs.read(fh, offset, size)

    def write(self, fh: int, offset: int, data: bytes) -> int:
        if self._ctl_handle(fh) is not None:
            raise ReadOnly(".clawfs is read-only")
        return self.vfs.write(fh, offset, data)

    def flush(self, fh: int) -> None:
        ctl = self._ctl_handle(fh)
        return ctl.flush(fh) if ctl else self.vfs.flush(fh)

    def fsync(self, fh: int, datasync: bool) -> None:
        if self._ctl_handle(fh) is None:  # nothing of .clawfs is stored: nothing to sync
            self.vfs.fsync(fh, datasync)

    def release(self, fh: int) -> None:
        ctl = self._ctl_handle(fh)
        return ctl.release(fh) if ctl else self.vfs.release(fh)

    # -- directories ----------------------------------------------------------------------------------------
    def opendir(self, ino: int) -> int:
        ctl = self._ctl(ino)
        return ctl.opendir(ino) if ctl else self.vfs.opendir(ino)

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Attr, int]]:
        """(name, attributes, offset of the next entry) from offset `start` (see VFS.readdir)."""
        ctl = self._ctl(ino)
        return ctl.readdir(ino, start) if ctl else self.vfs.readdir(ino, start)

    def fsyncdir(self, ino: int, datasync: bool) -> None:
        if self._ctl(ino) is None:
            self.vfs.fsyncdir(ino, datasync)

    # -- xattrs ---------------------------------------------------------------------------------------------
    def getxattr(self, ino: int, name: bytes) -> bytes:
        ctl = self._ctl(ino)
        return ctl.getxattr(ino, name) if ctl else self.vfs.getxattr(ino, name)

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        self._refuse(ino)
        self.vfs.setxattr(ino, name, value)

    def listxattr(self, ino: int) -> list[bytes]:
        ctl = self._ctl(ino)
        return ctl.listxattr(ino) if ctl else self.vfs.listxattr(ino)

    def removexattr(self, ino: int, name: bytes) -> None:
        self._refuse(ino)
        self.vfs.removexattr(ino, name)

    # -- whole filesystem -----------------------------------------------------------------------------------
    def statfs(self) -> FsStats:
        return self.vfs.statfs()
