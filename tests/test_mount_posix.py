"""POSIX corner cases on a real mount, driven by plain `os` calls (and `renameat2` through ctypes).

Every test runs on the `mounted` fixture, so every test also ends with `clawfs fsck` reporting the store clean.
Expected behaviour is what Linux filesystems (ext4, tmpfs) do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import mmap
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import StoreFixture

pytestmark = pytest.mark.fuse

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024
NOBODY = 65534
BASE_MMAP_NS = 1_000_000_000_000_000_000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.renameat2.restype = ctypes.c_int


# -- helpers ----------------------------------------------------------------------------------------------------
def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(old), None, str(new))


def expect_errno(errnos: int | tuple[int, ...], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Call fn and require it to fail with one of `errnos`; return the errno it failed with."""
    wanted = errnos if isinstance(errnos, tuple) else (errnos,)
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    got = info.value.errno
    assert got in wanted, (f"{getattr(fn, '__name__', fn)}{args}: expected "
                           f"{[errno.errorcode[e] for e in wanted]}, got {errno.errorcode.get(got, got)}")
    return got


def remount(store: StoreFixture, mnt: Path, *opts: str) -> None:
    store.umount(mnt)
    store.mount(mnt, *opts)


def write_file(path: Path, data: bytes, mode: int | None = None) -> None:
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)


def pread_all(path: Path) -> bytes:
    return path.read_bytes()


def nlink(path: Path) -> int:
    return os.lstat(path).st_nlink


def assert_purged_after_umount(store: StoreFixture, mnt: Path, inodes: int) -> None:
    """Unmount; fsck must be clean, count exactly `inodes` inodes and report no orphans (an inode unlinked while
    open must be gone once its last descriptor closed, not left for the next mount to purge)."""
    store.umount(mnt)
    report = store.fsck()
    assert report["clean"], report["problems"]
    assert not [n for n in report["notes"] if "orphan" in n], report["notes"]
    assert report["counts"]["inodes"] == inodes, f"expected {inodes} inodes: {report['counts']}"
    store.mount(mnt)


