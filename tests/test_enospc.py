"""A full disk under the store: the writer gets ENOSPC, the mount survives, and once space is freed the store
is intact (fsck clean, earlier data unchanged)."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import lazy_unmount, safe_unmount
from helpers import PASSPHRASE, StoreFixture, is_mounted, run

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

DISK_MB = 48
CHUNK = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a {DISK_MB} MiB tmpfs to fill up (needs root): {proc.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(path: Path, limit: int) -> tuple[int, OSError | None]:
    """Write random 1 MiB chunks, fsync'ing every few, until an error or `limit` bytes; (bytes, error)."""
    rng = random.Random(7)
    written = 0
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        while written < limit:
            os.write(fd, rng.randbytes(CHUNK))
            written += CHUNK
            if written % (4 * CHUNK) == 0:
                os.fsync(fd)
        os.fsync(fd)
    except OSError as e:
        return written, e
    finally:
        with contextlib.suppress(OSError):  # close reports a late write-back error again; already seen
            os.close(fd)
    return written, None


def test_full_disk_gives_enospc_and_store_survives(small_disk: Path, tmp_path: Path) -> None:
    passfile = tmp_path / "passphrase"
    passfile.write_bytes(PASSPHRASE + b"\n")
    store = StoreFixture(small_disk / "agent.claw", passfile, tmp_path)  # the mount log stays off the full disk
    run("mkfs", str(store.path), "--passphrase-file", str(passfile))
    mnt = tmp_path / "mnt"
    first = random.Random(1).randbytes(3 * CHUNK + 123)
    store.mount(mnt)
    try:
        with open(mnt / "first.bin", "wb") as f:
            f.write(first)
            f.flush()
            os.fsync(f.fileno())

        written, err = _fill(mnt / "big.bin", 4 * DISK_MB * CHUNK)
        assert err is not None, f"wrote {written >> 20} MiB onto a {DISK_MB} MiB disk without an error"
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
