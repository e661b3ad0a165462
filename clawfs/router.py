"""The router: what the FUSE adapter calls.  It sends each request once, by inode or handle, to the `.clawfs`
control tree (clawfs/control_fs.py) or to the VFS (clawfs/vfs.py), so the VFS is POSIX over the store alone.

`.clawfs` is reachable by name in the mount's root but not listed there (as ZFS hides `.zfs`): `rsync -a`,
`tar` and `cp -r` of a mount then copy the agent's files only, and a copy restored into another mount never
tries to write into it.  Every change that names a node of the tree (or `.clawfs` itself, by its name in the
root) is refused here with EROFS, as a read-only mount refuses it.  Without a control tree (a mount's VFS used
by the migrator, or `-o` options that turn it off) everything goes to the VFS.

Who may do what (clawfs/policy.py) is checked here too, once per request, before either side is asked: given an
`Access`, every call that carries the caller's `Ctx` passes the policy `Gate` (no `Ctx`: an internal caller,
the owner's), a write through a handle is checked against what the inode is at the time of the write (a file
moved under policy after the agent opened it), and every attribute is shown as `Access.shown_mode` says.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Callable, Iterator

from . import home
from . import policy as pol
from .control import NAME as CTL_NAME
from .control import ControlTree, Prepared
from .control_fs import ControlFs
from .db import InodeRow
from .errors import FsError, ReadOnly
from .store import ROOT
from .vfs import VFS, Attr, Ctx, FsStats

log = logging.getLogger("clawfs.router")


class _Tree:
    """The store (and the `.clawfs` tree) as clawfs/policy.py sees it: paths, children, marks."""

    def __init__(self, vfs: VFS, control: ControlTree | None) -> None:
        self.vfs, self.control = vfs, control

    def child(self, ino: int, name: bytes) -> int | None:
        return self.vfs.store.lookup(ino, name)

    def children(self, ino: int) -> list[tuple[bytes, int]]:
        return [(name, child) for _, name, child in self.vfs.store.entries(ino)]

    def path(self, ino: int) -> pol.Path | None:
        if self.control is not None and self.control.owns(ino):
            return self._ctl_path(self.control, ino)
        found = self.vfs.store.path_of(ino)
        return None if found is None else pol.parts(found)

    def paths(self, ino: int) -> list[pol.Path]:
        if self.control is not None and self.control.owns(ino):
            found = self._ctl_path(self.control, ino)
            return [] if found is None else [found]
        return [pol.parts(p) for p in self.vfs.store.paths_of(ino)]

    @staticmethod
    def _ctl_path(tree: ControlTree, ino: int) -> pol.Path | None:
        names: list[bytes] = []
        while ino != tree.root:
            node = tree.nodes.get(ino)
            parent = tree.nodes.get(node.parent) if node is not None else None
            if node is None or parent is None:
                return None
            names.append(next((n for n, c in parent.children.items() if c == ino), b"?"))
            ino = node.parent
        return (CTL_NAME, *reversed(names))

    def _row(self, ino: int) -> InodeRow | None:
        if self.control is not None and self.control.owns(ino):
            return None
        try:
            return self.vfs.store.get(ino)
        except FsError:
            return None

    def is_dir(self, ino: int) -> bool:
        row = self._row(ino)
        return row is not None and stat.S_ISDIR(row.mode)

    def is_secret(self, ino: int) -> bool:
        row = self._row(ino)
        return row is not None and home.is_secret(row.flags)


def _log_refusal(r: pol.Refusal) -> None:
    log.warning("refused: %s", r)


class Router:
    def __init__(self, vfs: VFS, control: ControlTree | None = None, access: pol.Access | None = None,
                 audit: Callable[[pol.Refusal], None] = _log_refusal) -> None:
        self.vfs = vfs
        self.control = ControlFs(control, lambda: vfs.getattr(ROOT)) if control is not None else None
        self._tree = _Tree(vfs, control)
        self.gate = pol.Gate(access, self._tree, audit) if access is not None else None
        self._agent_handles: set[int] = set()  # handles the agent opened for writing: checked at each write

    # -- who may ------------------------------------------------------------------------------------------
    def _show(self, a: Attr) -> Attr:
        if self.gate is None:
            return a
        audit = self.control is not None and self.control.owns(a.ino) and pol.is_audit(self._tree.path(a.ino) or ())
        mode, uid, gid = self.gate.access.shown_mode(a.mode, a.uid, a.gid, audit)
        return dataclasses.replace(a, mode=mode, uid=uid, gid=gid)

    def _read(self, ctx: Ctx | None, op: str, ino: int) -> None:
        if self.gate is not None and ctx is not None:
            self.gate.read(ctx.uid, ctx.pid, op, ino)

    def _change(self, ctx: Ctx | None, op: str, ino: int) -> None:
        if self.gate is not None and ctx is not None:
            self.gate.change(ctx.uid, ctx.pid, op, ino)

    def _name(self, ctx: Ctx | None, op: str, parent: int, name: bytes, ino: int | None = None) -> None:
        if self.gate is not None and ctx is not None:
            self.gate.name(ctx.uid, ctx.pid, op, parent, name, ino)

    def _renamed(self) -> None:
        if self.gate is not None:
            self.gate.renamed()

    def _entry_ino(self, parent: int, name: bytes) -> int | None:
        if self.control is not None and self.control.owns(parent):
            return None
        try:
            return self.vfs.store.lookup(parent, name)
        except FsError:
            return None

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

    def lookup(self, parent: int, name: bytes, prepared: Prepared | None = None, ctx: Ctx | None = None) -> Attr:
        self._read(ctx, "lookup", parent)
        if (ctl := self._ctl(parent)) is not None:
            return self._show(ctl.lookup(parent, name, prepared))
        if self.control is not None and parent == ROOT and name == CTL_NAME:
            return self._show(self.control.lookup_root())
        return self._show(self.vfs.lookup(parent, name))

    def remember(self, ino: int) -> None:
        if self._ctl(ino) is None:  # the tree's nodes live as long as the tree decides, not the kernel
            self.vfs.remember(ino)

    def forget(self, items: list[tuple[int, int]]) -> None:
        self.vfs.forget([(ino, n) for ino, n in items if self._ctl(ino) is None])

    def getattr(self, ino: int, ctx: Ctx | None = None) -> Attr:
        if self.gate is not None and ctx is not None:
            self.gate.who(ctx.uid, ctx.pid, "getattr", ino)  # the agent may look at the audit's attributes
        ctl = self._ctl(ino)
        return self._show(ctl.getattr(ino) if ctl else self.vfs.getattr(ino))

    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                size: int | None = None, atime_ns: int | None = None, mtime_ns: int | None = None,
                ctime_ns: int | None = None, ctx: Ctx | None = None) -> Attr:
        self._refuse(ino)
        self._change(ctx, "truncate" if size is not None else "setattr", ino)
        return self._show(self.vfs.setattr(ino, mode=mode, uid=uid, gid=gid, size=size, atime_ns=atime_ns,
                                           mtime_ns=mtime_ns, ctime_ns=ctime_ns))

    def readlink(self, ino: int, ctx: Ctx | None = None) -> bytes:
        self._read(ctx, "readlink", ino)
        ctl = self._ctl(ino)
        return ctl.readlink(ino) if ctl else self.vfs.readlink(ino)

    # -- creating and removing ------------------------------------------------------------------------------
    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Attr:
        self._refuse(parent)
        self._name(ctx, "mknod", parent, name)
        return self._show(self.vfs.mknod(parent, name, mode, rdev, ctx))

    def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Attr:
        self._refuse(parent)
        self._name(ctx, "mkdir", parent, name)
        return self._show(self.vfs.mkdir(parent, name, mode, ctx))

    def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Attr:
        self._refuse(parent)
        self._name(ctx, "symlink", parent, name)  # harmless in itself: a write through it is checked on the target
        return self._show(self.vfs.symlink(parent, name, target, ctx))

    def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx) -> tuple[int, Attr]:
        self._refuse(parent)
        self._name(ctx, "create", parent, name)
        fh, attr = self.vfs.create(parent, name, mode, flags, ctx)
        if self.gate is not None and self.gate.access.who(ctx.uid) == pol.AGENT:
            self._agent_handles.add(fh)
        return fh, self._show(attr)

    def link(self, ino: int, new_parent: int, new_name: bytes, ctx: Ctx | None = None) -> Attr:
        self._refuse(ino, new_parent)
        self._change(ctx, "link", ino)
        self._name(ctx, "link", new_parent, new_name)
        attr = self.vfs.link(ino, new_parent, new_name)
        self._renamed()
        return self._show(attr)

    def unlink(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        self._refuse(parent, names=((parent, name),))
        self._name(ctx, "unlink", parent, name)
        self.vfs.unlink(parent, name)
        self._renamed()

    def rmdir(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        self._refuse(parent, names=((parent, name),))
        self._name(ctx, "rmdir", parent, name, self._entry_ino(parent, name))
        self.vfs.rmdir(parent, name)
        self._renamed()

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int = 0,
               ctx: Ctx | None = None) -> None:
        self._refuse(old_parent, new_parent, names=((old_parent, old_name), (new_parent, new_name)))
        if self.gate is not None and ctx is not None:
            src = self._entry_ino(old_parent, old_name)
            if src is not None:
                self.gate.rename(ctx.uid, ctx.pid, (old_parent, old_name, src),
                                 (new_parent, new_name, self._entry_ino(new_parent, new_name)),
                                 exchange=bool(flags & 2))
        self.vfs.rename(old_parent, old_name, new_parent, new_name, flags)
        self._renamed()

    # -- files ----------------------------------------------------------------------------------------------
    def open(self, ino: int, flags: int, ctx: Ctx | None = None) -> int:
        writes = flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if writes and self._ctl(ino) is None:
            self._change(ctx, "open for writing", ino)
        else:
            self._read(ctx, "open", ino)
        ctl = self._ctl(ino)
        fh = ctl.open(ino, flags) if ctl else self.vfs.open(ino, flags)
        if writes and self.gate is not None and ctx is not None and self.gate.access.who(ctx.uid) == pol.AGENT:
            self._agent_handles.add(fh)
        return fh

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
        if self.gate is not None and fh in self._agent_handles:
            # what the inode is now: a file moved under policy since the agent opened it is policy
            handle = self.vfs.inodes.handle(fh)
            if handle is not None:
                self.gate.change(self.gate.access.agent_uid, 0, "write", handle.ino)
        return self.vfs.write(fh, offset, data)

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """As `write`: refused on `.clawfs`, checked against what the inode is now for the agent."""
        if self._ctl_handle(fh) is not None:
            raise ReadOnly(".clawfs is read-only")
        if self.gate is not None and fh in self._agent_handles:
            handle = self.vfs.inodes.handle(fh)
            if handle is not None:
                self.gate.change(self.gate.access.agent_uid, 0, "fallocate", handle.ino)
        self.vfs.fallocate(fh, mode, offset, length)

    def flush(self, fh: int) -> None:
        ctl = self._ctl_handle(fh)
        return ctl.flush(fh) if ctl else self.vfs.flush(fh)

    def fsync(self, fh: int, datasync: bool) -> None:
        if self._ctl_handle(fh) is None:  # nothing of .clawfs is stored: nothing to sync
            self.vfs.fsync(fh, datasync)

    def release(self, fh: int) -> None:
        self._agent_handles.discard(fh)
        ctl = self._ctl_handle(fh)
        return ctl.release(fh) if ctl else self.vfs.release(fh)

    # -- directories ----------------------------------------------------------------------------------------
    def opendir(self, ino: int, ctx: Ctx | None = None) -> int:
        self._read(ctx, "opendir", ino)
        ctl = self._ctl(ino)
        return ctl.opendir(ino) if ctl else self.vfs.opendir(ino)

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Attr, int]]:
        """(name, attributes, offset of the next entry) from offset `start` (see VFS.readdir)."""
        ctl = self._ctl(ino)
        for name, attr, nxt in (ctl.readdir(ino, start) if ctl else self.vfs.readdir(ino, start)):
            yield name, self._show(attr), nxt

    def fsyncdir(self, ino: int, datasync: bool) -> None:
        if self._ctl(ino) is None:
            self.vfs.fsyncdir(ino, datasync)

    # -- xattrs ---------------------------------------------------------------------------------------------
    def getxattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> bytes:
        self._read(ctx, "getxattr", ino)
        ctl = self._ctl(ino)
        return ctl.getxattr(ino, name) if ctl else self.vfs.getxattr(ino, name)

    def setxattr(self, ino: int, name: bytes, value: bytes, ctx: Ctx | None = None) -> None:
        self._refuse(ino)
        self._change(ctx, "setxattr", ino)
        self.vfs.setxattr(ino, name, value)

    def listxattr(self, ino: int, ctx: Ctx | None = None) -> list[bytes]:
        self._read(ctx, "listxattr", ino)
        ctl = self._ctl(ino)
        return ctl.listxattr(ino) if ctl else self.vfs.listxattr(ino)

    def removexattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> None:
        self._refuse(ino)
        self._change(ctx, "removexattr", ino)
        self.vfs.removexattr(ino, name)

    # -- whole filesystem -----------------------------------------------------------------------------------
    def statfs(self) -> FsStats:
        return self.vfs.statfs()