# -- rename -----------------------------------------------------------------------------------------------------
def test_rename_noreplace(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    write_file(mnt / "a", b"AAA")
    write_file(mnt / "b", b"BBB")
    expect_errno(errno.EEXIST, renameat2, mnt / "a", mnt / "b", RENAME_NOREPLACE)
    assert (mnt / "a").read_bytes() == b"AAA"
    assert (mnt / "b").read_bytes() == b"BBB"
    # onto a free name it is an ordinary rename
    renameat2(mnt / "a", mnt / "c", RENAME_NOREPLACE)
    assert not (mnt / "a").exists()
    assert (mnt / "c").read_bytes() == b"AAA"
    # a directory target counts as existing too
    (mnt / "d").mkdir()
    expect_errno(errno.EEXIST, renameat2, mnt / "c", mnt / "d", RENAME_NOREPLACE)
    assert sorted(os.listdir(mnt)) == ["b", "c", "d"]


def test_rename_exchange_two_files(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "x").mkdir()
    write_file(mnt / "a", b"first file")
    write_file(mnt / "x" / "b", b"second, longer file")
    ino_a, ino_b = os.stat(mnt / "a").st_ino, os.stat(mnt / "x" / "b").st_ino
    renameat2(mnt / "a", mnt / "x" / "b", RENAME_EXCHANGE)
    assert (mnt / "a").read_bytes() == b"second, longer file"
    assert (mnt / "x" / "b").read_bytes() == b"first file"
    assert os.stat(mnt / "a").st_ino == ino_b
    assert os.stat(mnt / "x" / "b").st_ino == ino_a
    # exchanging with a missing name fails and changes nothing
    expect_errno(errno.ENOENT, renameat2, mnt / "a", mnt / "missing", RENAME_EXCHANGE)
    remount(store, mnt)
    assert (mnt / "a").read_bytes() == b"second, longer file"
    assert (mnt / "x" / "b").read_bytes() == b"first file"


def test_rename_exchange_file_and_directory(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "sub").mkdir()
    (mnt / "sub" / "dir").mkdir()
    write_file(mnt / "sub" / "dir" / "inner", b"inside")
    write_file(mnt / "file", b"plain")
    root_nlink, sub_nlink = nlink(mnt), nlink(mnt / "sub")
    assert (root_nlink, sub_nlink) == (3, 3)
    renameat2(mnt / "file", mnt / "sub" / "dir", RENAME_EXCHANGE)
    assert (mnt / "file").is_dir()
    assert (mnt / "file" / "inner").read_bytes() == b"inside"
    assert (mnt / "sub" / "dir").is_file()
    assert (mnt / "sub" / "dir").read_bytes() == b"plain"
    # the directory moved from sub/ to the root: link counts and `..` follow it
    assert nlink(mnt) == root_nlink + 1
    assert nlink(mnt / "sub") == sub_nlink - 1
    assert os.stat(mnt / "file" / "..").st_ino == os.stat(mnt).st_ino
    remount(store, mnt)
    assert (nlink(mnt), nlink(mnt / "sub")) == (root_nlink + 1, sub_nlink - 1)
    assert (mnt / "file" / "inner").read_bytes() == b"inside"
    assert os.stat(mnt / "file" / "..").st_ino == os.stat(mnt).st_ino


def test_rename_replaces_existing_file(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "d").mkdir()
    write_file(mnt / "src", b"new contents")
    write_file(mnt / "d" / "dst", b"old contents that are longer")
    ino_src = os.stat(mnt / "src").st_ino
    os.rename(mnt / "src", mnt / "d" / "dst")
    assert not (mnt / "src").exists()
    assert (mnt / "d" / "dst").read_bytes() == b"new contents"
    assert os.stat(mnt / "d" / "dst").st_ino == ino_src
    assert os.listdir(mnt / "d") == ["dst"]
    # the replaced inode stays readable through a descriptor opened before the rename
    write_file(mnt / "victim", b"replaced but still open")
    write_file(mnt / "winner", b"winner")
    fd = os.open(mnt / "victim", os.O_RDONLY)
    try:
        ctime = os.stat(mnt / "winner").st_ctime_ns
        time.sleep(0.01)
        os.rename(mnt / "winner", mnt / "victim")
        assert os.stat(mnt / "victim").st_ctime_ns > ctime, "rename must change the moved inode's ctime"
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"replaced but still open"
    finally:
        os.close(fd)
    assert (mnt / "victim").read_bytes() == b"winner"
    # renaming a name onto another link of the same inode does nothing: both names stay
    os.link(mnt / "victim", mnt / "alias")
    os.rename(mnt / "victim", mnt / "alias")
    assert (mnt / "victim").read_bytes() == b"winner"
    assert os.stat(mnt / "alias").st_nlink == 2
    # a file over a directory and a directory over a file are refused
    (mnt / "emptydir").mkdir()
    expect_errno(errno.EISDIR, os.rename, mnt / "d" / "dst", mnt / "emptydir")
    expect_errno(errno.ENOTDIR, os.rename, mnt / "emptydir", mnt / "d" / "dst")
    remount(store, mnt)
    assert (mnt / "d" / "dst").read_bytes() == b"new contents"
    assert sorted(os.listdir(mnt)) == ["alias", "d", "emptydir", "victim"]


def test_rename_directory_into_itself(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    (mnt / "a" / "b" / "c").mkdir(parents=True)
    expect_errno(errno.EINVAL, os.rename, mnt / "a", mnt / "a" / "b" / "c" / "a")
    expect_errno(errno.EINVAL, os.rename, mnt / "a", mnt / "a" / "b" / "a")
    expect_errno(errno.EINVAL, renameat2, mnt / "a", mnt / "a" / "b" / "c" / "x", RENAME_NOREPLACE)
    assert (mnt / "a" / "b" / "c").is_dir()
    assert os.listdir(mnt) == ["a"]


def test_rename_directory_over_directory(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "src").mkdir()
    (mnt / "src" / "child").mkdir()
    write_file(mnt / "src" / "f", b"data")
    (mnt / "p").mkdir()
    (mnt / "p" / "empty").mkdir()
    (mnt / "full").mkdir()
    write_file(mnt / "full" / "keep", b"keep")
    assert nlink(mnt) == 5  # . + .. + src, p, full
    # over a non-empty directory: ENOTEMPTY (EEXIST is also allowed by POSIX, Linux gives ENOTEMPTY)
    expect_errno((errno.ENOTEMPTY, errno.EEXIST), os.rename, mnt / "src", mnt / "full")
    assert (mnt / "full" / "keep").read_bytes() == b"keep"
    # over an empty directory: replaces it
    src_ino = os.stat(mnt / "src").st_ino
    os.rename(mnt / "src", mnt / "p" / "empty")
    assert not (mnt / "src").exists()
    assert os.stat(mnt / "p" / "empty").st_ino == src_ino
    assert (mnt / "p" / "empty" / "f").read_bytes() == b"data"
    assert sorted(os.listdir(mnt / "p" / "empty")) == ["child", "f"]
    assert nlink(mnt) == 4
    assert nlink(mnt / "p") == 3
    assert nlink(mnt / "p" / "empty") == 3
    remount(store, mnt)
    assert (nlink(mnt), nlink(mnt / "p"), nlink(mnt / "p" / "empty")) == (4, 3, 3)
    assert os.stat(mnt / "p" / "empty" / "..").st_ino == os.stat(mnt / "p").st_ino


def test_rename_over_open_file_purges_it_on_close(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    write_file(mnt / "old", b"old data " * 1000)
    write_file(mnt / "new", b"new data")
    fd = os.open(mnt / "old", os.O_RDWR)
    try:
        os.rename(mnt / "new", mnt / "old")
        assert os.fstat(fd).st_nlink == 0
        os.pwrite(fd, b"written after being replaced", 0)
        assert os.pread(fd, 28, 0) == b"written after being replaced"
    finally:
        os.close(fd)
    assert (mnt / "old").read_bytes() == b"new data"
    assert_purged_after_umount(store, mnt, inodes=2)
    assert (mnt / "old").read_bytes() == b"new data"


def test_rename_exchange_directories(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "p1" / "left" / "l1").mkdir(parents=True)
    (mnt / "p2" / "q" / "right").mkdir(parents=True)
    write_file(mnt / "p2" / "q" / "right" / "r.txt", b"r")
    ino_left = os.stat(mnt / "p1" / "left").st_ino
    renameat2(mnt / "p1" / "left", mnt / "p2" / "q" / "right", RENAME_EXCHANGE)
    assert os.listdir(mnt / "p1" / "left") == ["r.txt"]
    assert os.listdir(mnt / "p2" / "q" / "right") == ["l1"]
    assert os.stat(mnt / "p2" / "q" / "right").st_ino == ino_left
    assert os.stat(mnt / "p2" / "q" / "right" / "..").st_ino == os.stat(mnt / "p2" / "q").st_ino
    assert os.stat(mnt / "p1" / "left" / "..").st_ino == os.stat(mnt / "p1").st_ino
    assert (nlink(mnt / "p1"), nlink(mnt / "p2" / "q")) == (3, 3)
    # a directory cannot be exchanged with its own descendant, in either order
    expect_errno(errno.EINVAL, renameat2, mnt / "p2", mnt / "p2" / "q" / "right", RENAME_EXCHANGE)
    expect_errno((errno.EINVAL, errno.ENOTEMPTY), renameat2, mnt / "p2" / "q", mnt / "p2", RENAME_EXCHANGE)
    # unknown or contradictory flags are refused
    expect_errno(errno.EINVAL, renameat2, mnt / "p1", mnt / "p2", RENAME_NOREPLACE | RENAME_EXCHANGE)
    assert sorted(os.listdir(mnt)) == ["p1", "p2"]
    remount(store, mnt)
    assert os.listdir(mnt / "p2" / "q" / "right") == ["l1"]
    assert (mnt / "p1" / "left" / "r.txt").read_bytes() == b"r"


def test_open_file_follows_rename(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "elsewhere").mkdir()
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before ")
        os.rename(mnt / "f", mnt / "elsewhere" / "g")
        os.write(fd, b"after")
    finally:
        os.close(fd)
    assert (mnt / "elsewhere" / "g").read_bytes() == b"before after"
    remount(store, mnt)
    assert (mnt / "elsewhere" / "g").read_bytes() == b"before after"


# -- sizes, holes and offsets -----------------------------------------------------------------------------------
def test_truncate_shrink_and_regrow(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    data = os.urandom(200 * KiB)
    path = mnt / "t"
    write_file(path, data)
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 70_000)  # the middle of the second 64 KiB block
        assert os.fstat(fd).st_size == 70_000
        assert os.pread(fd, 300 * KiB, 0) == data[:70_000]
        os.ftruncate(fd, 150_000)
        assert os.fstat(fd).st_size == 150_000
        back = os.pread(fd, 300 * KiB, 0)
        assert back[:70_000] == data[:70_000]
        assert back[70_000:] == bytes(80_000), "bytes beyond a shrink must read as zeros after regrowing"
        os.ftruncate(fd, 10)
        os.ftruncate(fd, 5000)
        assert os.pread(fd, 10_000, 0) == data[:10] + bytes(4990)
    finally:
        os.close(fd)
    os.truncate(path, 3 * MiB + 7)  # path-based truncate up, well past the written data
    assert path.stat().st_size == 3 * MiB + 7
    remount(store, mnt)
    got = path.read_bytes()
    assert len(got) == 3 * MiB + 7
    assert got[:10] == data[:10]
    assert got[10:] == bytes(len(got) - 10)
    os.truncate(path, 0)
    assert path.read_bytes() == b""
    assert path.stat().st_size == 0


def test_write_after_shrink_does_not_resurrect_old_bytes(mounted: tuple[StoreFixture, Path]) -> None:
    """Shrinking into the middle of a block and then writing further into the same block (or a later one) must
    leave zeros between the new end and the write, never the bytes that were cut off."""
    store, mnt = mounted
    old = b"\xaa" * (300 * KiB)
    cases = {  # name: (shrink to, write at)
        "same-block": (70_000, 100_000),
        "next-block": (70_000, 140_000),
        "block-edge": (64 * KiB, 64 * KiB + 10),
        "to-zero": (0, 5000),
        "short-first-block": (10, 60_000),
    }
    for name, (shrink, at) in cases.items():
        write_file(mnt / name, old)
        with open(mnt / name, "r+b") as f:
            f.truncate(shrink)
            f.seek(at)
            f.write(b"NEW")
    expected = {name: old[:shrink] + bytes(at - shrink) + b"NEW" for name, (shrink, at) in cases.items()}
    for name, want in expected.items():
        assert (mnt / name).read_bytes() == want, name
    remount(store, mnt)  # read from the store, not the page cache
    for name, want in expected.items():
        got = (mnt / name).read_bytes()
        assert len(got) == len(want), name
        assert got == want, f"{name}: first difference at {next(i for i in range(len(want)) if got[i] != want[i])}"


def test_unaligned_writes_and_reads(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    data = os.urandom(MiB + 123)
    fd = os.open(mnt / "pieces", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        pos = 0
        step = 1
        while pos < len(data):  # chunk sizes 1, 4, 9, ... bytes, then capped at 65537
            n = min(step * step, 65537, len(data) - pos)
            assert os.pwrite(fd, data[pos:pos + n], pos) == n
            pos += n
            step += 1
        for off, n in ((0, 1), (65535, 3), (65536, 65536), (123_457, 200_000), (len(data) - 5, 100)):
            assert os.pread(fd, n, off) == data[off:off + n]
        assert os.pread(fd, 10, len(data) + 1000) == b""
    finally:
        os.close(fd)
    remount(store, mnt)
    assert (mnt / "pieces").read_bytes() == data


def test_posix_fallocate(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    fd = os.open(mnt / "alloc", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"keep me")
        os.posix_fallocate(fd, 0, 200 * KiB)  # glibc falls back to writing if the filesystem has no fallocate
        assert os.fstat(fd).st_size == 200 * KiB
        assert os.pread(fd, 200 * KiB, 0) == b"keep me" + bytes(200 * KiB - 7)
    finally:
        os.close(fd)
    remount(store, mnt)
    assert (mnt / "alloc").read_bytes() == b"keep me" + bytes(200 * KiB - 7)


def test_sparse_file_holes(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    path = mnt / "sparse"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.pwrite(fd, b"head", 0) == 4
        assert os.pwrite(fd, b"tail", 10 * MiB) == 4
        os.fsync(fd)
        assert os.fstat(fd).st_size == 10 * MiB + 4
        assert os.pread(fd, 64, 0) == b"head" + bytes(60)
        assert os.pread(fd, 1 * MiB, 5 * MiB) == bytes(MiB)
        assert os.pread(fd, 100, 10 * MiB - 4) == bytes(4) + b"tail"
    finally:
        os.close(fd)
    remount(store, mnt)
    st = path.stat()
    assert st.st_size == 10 * MiB + 4
    assert st.st_blocks * 512 <= 256 * KiB, f"sparse file uses {st.st_blocks * 512} bytes"
    with open(path, "rb") as f:
        assert f.read(MiB) == b"head" + bytes(MiB - 4)
        f.seek(10 * MiB - 4)
        assert f.read() == bytes(4) + b"tail"


def test_o_append_interleaved(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    path = mnt / "log"
    write_file(path, b"start\n")
    fd1 = os.open(path, os.O_WRONLY | os.O_APPEND)
    fd2 = os.open(path, os.O_WRONLY | os.O_APPEND)
    expected = b"start\n"
    try:
        for i in range(20):
            for fd, tag in ((fd1, b"A"), (fd2, b"B")):
                chunk = tag * (i * 997 % 5000 + 1) + b"\n"
                os.lseek(fd, 0, os.SEEK_SET)  # O_APPEND ignores the file offset
                assert os.write(fd, chunk) == len(chunk)
                expected += chunk
        assert os.fstat(fd1).st_size == len(expected)
    finally:
        os.close(fd1)
        os.close(fd2)
    assert path.read_bytes() == expected
    remount(store, mnt)
    assert path.read_bytes() == expected


def test_offsets_past_4gib(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    path = mnt / "big"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    far = 5 * GiB
    across = 4 * GiB - 3  # a write straddling the 32-bit boundary
    try:
        assert os.pwrite(fd, b"beyond-five", far) == 11
        assert os.pwrite(fd, b"straddling", across) == 10
        assert os.fstat(fd).st_size == far + 11
        assert os.pread(fd, 11, far) == b"beyond-five"
        assert os.pread(fd, 10, across) == b"straddling"
        assert os.pread(fd, 4096, far - 4096) == bytes(4096)
        assert os.pread(fd, 100, far + 11) == b""  # at EOF
    finally:
        os.close(fd)
    remount(store, mnt)
    assert path.stat().st_size == far + 11
    assert path.stat().st_blocks * 512 <= 1 * MiB
    with open(path, "rb") as f:
        f.seek(far)
        assert f.read() == b"beyond-five"
        f.seek(across)
        assert f.read(10) == b"straddling"
        f.seek(2 * GiB)
        assert f.read(8192) == bytes(8192)


# -- metadata ---------------------------------------------------------------------------------------------------
def test_chmod_chown_utime_and_times(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    path = mnt / "meta"
    write_file(path, b"x")
    st0 = os.stat(path)
    time.sleep(0.01)

    os.chmod(path, 0o640)
    st1 = os.stat(path)
    assert stat.S_IMODE(st1.st_mode) == 0o640 and stat.S_ISREG(st1.st_mode)
    assert st1.st_ctime_ns > st0.st_ctime_ns, "chmod must change ctime"
    assert st1.st_mtime_ns == st0.st_mtime_ns, "chmod must not change mtime"
    time.sleep(0.01)

    os.chown(path, 1234, 5678)
    st2 = os.stat(path)
    assert (st2.st_uid, st2.st_gid) == (1234, 5678)
    assert st2.st_ctime_ns > st1.st_ctime_ns, "chown must change ctime"
    assert st2.st_mtime_ns == st0.st_mtime_ns, "chown must not change mtime"
    os.chown(path, -1, 42)  # only the group
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 42)
    time.sleep(0.01)

    atime, mtime = 1_000_000_000_123_456_789, 1_234_567_890_987_654_321
    os.utime(path, ns=(atime, mtime))
    st3 = os.stat(path)
    assert (st3.st_atime_ns, st3.st_mtime_ns) == (atime, mtime), "utime must set exact nanoseconds"
    assert st3.st_ctime_ns > st2.st_ctime_ns, "utime must change ctime"
    time.sleep(0.01)

    before_write = time.time_ns()
    with open(path, "ab") as f:
        f.write(b"more")
    st4 = os.stat(path)
    assert st4.st_mtime_ns >= before_write - 10_000_000, "a write must update mtime"
    assert st4.st_ctime_ns >= st4.st_mtime_ns - 10_000_000
    assert st4.st_atime_ns == atime
    assert st4.st_size == 5

    remount(store, mnt)
    st5 = os.stat(path)
    assert stat.S_IMODE(st5.st_mode) == 0o640
    assert (st5.st_uid, st5.st_gid) == (1234, 42)
    assert st5.st_atime_ns == atime
    assert st5.st_mtime_ns == st4.st_mtime_ns
    assert st5.st_ctime_ns == st4.st_ctime_ns
    # utime on a directory and on a symlink itself (lutimes)
    (mnt / "dir").mkdir()
    os.utime(mnt / "dir", ns=(atime, mtime))
    assert os.stat(mnt / "dir").st_mtime_ns == mtime
    os.symlink("meta", mnt / "ln")
    os.utime(mnt / "ln", ns=(atime, mtime + 1), follow_symlinks=False)
    assert os.lstat(mnt / "ln").st_mtime_ns == mtime + 1
    assert os.stat(mnt / "ln").st_mtime_ns == st4.st_mtime_ns


def test_directory_and_truncate_times(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    d = mnt / "d"
    d.mkdir()
    write_file(d / "f", b"0123456789")

    def changed(path: Path, action: Callable[[], object]) -> tuple[bool, bool]:
        """Whether `action` moved path's (mtime, ctime) forward."""
        before = os.stat(path)
        time.sleep(0.01)
        action()
        after = os.stat(path)
        return after.st_mtime_ns > before.st_mtime_ns, after.st_ctime_ns > before.st_ctime_ns

    assert changed(d, lambda: write_file(d / "g", b"")) == (True, True), "create changes the directory"
    assert changed(d, lambda: os.unlink(d / "g")) == (True, True), "unlink changes the directory"
    assert changed(d, lambda: os.mkdir(d / "sub")) == (True, True), "mkdir changes the directory"
    assert changed(d, lambda: os.rename(d / "sub", d / "sub2")) == (True, True), "rename changes the directory"
    assert changed(d, lambda: os.setxattr(d, "user.k", b"v")) == (False, True), "xattrs change only ctime"
    assert changed(d / "f", lambda: os.truncate(d / "f", 4)) == (True, True), "truncate changes m+ctime"
    assert changed(d / "f", lambda: os.link(d / "f", d / "f2")) == (False, True), "link changes only ctime"
    assert changed(d / "f", lambda: os.unlink(d / "f2")) == (False, True), "unlink changes only ctime"
    assert changed(d / "f", lambda: os.close(os.open(d / "f", os.O_WRONLY | os.O_TRUNC))) == (True, True), \
        "open(O_TRUNC) of a non-empty file changes m+ctime"
    assert (d / "f").read_bytes() == b""
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        assert changed(d / "f", lambda: os.write(fd, b"abc")) == (True, True), "write changes m+ctime"
        assert changed(d / "f", lambda: os.fchmod(fd, 0o600)) == (False, True), "fchmod changes only ctime"
        assert changed(d / "f", lambda: os.ftruncate(fd, 1)) == (True, True), "ftruncate changes m+ctime"
    finally:
        os.close(fd)
    assert (d / "f").read_bytes() == b"a"


def test_setuid_bits_and_sticky(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    write_file(mnt / "f", b"#!/bin/sh\n")
    os.chmod(mnt / "f", 0o4755)
    assert stat.S_IMODE(os.stat(mnt / "f").st_mode) == 0o4755
    (mnt / "d").mkdir()
    os.chmod(mnt / "d", 0o1777)
    assert stat.S_IMODE(os.stat(mnt / "d").st_mode) == 0o1777
    assert stat.S_ISDIR(os.stat(mnt / "d").st_mode)


def test_chown_clears_setuid_and_setgid(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    write_file(mnt / "prog", b"#!/bin/sh\n", 0o6755)
    assert stat.S_IMODE(os.stat(mnt / "prog").st_mode) == 0o6755
    os.chown(mnt / "prog", 1000, 1000)
    assert stat.S_IMODE(os.stat(mnt / "prog").st_mode) == 0o755, "chown of a file clears set-user/group-ID"
    (mnt / "dir").mkdir()
    os.chmod(mnt / "dir", 0o2775)
    os.chown(mnt / "dir", 1000, 1000)
    assert stat.S_IMODE(os.stat(mnt / "dir").st_mode) == 0o2775, "chown of a directory keeps set-group-ID"


def test_setgid_directory_and_umask(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    d = mnt / "shared"
    d.mkdir()
    os.chown(d, 0, 777)
    os.chmod(d, 0o2775)
    old_umask = os.umask(0o027)
    try:
        fd = os.open(d / "file", os.O_WRONLY | os.O_CREAT, 0o666)
        os.close(fd)
        os.mkdir(d / "sub", 0o777)
        os.mkfifo(d / "fifo", 0o666)
    finally:
        os.umask(old_umask)
    st_file, st_sub, st_fifo = os.stat(d / "file"), os.stat(d / "sub"), os.stat(d / "fifo")
    assert st_file.st_gid == 777 and st_sub.st_gid == 777, "entries in a set-group-ID directory take its group"
    assert st_sub.st_mode & stat.S_ISGID, "subdirectories inherit set-group-ID"
    assert stat.S_IMODE(st_file.st_mode) == 0o640, "the umask applies to new files"
    assert stat.S_IMODE(st_sub.st_mode) == 0o2750, "the umask applies to new directories"
    assert stat.S_IMODE(st_fifo.st_mode) == 0o640, "the umask applies to new nodes"


def test_reads_do_not_change_atime(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    write_file(mnt / "f", b"data")
    os.utime(mnt / "f", ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_001))
    (mnt / "f").read_bytes()
    os.listdir(mnt)
    st = os.stat(mnt / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_500_000_000_000_000_000, 1_500_000_000_000_000_001)


def test_statvfs(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    sv = os.statvfs(mnt)
    assert sv.f_bsize > 0 and sv.f_frsize > 0
    assert sv.f_namemax == 255
    assert sv.f_blocks > 0
    assert 0 <= sv.f_bavail <= sv.f_bfree <= sv.f_blocks
    assert sv.f_files >= sv.f_ffree >= 0
    host = os.statvfs(mnt.parent)  # the store lives on this filesystem; free space is that space
    host_free = host.f_bavail * host.f_frsize
    assert abs(sv.f_bavail * sv.f_frsize - host_free) <= max(256 * MiB, host_free // 100)


# -- xattrs -----------------------------------------------------------------------------------------------------
def test_user_xattrs(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    path = mnt / "x"
    write_file(path, b"")
    (mnt / "d").mkdir()
    os.setxattr(path, "user.color", b"blue")
    os.setxattr(path, "user.binary", b"\0\1\2\xff" * 10)
    big = os.urandom(60 * KiB)
    os.setxattr(path, "user.big", big)
    os.setxattr(mnt / "d", "user.on_dir", b"yes")
    assert os.getxattr(path, "user.color") == b"blue"
    assert os.getxattr(path, "user.binary") == b"\0\1\2\xff" * 10
    assert os.getxattr(path, "user.big") == big
    assert sorted(os.listxattr(path)) == ["user.big", "user.binary", "user.color"]
    assert os.listxattr(mnt / "d") == ["user.on_dir"]
    # replace a value; XATTR_CREATE / XATTR_REPLACE semantics
    os.setxattr(path, "user.color", b"green")
    assert os.getxattr(path, "user.color") == b"green"
    expect_errno(errno.EEXIST, os.setxattr, path, "user.color", b"red", os.XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, path, "user.nothere", b"v", os.XATTR_REPLACE)
    os.setxattr(path, "user.empty", b"", os.XATTR_CREATE)
    assert os.getxattr(path, "user.empty") == b""
    # removal
    ctime = os.stat(path).st_ctime_ns
    time.sleep(0.01)
    os.removexattr(path, "user.binary")
    assert os.stat(path).st_ctime_ns > ctime, "removexattr must change ctime"
    expect_errno(errno.ENODATA, os.getxattr, path, "user.binary")
    expect_errno(errno.ENODATA, os.removexattr, path, "user.binary")
    expect_errno(errno.ENODATA, os.getxattr, path, "user.never")
    # other namespaces are refused
    expect_errno((errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM), os.setxattr, path, "trusted.x", b"1")
    expect_errno((errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM), os.setxattr, path, "security.x", b"1")
    # an oversized value is refused (Linux caps a value at 64 KiB)
    expect_errno((errno.E2BIG, errno.ENOSPC, errno.ERANGE), os.setxattr, path, "user.huge", bytes(65537))
    remount(store, mnt)
    assert sorted(os.listxattr(path)) == ["user.big", "user.color", "user.empty"]
    assert os.getxattr(path, "user.color") == b"green"
    assert os.getxattr(path, "user.big") == big
    assert os.getxattr(mnt / "d", "user.on_dir") == b"yes"


# -- durability calls -------------------------------------------------------------------------------------------
def test_fsync_and_fdatasync(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"synced data")
        os.fsync(fd)
        os.pwrite(fd, b"DATA", 7)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    dfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    remount(store, mnt)
    assert (mnt / "f").read_bytes() == b"synced DATA"


# -- links and open files ---------------------------------------------------------------------------------------
def test_unlink_while_open(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    path = mnt / "doomed"
    write_file(path, b"0123456789" * 10_000)
    (mnt / "keep").write_bytes(b"k")
    fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        assert not path.exists()
        assert os.listdir(mnt) == ["keep"]
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 10, 50_000) == b"0123456789"
        assert os.pwrite(fd, b"still writable", 200_000) == 14
        os.fsync(fd)
        assert os.fstat(fd).st_size == 200_014
        assert os.pread(fd, 14, 200_000) == b"still writable"
        assert os.pread(fd, 10, 100_000) == bytes(10)
        # the name can be reused while the old inode is still open
        write_file(path, b"new file")
        assert path.read_bytes() == b"new file"
        assert os.pread(fd, 10, 0) == b"0123456789"
    finally:
        os.close(fd)
    os.unlink(path)
    assert_purged_after_umount(store, mnt, inodes=2)  # the root and "keep"
    assert os.listdir(mnt) == ["keep"]


def test_hard_links(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "d").mkdir()
    write_file(mnt / "a", b"shared")
    os.link(mnt / "a", mnt / "d" / "b")
    os.link(mnt / "d" / "b", mnt / "c")
    sa, sb, sc = (os.stat(p) for p in (mnt / "a", mnt / "d" / "b", mnt / "c"))
    assert sa.st_ino == sb.st_ino == sc.st_ino
    assert sa.st_nlink == sb.st_nlink == sc.st_nlink == 3
    with open(mnt / "d" / "b", "r+b") as f:
        f.write(b"SHARED, and longer")
    assert (mnt / "a").read_bytes() == b"SHARED, and longer"
    assert (mnt / "c").read_bytes() == b"SHARED, and longer"
    os.chmod(mnt / "c", 0o600)
    assert stat.S_IMODE(os.stat(mnt / "a").st_mode) == 0o600
    os.unlink(mnt / "a")
    assert os.stat(mnt / "c").st_nlink == 2
    assert (mnt / "d" / "b").read_bytes() == b"SHARED, and longer"
    expect_errno(errno.EEXIST, os.link, mnt / "c", mnt / "d" / "b")
    expect_errno(errno.EPERM, os.link, mnt / "d", mnt / "dlink")
    remount(store, mnt)
    assert os.stat(mnt / "c").st_nlink == 2
    assert os.stat(mnt / "c").st_ino == sa.st_ino
    assert (mnt / "d" / "b").read_bytes() == b"SHARED, and longer"


def test_mmap_through_page_cache(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    size = 3 * 64 * KiB + 100
    path = mnt / "mapped"
    write_file(path, bytes(size))
    os.utime(path, ns=(BASE_MMAP_NS, BASE_MMAP_NS))
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), size)
        m[0:5] = b"hello"
        m[size - 5:size] = b"world"
        m[64 * KiB - 2:64 * KiB + 2] = b"SPAN"
        m.flush()
        m.close()
    assert os.stat(path).st_mtime_ns > BASE_MMAP_NS, "a write through a shared mapping updates mtime"
    expected = bytearray(size)
    expected[0:5] = b"hello"
    expected[size - 5:] = b"world"
    expected[64 * KiB - 2:64 * KiB + 2] = b"SPAN"
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, size + 10, 0) == bytes(expected)
    finally:
        os.close(fd)
    # the other way: write() then read through a map
    payload = os.urandom(100 * KiB)
    fd = os.open(mnt / "written", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
        with mmap.mmap(fd, len(payload), prot=mmap.PROT_READ) as m:
            assert m[:] == payload
        os.pwrite(fd, b"CHANGED", 1000)
        with mmap.mmap(fd, len(payload), prot=mmap.PROT_READ) as m:
            assert m[1000:1007] == b"CHANGED"
    finally:
        os.close(fd)
    remount(store, mnt)
    assert path.read_bytes() == bytes(expected)
    assert (mnt / "written").read_bytes() == payload[:1000] + b"CHANGED" + payload[1007:]


# -- directories and names --------------------------------------------------------------------------------------
def test_directory_link_counts(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    assert nlink(mnt) == 2
    d = mnt / "d"
    d.mkdir()
    assert nlink(d) == 2 and nlink(mnt) == 3
    (d / "a").mkdir()
    (d / "b").mkdir()
    write_file(d / "f", b"file does not count")
    assert nlink(d) == 4
    (d / "a").rmdir()
    assert nlink(d) == 3
    os.rename(d / "b", mnt / "b")
    assert nlink(d) == 2 and nlink(mnt) == 4
    os.rename(mnt / "b", mnt / "b2")  # same parent: no change
    assert nlink(mnt) == 4
    remount(store, mnt)
    assert (nlink(mnt), nlink(d), nlink(mnt / "b2")) == (4, 2, 2)


def test_listdir_many_entries(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    d = mnt / "many"
    d.mkdir()
    names = {f"entry-{i:05d}-{'x' * (i % 40)}" for i in range(3000)}
    for name in names:
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    listed = os.listdir(d)
    assert len(listed) == len(names)
    assert set(listed) == names
    # remove every other one while reading the directory again
    removed = sorted(names)[::2]
    for name in removed:
        os.unlink(d / name)
    assert set(os.listdir(d)) == names - set(removed)
    remount(store, mnt)
    with os.scandir(d) as it:
        entries = {e.name: e.is_file(follow_symlinks=False) for e in it}
    assert set(entries) == names - set(removed)
    assert all(entries.values())


def test_name_length_limits(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    n255 = "n" * 255
    u255 = "é" * 127 + "z"  # 255 bytes of UTF-8
    assert len(u255.encode()) == 255
    write_file(mnt / n255, b"long name")
    (mnt / u255).mkdir()
    os.symlink("../" + n255, mnt / u255 / n255)
    assert (mnt / n255).read_bytes() == b"long name"
    assert (mnt / u255 / n255).read_bytes() == b"long name"
    assert set(os.listdir(mnt)) == {n255, u255}
    n256 = "n" * 256
    expect_errno(errno.ENAMETOOLONG, write_file, mnt / n256, b"x")
    expect_errno(errno.ENAMETOOLONG, os.mkdir, mnt / n256)
    expect_errno(errno.ENAMETOOLONG, os.symlink, "t", mnt / n256)
    expect_errno(errno.ENAMETOOLONG, os.link, mnt / n255, mnt / n256)
    expect_errno(errno.ENAMETOOLONG, os.rename, mnt / n255, mnt / n256)
    expect_errno(errno.ENAMETOOLONG, os.stat, mnt / n256)
    expect_errno(errno.ENAMETOOLONG, os.mkdir, mnt / ("é" * 128))
    assert set(os.listdir(mnt)) == {n255, u255}
    remount(store, mnt)
    assert set(os.listdir(mnt)) == {n255, u255}
    assert os.readlink(mnt / u255 / n255) == "../" + n255


def test_error_codes(mounted: tuple[StoreFixture, Path]) -> None:
    _, mnt = mounted
    (mnt / "d").mkdir()
    write_file(mnt / "d" / "f", b"x")
    expect_errno(errno.EEXIST, os.mkdir, mnt / "d")
    expect_errno(errno.EEXIST, os.mkdir, mnt / "d" / "f")
    expect_errno(errno.ENOTEMPTY, os.rmdir, mnt / "d")
    expect_errno(errno.EISDIR, os.unlink, mnt / "d")
    expect_errno(errno.ENOTDIR, os.rmdir, mnt / "d" / "f")
    expect_errno(errno.ENOENT, os.open, mnt / "missing", os.O_RDONLY)
    expect_errno(errno.ENOENT, os.open, mnt / "nodir" / "file", os.O_RDWR | os.O_CREAT, 0o644)
    expect_errno(errno.ENOENT, os.unlink, mnt / "missing")
    expect_errno(errno.ENOENT, os.rmdir, mnt / "missing")
    expect_errno(errno.ENOENT, os.rename, mnt / "missing", mnt / "other")
    expect_errno(errno.ENOTDIR, os.open, mnt / "d" / "f" / "below", os.O_RDONLY)
    expect_errno(errno.EEXIST, os.open, mnt / "d" / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    expect_errno(errno.EISDIR, os.open, mnt / "d", os.O_WRONLY)
    expect_errno(errno.EINVAL, os.readlink, mnt / "d" / "f")
    (mnt / "d" / "f").unlink()
    (mnt / "d").rmdir()
    assert os.listdir(mnt) == []


def test_names_are_exact_bytes(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    names = [
        "caf\u00e9".encode(),  # NFC
        "cafe\u0301".encode(),  # NFD: a different name
        b"Case", b"case", b"CASE",
        b"\xff\xfe not utf-8 \x80",
        b"tab\there", b"new\nline", b"back\\slash", b" leading and trailing ", b"-dash", b"...", b".hidden",
        "emoji 🦀🔐".encode(),
    ]
    root = os.fsencode(mnt)
    for i, name in enumerate(names):
        with open(os.path.join(root, name), "wb") as f:
            f.write(str(i).encode())
    assert sorted(os.listdir(root)) == sorted(names)
    for i, name in enumerate(names):
        with open(os.path.join(root, name), "rb") as f:
            assert f.read() == str(i).encode(), name
    remount(store, mnt)
    assert sorted(os.listdir(root)) == sorted(names)
    with open(os.path.join(root, b"\xff\xfe not utf-8 \x80"), "rb") as f:
        assert f.read() == b"5"


def test_symlinks(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    write_file(mnt / "target", b"pointed at")
    long_target = ("segment" + "x" * 93 + "/") * 41
    long_target = long_target[:4094] + "z"  # PATH_MAX - 1 bytes
    assert len(long_target) == 4095
    targets = {
        "rel": "target",
        "abs": str(mnt / "target"),
        "dangling": "does/not/exist",
        "unicode": "ünïcødé → ✓",
        "long": long_target,
    }
    for name, t in targets.items():
        os.symlink(t, mnt / name)
    for name, t in targets.items():
        assert os.readlink(mnt / name) == t
        st = os.lstat(mnt / name)
        assert stat.S_ISLNK(st.st_mode)
        assert st.st_size == len(t.encode())
    assert (mnt / "rel").read_bytes() == b"pointed at"
    assert (mnt / "abs").read_bytes() == b"pointed at"
    expect_errno(errno.ENOENT, os.stat, mnt / "dangling")
    expect_errno(errno.ENAMETOOLONG, os.symlink, "y" * 4096, mnt / "toolong")
    remount(store, mnt)
    for name, t in targets.items():
        assert os.readlink(mnt / name) == t
    assert (mnt / "rel").read_bytes() == b"pointed at"


def test_mknod_fifo(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    fifo = mnt / "pipe"
    os.mkfifo(fifo, 0o640)
    st = os.stat(fifo)
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    received: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:
            received.append(f.read())

    t = threading.Thread(target=reader)
    t.start()
    with open(fifo, "wb") as f:
        f.write(b"through the fifo")
    t.join(timeout=10)
    assert not t.is_alive()
    assert received == [b"through the fifo"]
    os.mknod(mnt / "pipe2", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(os.stat(mnt / "pipe2").st_mode)
    os.mknod(mnt / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(mnt / "sock", stat.S_IFSOCK | 0o600)
    remount(store, mnt)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert stat.S_IMODE(os.stat(fifo).st_mode) == 0o640
    st = os.stat(mnt / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_ISSOCK(os.stat(mnt / "sock").st_mode)


# -- permissions (default_permissions) --------------------------------------------------------------------------
CHILD = r"""
import json, os, sys
out = {}
def attempt(key, fn):
    try:
        r = fn()
        out[key] = ["ok", r.decode() if isinstance(r, bytes) else r]
    except OSError as e:
        out[key] = ["err", e.errno]
def read(name):
    with open(name, "rb") as f:
        return f.read()
def write(name):
    with open(name, "ab") as f:
        f.write(b"!")
    return None
attempt("secret", lambda: read("secret"))
attempt("public", lambda: read("public"))
attempt("public_write", lambda: write("public"))
attempt("create_in_root", lambda: write("newfile"))
attempt("create_in_open", lambda: write("open/mine"))
attempt("list_private", lambda: os.listdir("private"))
attempt("owned", lambda: read("owned"))
attempt("chmod_other", lambda: os.chmod("public", 0o777))
attempt("write_suid", lambda: write("suid"))
attempt("sticky_unlink_other", lambda: os.unlink("sticky/roots"))
attempt("sticky_unlink_own", lambda: os.unlink("sticky/mine"))
attempt("utime_now_other", lambda: os.utime("public"))
attempt("utime_exact_other", lambda: os.utime("world", ns=(1, 1)))
attempt("utime_now_world", lambda: os.utime("world"))
print(json.dumps({"uid": os.getuid(), **out}))
"""


def run_as_nobody(cwd: Path, script: str) -> dict[str, Any]:
    # cwd is entered as root before setpriv drops privileges, so the (0700) pytest tmp dirs above the mount
    # don't matter: the child only uses paths relative to the mount root.
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           "/usr/bin/python3", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_permissions_for_unprivileged_user(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    remount(store, mnt, "allow_other")
    os.chmod(mnt, 0o755)
    write_file(mnt / "secret", b"top secret", 0o600)
    write_file(mnt / "public", b"for everyone", 0o644)
    write_file(mnt / "owned", b"mine", 0o600)
    os.chown(mnt / "owned", NOBODY, NOBODY)
    (mnt / "private").mkdir(mode=0o700)
    (mnt / "open").mkdir()
    os.chmod(mnt / "open", 0o777)
    write_file(mnt / "suid", b"#!/bin/sh\n", 0o4777)
    write_file(mnt / "world", b"", 0o666)
    (mnt / "sticky").mkdir()
    os.chmod(mnt / "sticky", 0o1777)
    write_file(mnt / "sticky" / "roots", b"", 0o666)
    write_file(mnt / "sticky" / "mine", b"")
    os.chown(mnt / "sticky" / "mine", NOBODY, NOBODY)
    res = run_as_nobody(mnt, CHILD)
    assert res["uid"] == NOBODY
    assert res["secret"] == ["err", errno.EACCES]
    assert res["public"] == ["ok", "for everyone"]
    assert res["public_write"] == ["err", errno.EACCES]
    assert res["create_in_root"] == ["err", errno.EACCES]
    assert res["create_in_open"] == ["ok", None]
    assert res["list_private"] == ["err", errno.EACCES]
    assert res["owned"] == ["ok", "mine"]
    assert res["chmod_other"] == ["err", errno.EPERM]
    assert res["write_suid"] == ["ok", None]
    assert stat.S_IMODE(os.stat(mnt / "suid").st_mode) == 0o777, "an unprivileged write clears set-user-ID"
    assert res["sticky_unlink_other"] == ["err", errno.EPERM]
    assert res["sticky_unlink_own"] == ["ok", None]
    assert sorted(os.listdir(mnt / "sticky")) == ["roots"]
    assert res["utime_now_other"] == ["err", errno.EACCES]
    assert res["utime_exact_other"] == ["err", errno.EPERM]
    assert res["utime_now_world"] == ["ok", None]
    assert (mnt / "public").read_bytes() == b"for everyone"
    st = os.stat(mnt / "open" / "mine")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), "a new file belongs to the creating user"
    # root still reads everything
    assert (mnt / "secret").read_bytes() == b"top secret"


def test_cat_as_nobody_needs_allow_other_and_mode(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    remount(store, mnt, "allow_other")
    write_file(mnt / "secret", b"hidden\n", 0o600)
    write_file(mnt / "public", b"visible\n", 0o644)

    def cat(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "cat", name],
                              cwd=mnt, capture_output=True, text=True, timeout=30, env={**os.environ, "LC_ALL": "C"})

    denied = cat("secret")
    assert denied.returncode != 0
    assert "Permission denied" in denied.stderr
    allowed = cat("public")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "visible\n"


# -- stability --------------------------------------------------------------------------------------------------
def test_inode_numbers_stable_across_remount(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "a" / "b").mkdir(parents=True)
    write_file(mnt / "a" / "f", b"1")
    write_file(mnt / "a" / "b" / "g", b"2")
    os.link(mnt / "a" / "f", mnt / "hard")
    os.symlink("a/f", mnt / "soft")
    os.mkfifo(mnt / "fifo")
    os.rename(mnt / "a" / "b" / "g", mnt / "moved")

    def inodes() -> dict[str, tuple[int, int]]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(mnt):
            for name in ["", *dirnames, *filenames]:
                p = os.path.join(dirpath, name) if name else dirpath
                st = os.lstat(p)
                out[os.path.relpath(p, mnt)] = (st.st_ino, st.st_nlink)
        return out

    before = inodes()
    assert len(before) == 8
    assert before["hard"] == before["a/f"]
    assert len({ino for ino, _ in before.values()}) == 7
    remount(store, mnt)
    assert inodes() == before
