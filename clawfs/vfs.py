"""The VFS: what the filesystem means.  POSIX semantics over the plaintext store API.

Callers (the FUSE adapter, VFS tests) pass inode numbers, names as bytes and a `Ctx`; they get `Attr`s back and
`FsError`s (carrying an errno) out.  Every mutating call is one unit of work in the store (its own transaction,
or a savepoint in a mount's group commit), so it is all or nothing, and a full disk rolls it back as ENOSPC.
Methods are synchronous: under trio, a request handler that calls one of
them runs it to completion before any other request is served, so no invariant here is ever seen half-done.
(Adding an `await` between two store calls in the adapter would break that; don't.)
The `.clawfs` control tree is not here: clawfs/router.py sends its inodes elsewhere before a call gets this far.

Times: creation sets all three; data changes set mtime and ctime; metadata changes (chmod, chown, link,
rename, xattrs) set ctime; directory changes set the directory's mtime and ctime.  atime changes only through
utimens, as with `noatime`, so reads never write.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import home
from .db import InodeRow
from .errors import (
    Exists,
    FsError,
    Invalid,
    IsADir,
    NameTooLong,
    NoData,
    NotADir,
    NotEmpty,
    NotFound,
    NotSupported,
    PermissionDenied,
    ReadOnly,
)
from .inodes import InodeTable
from .store import ROOT, Store

log = logging.getLogger("clawfs.vfs")

NAME_MAX = 255
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
SMALL_CHANGE = 16384  # what creating an inode or entry may add to the store, for the free-space check
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


@dataclass(frozen=True)
class Ctx:
    uid: int
    gid: int
    pid: int = 0
    umask: int = 0o022


@dataclass
class Attr:
    ino: int
    generation: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int  # in 512-byte units
    blksize: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    volatile: bool = False  # generated (the .clawfs tree, clawfs/control_fs.py): the kernel must not cache it


@dataclass
class FsStats:
    bsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namemax: int = NAME_MAX


def _check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise NameTooLong(f"name of {len(name)} bytes (max {NAME_MAX})")
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise Invalid("invalid name")


class VFS:
    def __init__(self, store: Store, *, readonly: bool = False,
                 on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self.readonly = readonly
        self.inodes = InodeTable(self._nlink_of, self._purge)
        self._on_change = on_change  # wakes the indexer; the queue row itself is written with the change

    def _changed(self, ino: int) -> None:
        """Queue `ino` for the indexer (inside the caller's unit of work) and wake it."""
        if not self.readonly:
            self.store.queue_for_index(ino)
            if self._on_change:
                self._on_change()

    def uncached(self, fh: int) -> bool:
        """The open file must bypass the kernel's page cache: a secret (a cached page would let a read through
        without asking us; see clawfs/home.py).  Decided at open from the inode already read there, so asking
        costs no query."""
        h = self.inodes.handle(fh)
        return h is not None and h.uncached

    def _secret_flag(self, prow: InodeRow, name: bytes, is_dir: bool) -> int:
        """The flags a new entry `name` in directory `prow` gets: secret inside a secrets directory."""
        if home.is_secret(prow.flags):
            return home.FLAG_SECRET
        if is_dir and name == home.SECRETS and home.names_secrets_dir(self.store.path_of(prow.id), name):
            return home.FLAG_SECRET
        return 0

    def _check_secrets_place(self, parent: int, name: bytes, is_dir: bool) -> None:
        """Only a directory may take the name of a secrets directory (a symlink or file there would send the
        secrets written through it elsewhere)."""
        if not is_dir and name == home.SECRETS and home.names_secrets_dir(self.store.path_of(parent), name):
            raise FsError("only a secrets directory may be named secrets here", err=errno.EPERM)

    def _holds_secrets_dir(self, row: InodeRow) -> bool:
        """Is `row` a secrets directory of the home, or a directory above one (`users`, `users/<id>`)?  Those
        are never renamed, removed or replaced (clawfs/home.py)."""
        if not stat.S_ISDIR(row.mode):
            return False
        path = self.store.path_of(row.id)
        if path is None:
            return False
        if home.is_secrets_path(path):
            return home.is_secret(row.flags)
        if not home.may_hold_secrets_dir(path):
            return False
        below = self.store.child_inodes(row.id) if b"/" not in path else [row.id]  # users: each users/<id>
        for ino in below:
            child = self.store.lookup(ino, home.SECRETS)
            found = self.store.find(child) if child is not None else None
            if found is not None and stat.S_ISDIR(found.mode) and home.is_secret(found.flags):
                return True
        return False

    def _guard_secrets_dir(self, row: InodeRow | None, what: str) -> None:
        if row is not None and self._holds_secrets_dir(row):
            raise FsError(f"{what} a secrets directory (or the directory above one) is not allowed",
                          err=errno.EPERM)

    # -- helpers --------------------------------------------------------------------------------------------
    def _nlink_of(self, ino: int) -> int | None:
        row = self.store.find(ino)
        return None if row is None else row.nlink

    def _purge(self, ino: int) -> None:
        if not self.readonly:
            with self.store.transaction():
                self.store.purge(ino)

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnly("mounted read-only")

    def attr(self, row: InodeRow) -> Attr:
        bs = self.store.block_size
        # Space used: stored blocks, but no more than the size rounded to 4 KiB (a short last block is stored
        # short).  Holes count nothing, so `du` on a sparse file shows only what was written.
        used = min(row.nblocks * bs, (row.size + 4095) // 4096 * 4096)
        return Attr(row.id, row.generation, row.mode, row.nlink, row.uid, row.gid, row.rdev, row.size,
                    used // 512, bs, row.atime_ns, row.mtime_ns, row.ctime_ns)

    def _dir(self, ino: int) -> InodeRow:
        row = self.store.get(ino)
        if not stat.S_ISDIR(row.mode):
            raise NotADir(f"inode {ino} is not a directory")
        return row

    def _touch_dir(self, ino: int, now: int) -> None:
        self.store.update(ino, mtime_ns=now, ctime_ns=now)

    def _entry(self, parent: int, name: bytes) -> InodeRow:
        _check_name(name)
        ino = self.store.lookup(parent, name)
        if ino is None:
            raise NotFound()
        return self.store.get(ino)

    # -- lookups and attributes -----------------------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> Attr:
        self._dir(parent)
        if name == b".":
            row = self.store.get(parent)
        elif name == b"..":
            row = self.store.get(self.store.get(parent).parent or ROOT)
        else:
            row = self._entry(parent, name)
        self.inodes.remember(row.id)
        return self.attr(row)

    def remember(self, ino: int) -> None:
        """The kernel took a reference without a lookup (a readdirplus entry it accepted)."""
        self.inodes.remember(ino)

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, n in items:
            self.inodes.forget(ino, n)

    def getattr(self, ino: int) -> Attr:
        return self.attr(self.store.get(ino))

    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None, gid: int | None = None,
                size: int | None = None, atime_ns: int | None = None, mtime_ns: int | None = None,
                ctime_ns: int | None = None) -> Attr:
        self._writable()
        with self.store.transaction():
            row = self.store.get(ino)
            now = time.time_ns()
            fields: dict[str, int] = {"ctime_ns": ctime_ns if ctime_ns is not None else now}
            if size is not None:
                if stat.S_ISDIR(row.mode):
                    raise IsADir()
                if size != row.size:
                    fields["nblocks"] = row.nblocks + self.store.truncate(row, size)
                    fields["size"] = size
                    self._changed(ino)
                fields["mtime_ns"] = now
            if mode is not None:
                fields["mode"] = (row.mode & ~0o7777) | (mode & 0o7777)
            if uid is not None:
                fields["uid"] = uid
            if gid is not None:
                fields["gid"] = gid
            if atime_ns is not None:
                fields["atime_ns"] = atime_ns
            if mtime_ns is not None:
                fields["mtime_ns"] = mtime_ns
            self.store.update(ino, **fields)
            return self.attr(self.store.get(ino))

    def readlink(self, ino: int) -> bytes:
        row = self.store.get(ino)
        if not stat.S_ISLNK(row.mode):
            raise Invalid("not a symlink")
        return self.store.readlink(row)

    # -- creating -------------------------------------------------------------------------------------------
    def _create(self, parent: int, name: bytes, mode: int, ctx: Ctx, *, rdev: int = 0,
                target: bytes | None = None) -> InodeRow:
        self._writable()
        _check_name(name)
        self.store.ensure_space(SMALL_CHANGE)
        with self.store.transaction():
            prow = self._dir(parent)
            if self.store.lookup(parent, name) is not None:
                raise Exists()
            gid = ctx.gid
            if prow.mode & stat.S_ISGID:  # BSD group semantics in setgid directories
                gid = prow.gid
                if stat.S_ISDIR(mode):
                    mode |= stat.S_ISGID
            is_dir = stat.S_ISDIR(mode)
            self._check_secrets_place(parent, name, is_dir)
            flags = self._secret_flag(prow, name, is_dir)
            if flags:
                mode &= ~0o077  # secrets are the owner's alone, whatever the umask
            row = self.store.new_inode(mode, ctx.uid, gid, rdev=rdev, parent=parent if is_dir else None,
                                       target=target, flags=flags)
            self.store.add_entry(parent, name, row.id)
            if is_dir:
                self.store.adjust(parent, "nlink", 1)
            self._touch_dir(parent, row.ctime_ns)
        self.inodes.remember(row.id)
        return row

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Attr:
        return self.attr(self._create(parent, name, mode, ctx, rdev=rdev))

    def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Attr:
        return self.attr(self._create(parent, name, stat.S_IFDIR | (mode & 0o7777), ctx))

    def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Attr:
        if len(target) > 4096:
            raise NameTooLong("symlink target longer than 4096 bytes")
        return self.attr(self._create(parent, name, stat.S_IFLNK | 0o777, ctx, target=target))

    def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx) -> tuple[int, Attr]:
        row = self._create(parent, name, stat.S_IFREG | (mode & 0o7777), ctx)
        return self.inodes.open(row.id, flags, uncached=home.is_secret(row.flags)), self.attr(row)

    def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        self._writable()
        _check_name(new_name)
        with self.store.transaction():
            row = self.store.get(ino)
            if stat.S_ISDIR(row.mode):
                raise FsError("hard link to a directory", err=errno.EPERM)
            prow = self._dir(new_parent)
            if self.store.lookup(new_parent, new_name) is not None:
                raise Exists()
            now = time.time_ns()
            self._check_secrets_place(new_parent, new_name, is_dir=False)
            self._mark_if_secret(row, prow, new_name)
            self.store.add_entry(new_parent, new_name, ino)
            self.store.update(ino, nlink=row.nlink + 1, ctime_ns=now)
            self._touch_dir(new_parent, now)
            row = self.store.get(ino)
        self.inodes.remember(ino)
        return self.attr(row)

    # -- removing -------------------------------------------------------------------------------------------
    def _drop_link(self, row: InodeRow, now: int) -> None:
        """One directory entry of `row` is gone; directories lose their `.` link too."""
        nlink = 0 if stat.S_ISDIR(row.mode) else row.nlink - 1
        self.store.update(row.id, nlink=nlink, ctime_ns=now)
        if nlink == 0 and stat.S_ISREG(row.mode):
            self._changed(row.id)  # its chunks leave the index
        if stat.S_ISDIR(row.mode) and row.parent is not None:
            self.store.adjust(row.parent, "nlink", -1)

    def unlink(self, parent: int, name: bytes) -> None:
        self._remove(parent, name, want_dir=False)

    def rmdir(self, parent: int, name: bytes) -> None:
        self._remove(parent, name, want_dir=True)

    def _remove(self, parent: int, name: bytes, *, want_dir: bool) -> None:
        self._writable()
        with self.store.transaction():
            self._dir(parent)
            row = self._entry(parent, name)
            if want_dir:
                if not stat.S_ISDIR(row.mode):
                    raise NotADir()
                if self.store.has_entries(row.id):
                    raise NotEmpty()
                self._guard_secrets_dir(row, "removing")
            elif stat.S_ISDIR(row.mode):
                raise IsADir()
            now = time.time_ns()
            self.store.remove_entry(parent, name)
            self._drop_link(row, now)
            self._touch_dir(parent, now)
        self.inodes.release_if_unused(row.id)

    # -- rename ---------------------------------------------------------------------------------------------
    def _is_ancestor(self, ancestor: int, ino: int) -> bool:
        while True:
            if ino == ancestor:
                return True
            if ino == ROOT:
                return False
            parent = self.store.get(ino).parent
            if parent is None or parent == ino:
                return False
            ino = parent

    def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int = 0) -> None:
        self._writable()
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
            raise Invalid("unsupported rename flags")
        _check_name(new_name)
        replaced: InodeRow | None = None
        with self.store.transaction():
            self._dir(old_parent)
            prow = self._dir(new_parent)
            src = self._entry(old_parent, old_name)
            dst_ino = self.store.lookup(new_parent, new_name)
            dst = self.store.get(dst_ino) if dst_ino is not None else None
            if dst is None or dst.id != src.id:
                self._guard_secrets_dir(src, "moving")
                self._guard_secrets_dir(dst, "replacing")
                self._check_secrets_place(new_parent, new_name, stat.S_ISDIR(src.mode))
                if flags & RENAME_EXCHANGE and dst is not None:
                    self._check_secrets_place(old_parent, old_name, stat.S_ISDIR(dst.mode))
            self._mark_if_secret(src, prow, new_name)
            now = time.time_ns()
            if flags & RENAME_EXCHANGE:
                if dst is None:
                    raise NotFound()
                self._exchange(old_parent, old_name, src, new_parent, new_name, dst, now)
                return
            if dst is not None and flags & RENAME_NOREPLACE:
                raise Exists()
            if dst is not None and dst.id == src.id:
                return  # both names are links to one inode: POSIX says do nothing
            if stat.S_ISDIR(src.mode) and self._is_ancestor(src.id, new_parent):
                raise Invalid("cannot move a directory into itself")
            if dst is not None:
                self._check_replace(src, dst)
                self.store.remove_entry(new_parent, new_name)
                self._drop_link(dst, now)
                replaced = dst
            self.store.remove_entry(old_parent, old_name)
            self.store.add_entry(new_parent, new_name, src.id)
            if stat.S_ISREG(src.mode):
                self._changed(src.id)  # new path: search results and path filters follow at once
            self._move_dir(src, old_parent, new_parent, now)
            self._touch_dir(old_parent, now)
            self._touch_dir(new_parent, now)
        if replaced is not None:
            self.inodes.release_if_unused(replaced.id)

    def _mark_if_secret(self, row: InodeRow, prow: InodeRow, name: bytes) -> None:
        """`row` gets the name `name` in `prow`: a file becomes a secret there for good; a directory that
        would turn into (or land in) a secrets directory without being one is refused with EXDEV, so `mv`
        copies it file by file and each copy is marked (clawfs/home.py)."""
        flag = self._secret_flag(prow, name, stat.S_ISDIR(row.mode))
        if not flag or home.is_secret(row.flags):
            return
        if stat.S_ISDIR(row.mode):
            raise FsError("a directory becomes secret only by being created in secrets/", err=errno.EXDEV)
        self.store.update(row.id, flags=row.flags | flag)
        row.flags |= flag

    def _check_replace(self, src: InodeRow, dst: InodeRow) -> None:
        if stat.S_ISDIR(dst.mode):
            if not stat.S_ISDIR(src.mode):
                raise IsADir()
            if self.store.has_entries(dst.id):
                raise NotEmpty()
        elif stat.S_ISDIR(src.mode):
            raise NotADir()

    def _move_dir(self, row: InodeRow, old_parent: int, new_parent: int, now: int) -> None:
        fields: dict[str, int] = {"ctime_ns": now}
        if stat.S_ISDIR(row.mode) and old_parent != new_parent:
            fields["parent"] = new_parent
            self.store.adjust(old_parent, "nlink", -1)
            self.store.adjust(new_parent, "nlink", 1)
        self.store.update(row.id, **fields)

    def _exchange(self, p1: int, n1: bytes, a: InodeRow, p2: int, n2: bytes, b: InodeRow, now: int) -> None:
        if a.id == b.id:
            return
        for x, target_parent in ((a, p2), (b, p1)):
            if stat.S_ISDIR(x.mode) and self._is_ancestor(x.id, target_parent):
                raise Invalid("cannot move a directory into itself")
        self.store.set_entry(p1, n1, b.id)
        self.store.set_entry(p2, n2, a.id)
        self._move_dir(a, p1, p2, now)
        self._move_dir(b, p2, p1, now)
        self._touch_dir(p1, now)
        self._touch_dir(p2, now)

    # -- files ----------------------------------------------------------------------------------------------
    def open(self, ino: int, flags: int) -> int:
        row = self.store.get(ino)
        if stat.S_ISDIR(row.mode):
            raise IsADir()
        if home.is_secret(row.flags) and flags & os.O_ACCMODE == os.O_RDONLY:
            # O_RDWR must pass: with the writeback cache the kernel opens O_WRONLY files O_RDWR.  read() refuses.
            raise PermissionDenied("secret values are write-only")
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self._writable()
        if flags & os.O_TRUNC and row.size:
            self.setattr(ino, size=0)
        return self.inodes.open(ino, flags, uncached=home.is_secret(row.flags))

    def _handle_ino(self, fh: int) -> int:
        h = self.inodes.handle(fh)
        if h is None:
            raise FsError("bad file handle", err=errno.EBADF)
        return h.ino

    def read(self, fh: int, offset: int, size: int) -> bytes:
        row = self.store.get(self._handle_ino(fh))
        if home.is_secret(row.flags):
            raise PermissionDenied("secret values are write-only")
        return self.store.read(row, offset, size)

    def write(self, fh: int, offset: int, data: bytes) -> int:
        self._writable()
        if not data:
            return 0
        self.store.ensure_space(len(data))
        handle = self.inodes.handle(fh)
        with self.store.transaction():
            row = self.store.get(self._handle_ino(fh))
            if handle is not None and not handle.dirty:
                # queued at the first write too, not only at release: a crash before close loses no event
                handle.dirty = True
                self._changed(row.id)
            new_size, added = self.store.write(row, offset, data)
            now = time.time_ns()
            self.store.update(row.id, size=new_size, nblocks=row.nblocks + added, mtime_ns=now, ctime_ns=now)
        return len(data)

    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2), the modes Linux FUSE passes on.  0: the size grows to offset + length if it was smaller
        (a hole: it reads as zeros and stores nothing); KEEP_SIZE: the size stays.  Both check there is room for
        `length` bytes, as a reservation would, but reserve nothing: the store allocates on write.
        PUNCH_HOLE (with KEEP_SIZE, as Linux requires): the range reads as zeros, the size stays; stored blocks
        from the range's first whole block to the end of the file are dropped, other bytes overwritten."""
        self._writable()
        if offset < 0 or length <= 0:
            raise Invalid("fallocate needs offset >= 0 and length > 0")
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE) or mode == FALLOC_FL_PUNCH_HOLE:
            raise NotSupported(f"fallocate mode {mode:#x} is not supported")
        ino = self._handle_ino(fh)
        if mode & FALLOC_FL_PUNCH_HOLE:
            self._punch(ino, offset, offset + length)
            return
        self.store.ensure_space(length)
        if not mode & FALLOC_FL_KEEP_SIZE and offset + length > self.store.get(ino).size:
            self.setattr(ino, size=offset + length)

    def _punch(self, ino: int, start: int, end: int) -> None:
        with self.store.transaction():
            row = self.store.get(ino)
            if stat.S_ISDIR(row.mode):
                raise IsADir()
            end = min(end, row.size)
            if start >= end:
                return
            bs = self.store.block_size
            nblocks = row.nblocks
            if end == row.size:  # to the end of the file: its blocks go, the size stays (a hole at the end)
                nblocks += self.store.truncate(row, start)
                row.nblocks = nblocks
                end = start  # truncate trimmed the partly punched block as well: nothing left to zero
            pos = start
            while pos < end:  # inside the file: overwritten with zeros, block by block
                step = min(end, (pos // bs + 1) * bs) - pos
                _, added = self.store.write(row, pos, bytes(step))
                nblocks += added
                row.nblocks = nblocks
                pos += step
            now = time.time_ns()
            self.store.update(ino, nblocks=nblocks, mtime_ns=now, ctime_ns=now)
            self._changed(ino)

    def flush(self, fh: int) -> None:
        self._handle_ino(fh)

    def commit_pending(self) -> None:
        """Commit the open group of writes (called by the mount every FLUSH_INTERVAL seconds)."""
        self.store.flush()

    def fsync(self, fh: int, datasync: bool) -> None:
        if not self.readonly:
            self._queue_if_dirty(fh)
            self.store.sync()

    def _queue_if_dirty(self, fh: int) -> None:
        handle = self.inodes.handle(fh)
        if handle is not None and handle.dirty:
            handle.dirty = False
            with self.store.transaction():
                self._changed(handle.ino)

    def release(self, fh: int) -> None:
        if not self.readonly:
            self._queue_if_dirty(fh)
        self.inodes.close(fh)

    # -- directories ----------------------------------------------------------------------------------------
    def opendir(self, ino: int) -> int:
        self._dir(ino)
        return ino

    def readdir(self, ino: int, start: int) -> Iterator[tuple[bytes, Attr, int]]:
        """(name, attributes, offset of the next entry) from offset `start`: `.` is 1, `..` is 2, an entry is
        2 + its id, so offsets stay valid while the directory changes."""
        row = self._dir(ino)
        if start < 1:
            yield b".", self.attr(row), 1
        if start < 2:
            yield b"..", self.attr(self.store.get(row.parent or ROOT)), 2
        for entry_id, name, child in self.store.entries(ino, max(0, start - 3)):
            child_row = self.store.find(child)
            if child_row is None:
                log.error("integrity: directory %d entry %d points to missing inode %d", ino, entry_id, child)
                continue
            yield name, self.attr(child_row), entry_id + 3

    def fsyncdir(self, ino: int, datasync: bool) -> None:
        self.fsync(0, datasync)

    # -- xattrs ---------------------------------------------------------------------------------------------
    def getxattr(self, ino: int, name: bytes) -> bytes:
        if not name.startswith(b"user."):
            raise NoData()
        value = self.store.xattr_get(self.store.get(ino), name)
        if value is None:
            raise NoData()
        return value

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        self._writable()
        if not name.startswith(b"user."):
            raise NotSupported("only user.* extended attributes are supported")
        if len(name) > XATTR_NAME_MAX:
            raise FsError("xattr name too long", err=errno.ERANGE)
        if len(value) > XATTR_SIZE_MAX:
            raise FsError("xattr value too large", err=errno.E2BIG)
        self.store.ensure_space(len(value))
        with self.store.transaction():
            row = self.store.get(ino)
            self.store.xattr_set(row, name, value)
            self.store.update(ino, ctime_ns=time.time_ns())

    def listxattr(self, ino: int) -> list[bytes]:
        return self.store.xattr_names(self.store.get(ino))

    def removexattr(self, ino: int, name: bytes) -> None:
        self._writable()
        with self.store.transaction():
            if not self.store.xattr_remove(self.store.get(ino), name):
                raise NoData()
            self.store.update(ino, ctime_ns=time.time_ns())

    # -- whole filesystem -----------------------------------------------------------------------------------
    def statfs(self) -> FsStats:
        st = self.store.statvfs()
        bs = self.store.block_size
        scale = st.f_frsize / bs  # report the space left on the store's filesystem, in our block size
        return FsStats(bsize=bs, blocks=int(st.f_blocks * scale), bfree=int(st.f_bfree * scale),
                       bavail=int(st.f_bavail * scale), files=st.f_files, ffree=st.f_ffree)

    def purge_orphans(self) -> int:
        """At mount, before the kernel holds any reference: purge inodes a crash left unlinked-but-open."""
        orphans = self.store.orphans()
        for ino in orphans:
            try:
                self._purge(ino)
            except FsError as e:  # e.g. a full disk: the orphan waits for the next mount, the mount goes on
                log.warning("could not purge orphaned inode %d (%s); will retry at the next mount", ino, e)
        return len(orphans)
