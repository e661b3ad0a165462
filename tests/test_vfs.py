"""VFS semantics without the kernel: the same calls the FUSE adapter makes, checked directly."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawfs import fsck
from clawfs.errors import FsError
from clawfs.keys import Credentials
from clawfs.store import ROOT, Store
from clawfs.vfs import RENAME_EXCHANGE, RENAME_NOREPLACE, VFS, Ctx

CTX = Ctx(uid=0, gid=0)
PW = b"pw"


@pytest.fixture
def vfs(tmp_path: Path) -> Iterator[VFS]:
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store = Store.open(path, Credentials(passphrases=[PW]))
    v = VFS(store)
    yield v
    report = fsck.check(store)
    store.close()
    assert report.clean, report.problems


def errno_of(fn, *args, **kw) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(FsError) as e:
        fn(*args, **kw)
    return e.value.errno


def new_file(v: VFS, name: bytes, data: bytes = b"", parent: int = ROOT) -> tuple[int, int]:
    fh, attr = v.create(parent, name, 0o644, os.O_RDWR, CTX)
    if data:
        v.write(fh, 0, data)
    return fh, attr.ino


def test_write_read_across_blocks(vfs: VFS) -> None:
    data = os.urandom(3 * 4096 + 17)
    fh, ino = new_file(vfs, b"f", data)
    assert vfs.read(fh, 0, len(data) + 100) == data
    assert vfs.read(fh, 4090, 20) == data[4090:4110]
    vfs.write(fh, 4095, b"XY")
    assert vfs.read(fh, 4094, 4) == data[4094:4095] + b"XY" + data[4097:4098]
    assert vfs.getattr(ino).size == len(data)


def test_sparse_holes_read_zero_and_store_nothing(vfs: VFS) -> None:
    fh, ino = new_file(vfs, b"sparse")
    vfs.write(fh, 10 * 4096 + 5, b"end")
    assert vfs.read(fh, 0, 4096) == bytes(4096)
    assert vfs.getattr(ino).size == 10 * 4096 + 8
    assert vfs.store.get(ino).nblocks == 1


def test_truncate_down_then_up_reads_zeros(vfs: VFS) -> None:
    fh, ino = new_file(vfs, b"t", b"a" * 10000)
    vfs.setattr(ino, size=5000)
    vfs.setattr(ino, size=9000)
    assert vfs.read(fh, 0, 9000) == b"a" * 5000 + bytes(4000)
    assert vfs.store.get(ino).nblocks == 2


def test_lookup_and_errors(vfs: VFS) -> None:
    new_file(vfs, b"a")
    assert errno_of(vfs.lookup, ROOT, b"missing") == errno.ENOENT
    assert errno_of(vfs.create, ROOT, b"a", 0o644, 0, CTX) == errno.EEXIST
    assert errno_of(vfs.mkdir, ROOT, b"x" * 256, 0o755, CTX) == errno.ENAMETOOLONG
    vfs.mkdir(ROOT, b"y" * 255, 0o755, CTX)
    d = vfs.mkdir(ROOT, b"d", 0o755, CTX)
    new_file(vfs, b"inner", parent=d.ino)
    assert errno_of(vfs.rmdir, ROOT, b"d") == errno.ENOTEMPTY
    assert errno_of(vfs.unlink, ROOT, b"d") == errno.EISDIR
    assert errno_of(vfs.rmdir, ROOT, b"a") == errno.ENOTDIR


def test_directory_link_counts(vfs: VFS) -> None:
    d = vfs.mkdir(ROOT, b"d", 0o755, CTX)
    vfs.mkdir(d.ino, b"s1", 0o755, CTX)
    vfs.mkdir(d.ino, b"s2", 0o755, CTX)
    assert vfs.getattr(d.ino).nlink == 4
    assert vfs.getattr(ROOT).nlink == 3
    vfs.rmdir(d.ino, b"s1")
    assert vfs.getattr(d.ino).nlink == 3


def test_rename_noreplace_and_exchange(vfs: VFS) -> None:
    _, a = new_file(vfs, b"a", b"AAA")
    _, b = new_file(vfs, b"b", b"BBB")
    assert errno_of(vfs.rename, ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE) == errno.EEXIST
    vfs.rename(ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE)
    assert vfs.lookup(ROOT, b"a").ino == b and vfs.lookup(ROOT, b"b").ino == a
    d = vfs.mkdir(ROOT, b"d", 0o755, CTX)
    vfs.rename(ROOT, b"a", d.ino, b"moved")
    assert vfs.lookup(d.ino, b"moved").ino == b
    assert errno_of(vfs.rename, ROOT, b"zz", ROOT, b"b", RENAME_EXCHANGE) == errno.ENOENT


def test_rename_directory_into_itself_is_einval(vfs: VFS) -> None:
    d = vfs.mkdir(ROOT, b"d", 0o755, CTX)
    sub = vfs.mkdir(d.ino, b"sub", 0o755, CTX)
    assert errno_of(vfs.rename, ROOT, b"d", sub.ino, b"loop") == errno.EINVAL


def test_rename_dir_across_parents_fixes_links(vfs: VFS) -> None:
    p1 = vfs.mkdir(ROOT, b"p1", 0o755, CTX)
    p2 = vfs.mkdir(ROOT, b"p2", 0o755, CTX)
    c = vfs.mkdir(p1.ino, b"c", 0o755, CTX)
    vfs.rename(p1.ino, b"c", p2.ino, b"c")
    assert vfs.getattr(p1.ino).nlink == 2 and vfs.getattr(p2.ino).nlink == 3
    assert vfs.store.get(c.ino).parent == p2.ino
    names = [n for n, _, _ in vfs.readdir(c.ino, 0)]
    assert names == [b".", b".."]


def test_rename_replaces_and_purges_target(vfs: VFS) -> None:
    _, a = new_file(vfs, b"a", b"new")
    fh_b, b = new_file(vfs, b"b", b"old")
    vfs.release(fh_b)
    vfs.rename(ROOT, b"a", ROOT, b"b")
    assert vfs.lookup(ROOT, b"b").ino == a
    vfs.forget([(b, 1)])  # the kernel drops its reference: now the old inode goes
    assert vfs.store.find(b) is None


def test_unlink_while_open_keeps_data_until_last_close(vfs: VFS) -> None:
    fh, ino = new_file(vfs, b"f", b"data")
    vfs.unlink(ROOT, b"f")
    assert vfs.getattr(ino).nlink == 0
    vfs.write(fh, 4, b"more")
    assert vfs.read(fh, 0, 100) == b"datamore"
    vfs.forget([(ino, 1)])
    assert vfs.store.find(ino) is not None  # still open
    vfs.release(fh)
    assert vfs.store.find(ino) is None


def test_orphans_purged_at_mount(vfs: VFS) -> None:
    _fh, ino = new_file(vfs, b"f", b"x" * 5000)
    vfs.unlink(ROOT, b"f")
    fresh = VFS(vfs.store)  # a new mount after a crash: no kernel references survive
    assert fresh.purge_orphans() == 1
    assert vfs.store.find(ino) is None


def test_hard_links(vfs: VFS) -> None:
    _, ino = new_file(vfs, b"a", b"shared")
    d = vfs.mkdir(ROOT, b"d", 0o755, CTX)
    assert vfs.link(ino, d.ino, b"b").nlink == 2
    vfs.unlink(ROOT, b"a")
    assert vfs.lookup(d.ino, b"b").nlink == 1
    assert errno_of(vfs.link, d.ino, ROOT, b"dirlink") == errno.EPERM


def test_readdir_offsets_are_stable(vfs: VFS) -> None:
    for i in range(10):
        new_file(vfs, b"f%d" % i)
    first = list(vfs.readdir(ROOT, 0))
    assert [n for n, _, _ in first][:2] == [b".", b".."]
    resume_at = first[5][2]
    vfs.unlink(ROOT, b"f1")  # changes before the resume point do not shift what follows
    rest = [n for n, _, _ in vfs.readdir(ROOT, resume_at)]
    assert rest == [n for n, _, _ in first[6:]]


def test_times(vfs: VFS) -> None:
    fh, ino = new_file(vfs, b"f", b"x")
    before = vfs.getattr(ino)
    vfs.setattr(ino, mode=0o600)
    after = vfs.getattr(ino)
    assert after.ctime_ns > before.ctime_ns and after.mtime_ns == before.mtime_ns
    assert stat.S_IMODE(after.mode) == 0o600 and stat.S_ISREG(after.mode)
    vfs.setattr(ino, atime_ns=1_000_000_001, mtime_ns=2_000_000_002)
    assert (vfs.getattr(ino).atime_ns, vfs.getattr(ino).mtime_ns) == (1_000_000_001, 2_000_000_002)
    vfs.write(fh, 0, b"y")
    assert vfs.getattr(ino).mtime_ns > 2_000_000_002


def test_xattrs(vfs: VFS) -> None:
    _, ino = new_file(vfs, b"f")
    vfs.setxattr(ino, b"user.tag", b"v1")
    assert vfs.getxattr(ino, b"user.tag") == b"v1"
    assert vfs.listxattr(ino) == [b"user.tag"]
    assert errno_of(vfs.setxattr, ino, b"trusted.x", b"v") == errno.EOPNOTSUPP
    assert errno_of(vfs.getxattr, ino, b"user.none") == errno.ENODATA
    vfs.removexattr(ino, b"user.tag")
    assert vfs.listxattr(ino) == []


def test_symlink(vfs: VFS) -> None:
    a = vfs.symlink(ROOT, b"l", b"../some/where", CTX)
    assert vfs.readlink(a.ino) == b"../some/where"
    assert a.size == len(b"../some/where")


def test_setgid_directory_inherits_group(vfs: VFS) -> None:
    d = vfs.mkdir(ROOT, b"g", 0o2775, Ctx(uid=0, gid=50))
    sub = vfs.mkdir(d.ino, b"s", 0o755, Ctx(uid=1, gid=99))
    assert sub.gid == 50 and sub.mode & stat.S_ISGID


def test_readonly_refuses_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "ro.claw")
    Store.create(path, [("passphrase", PW)])
    store = Store.open(path, Credentials(passphrases=[PW]), readonly=True)
    try:
        v = VFS(store, readonly=True)
        assert errno_of(v.mkdir, ROOT, b"d", 0o755, CTX) == errno.EROFS
    finally:
        store.close()
