"""fallocate(2): mode 0, KEEP_SIZE and PUNCH_HOLE (issue 19 item 10), through the VFS and through a real mount
(pyfuse3 passes no fallocate: clawfs/fuse_hook.py adds it to the session).  Holes read as zeros; fsck is the
oracle after each test."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest
from helpers import make_store
from test_vfs import errno_of, new_file, vfs  # noqa: F401  (the fixture)

from clawfs.vfs import FALLOC_FL_KEEP_SIZE as KEEP
from clawfs.vfs import FALLOC_FL_PUNCH_HOLE as PUNCH
from clawfs.vfs import VFS

BS = 4096  # the vfs fixture's block size


def test_mode_0_grows_with_a_hole(vfs: VFS) -> None:  # noqa: F811
    fh, ino = new_file(vfs, b"f", b"head")
    vfs.fallocate(fh, 0, 0, 3 * BS + 5)
    a = vfs.getattr(ino)
    assert a.size == 3 * BS + 5
    assert vfs.read(fh, 0, a.size) == b"head" + bytes(a.size - 4)
    vfs.fallocate(fh, 0, 0, 10)  # inside the file: nothing changes
    assert vfs.getattr(ino).size == 3 * BS + 5
    vfs.write(fh, 2 * BS, b"later")  # the preallocated range takes writes as any
    assert vfs.read(fh, 2 * BS - 2, 9) == b"\0\0later\0\0"
    vfs.release(fh)


def test_keep_size(vfs: VFS) -> None:  # noqa: F811
    fh, ino = new_file(vfs, b"f", b"abc")
    vfs.fallocate(fh, KEEP, 0, 10 * BS)
    assert vfs.getattr(ino).size == 3
    assert vfs.read(fh, 0, 100) == b"abc"
    vfs.release(fh)


def test_punch_hole_inside_and_to_the_end(vfs: VFS) -> None:  # noqa: F811
    data = bytes(range(256)) * (6 * BS // 256)
    fh, ino = new_file(vfs, b"f", data)
    before = vfs.getattr(ino).blocks
    vfs.fallocate(fh, PUNCH | KEEP, 100, 2 * BS)  # across a block boundary, inside the file
    expect = data[:100] + bytes(2 * BS) + data[100 + 2 * BS:]
    assert vfs.read(fh, 0, len(data)) == expect
    vfs.fallocate(fh, PUNCH | KEEP, 4 * BS + 7, 10 * BS)  # past the end: to the end, the size stays
    expect = expect[:4 * BS + 7] + bytes(len(data) - 4 * BS - 7)
    a = vfs.getattr(ino)
    assert a.size == len(data)
    assert vfs.read(fh, 0, len(data)) == expect
    assert a.blocks < before, "a hole punched to the end still takes its blocks"
    vfs.fallocate(fh, PUNCH | KEEP, 10 * BS, BS)  # wholly past the end: nothing
    assert vfs.read(fh, 0, len(data)) == expect
    vfs.release(fh)


def test_unsupported_modes_and_bad_ranges(vfs: VFS) -> None:  # noqa: F811
    fh, _ = new_file(vfs, b"f", b"abc")
    assert errno_of(vfs.fallocate, fh, PUNCH, 0, 1) == errno.EOPNOTSUPP  # Linux: PUNCH_HOLE needs KEEP_SIZE
    assert errno_of(vfs.fallocate, fh, 0x10, 0, 1) == errno.EOPNOTSUPP  # ZERO_RANGE
    assert errno_of(vfs.fallocate, fh, 0, 0, 0) == errno.EINVAL
    assert errno_of(vfs.fallocate, fh, 0, -1, 5) == errno.EINVAL
    vfs.release(fh)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.mark.fuse
def test_fallocate_through_a_real_mount(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    mnt = tmp_path / "mnt"
    store.mount(mnt)
    data = os.urandom(300_000)
    try:
        path = mnt / "f"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, 400_000)  # mode 0
            assert os.fstat(fd).st_size == 400_000
            _fallocate(fd, KEEP, 0, 1_000_000)
            assert os.fstat(fd).st_size == 400_000
            _fallocate(fd, PUNCH | KEEP, 70_000, 100_000)
            blocks = os.fstat(fd).st_blocks
            _fallocate(fd, PUNCH | KEEP, 150_000, 10**6)
            assert os.fstat(fd).st_size == 400_000
            assert os.fstat(fd).st_blocks < blocks
            with pytest.raises(OSError) as e:
                _fallocate(fd, PUNCH, 0, 10)
            assert e.value.errno == errno.EOPNOTSUPP
        finally:
            os.close(fd)
        expect = data[:70_000] + bytes(400_000 - 70_000)
        assert path.read_bytes() == expect
    finally:
        store.umount(mnt)
    store.mount(mnt)
    try:
        assert (mnt / "f").read_bytes() == expect  # what reached the kernel's cache also reached the store
    finally:
        store.umount(mnt)
    store.assert_clean()
