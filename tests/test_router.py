"""The router (clawfs/router.py) without the kernel: `.clawfs` reachable by name but not listed, its files read
through handles of their own, and every change that names the control tree refused with EROFS before the VFS
sees it.  Over a real store; the control tree has no index (status only)."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clawfs.control import ControlTree
from clawfs.errors import FsError
from clawfs.keys import Credentials
from clawfs.router import Router
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

PW = b"router passphrase"
CTX = Ctx(uid=0, gid=0)


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Router]:
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store = Store.open(path, Credentials(passphrases=[PW]))
    status = {"pending": 0, "files": 0}
    try:
        yield Router(VFS(store), ControlTree(None, lambda: dict(status), os.getuid(), os.getgid()))
    finally:
        store.close()


def errno_of(call: Callable[[], Any]) -> int | None:
    try:
        call()
    except FsError as e:
        return e.errno
    return None


def test_clawfs_is_found_by_name_but_not_listed(fs: Router) -> None:
    ctl = fs.lookup(ROOT, b".clawfs")
    assert stat.S_ISDIR(ctl.mode) and ctl.volatile
    assert b".clawfs" not in [name for name, _, _ in fs.readdir(fs.opendir(ROOT), 0)]
    listed = {name: attr for name, attr, _ in fs.readdir(fs.opendir(ctl.ino), 0)}
    assert sorted(listed) == [b".", b"..", b"search", b"similar", b"status"]
    assert listed[b".."].ino == ROOT, "the parent of .clawfs is the mount's root"


def test_status_is_read_through_a_handle_of_its_own(fs: Router) -> None:
    status = fs.lookup(fs.lookup(ROOT, b".clawfs").ino, b"status")
    fh = fs.open(status.ino, os.O_RDONLY)
    assert fs.uncached(fh), "a generated file must bypass the page cache"
    assert json.loads(fs.read(fh, 0, 1 << 16)) == {"pending": 0, "files": 0}
    fs.flush(fh)
    fs.fsync(fh, False)
    fs.release(fh)
    assert errno_of(lambda: fs.read(fh, 0, 10)) == errno.EBADF
    # a file of the store opened meanwhile gets a handle the router sends to the VFS
    vfh, attr = fs.create(ROOT, b"note.md", 0o644, os.O_RDWR, CTX)
    fs.write(vfh, 0, b"hello")
    assert fs.read(vfh, 0, 5) == b"hello" and not fs.uncached(vfh)
    fs.release(vfh)
    assert fs.getattr(attr.ino).size == 5


def test_every_change_naming_the_tree_is_refused(fs: Router) -> None:
    ctl = fs.lookup(ROOT, b".clawfs").ino
    status = fs.lookup(ctl, b"status").ino
    fh, note = fs.create(ROOT, b"note.md", 0o644, os.O_RDWR, CTX)
    fs.release(fh)
    attempts: dict[str, Callable[[], Any]] = {
        "mkdir in .clawfs": lambda: fs.mkdir(ctl, b"x", 0o755, CTX),
        "create in .clawfs": lambda: fs.create(ctl, b"new", 0o644, os.O_WRONLY, CTX),
        "mknod in .clawfs": lambda: fs.mknod(ctl, b"n", stat.S_IFIFO | 0o644, 0, CTX),
        "symlink in .clawfs": lambda: fs.symlink(ctl, b"l", b"x", CTX),
        "link into .clawfs": lambda: fs.link(note.ino, ctl, b"note.md"),
        "link status out": lambda: fs.link(status, ROOT, b"status"),
        "unlink status": lambda: fs.unlink(ctl, b"status"),
        "rmdir .clawfs": lambda: fs.rmdir(ROOT, b".clawfs"),
        "unlink .clawfs": lambda: fs.unlink(ROOT, b".clawfs"),
        "rename .clawfs": lambda: fs.rename(ROOT, b".clawfs", ROOT, b"other"),
        "rename onto .clawfs": lambda: fs.rename(ROOT, b"note.md", ROOT, b".clawfs"),
        "rename into .clawfs": lambda: fs.rename(ROOT, b"note.md", ctl, b"note.md"),
        "chmod status": lambda: fs.setattr(status, mode=0o666),
        "truncate status": lambda: fs.setattr(status, size=0),
        "open status for writing": lambda: fs.open(status, os.O_WRONLY),
        "setxattr on status": lambda: fs.setxattr(status, b"user.x", b"1"),
        "removexattr on .clawfs": lambda: fs.removexattr(ctl, b"user.x"),
    }
    for what, attempt in attempts.items():
        assert errno_of(attempt) == errno.EROFS, what
    assert fs.lookup(ROOT, b"note.md").ino == note.ino, "a refused rename moved the file"
    assert errno_of(lambda: fs.open(ctl, os.O_RDONLY)) == errno.EISDIR
    assert errno_of(lambda: fs.opendir(status)) == errno.ENOTDIR
    assert errno_of(lambda: fs.getxattr(ctl, b"user.clawfs.scores")) == errno.ENODATA
    assert errno_of(lambda: fs.lookup(ctl, b"missing")) == errno.ENOENT


def test_the_kernels_references_to_tree_nodes_never_reach_the_vfs(fs: Router) -> None:
    ctl = fs.lookup(ROOT, b".clawfs").ino
    fs.remember(ctl)
    fs.forget([(ctl, 1)])
    assert not fs.vfs.inodes.in_use(ctl)
