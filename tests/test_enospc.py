"""A full disk under the store: the writer gets ENOSPC, the mount survives, and once space is freed the store
is intact (fsck clean, earlier data unchanged)."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from faults import lazy_unmount, safe_unmount
from helpers import SMALL_DISK_MB, fill_file, is_mounted, make_store

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

CHUNK = 1024 * 1024


def test_full_disk_gives_enospc_and_store_survives(small_disk: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path, store_dir=small_disk)  # the mount log stays off the full disk
    mnt = tmp_path / "mnt"
    first = random.Random(1).randbytes(3 * CHUNK + 123)
    store.mount(mnt)
    try:
        with open(mnt / "first.bin", "wb") as f:
            f.write(first)
            f.flush()
            os.fsync(f.fileno())

        written, err = fill_file(mnt / "big.bin", 4 * SMALL_DISK_MB * CHUNK)
        assert err is not None, f"wrote {written >> 20} MiB onto a {SMALL_DISK_MB} MiB disk without an error"
        assert err.errno == errno.ENOSPC, (
            f"the writer got {errno.errorcode.get(err.errno or 0, err.errno)} ({err}) after {written >> 20} MiB "
            "on a full disk; expected ENOSPC")

        assert is_mounted(mnt), "the mount died when the disk filled up"
        assert (mnt / "first.bin").read_bytes() == first, "the earlier file changed while the disk was full"
        os.unlink(mnt / "big.bin")
        assert sorted(os.listdir(mnt)) == ["first.bin"]
        store.umount(mnt)
    finally:
        safe_unmount(store, mnt)
    assert not is_mounted(mnt)

    store.assert_clean()
    store.mount(mnt)
    try:
        assert sorted(os.listdir(mnt)) == ["first.bin"], "the deleted big file came back"
        assert (mnt / "first.bin").read_bytes() == first, "the fsync'd file is damaged after the disk was full"
    finally:
        store.umount(mnt)
    store.assert_clean()
    lazy_unmount(mnt)
