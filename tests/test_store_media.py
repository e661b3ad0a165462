"""The store file on disk: created 0600 whatever the umask (its -wal and -shm files too), and a store on
read-only media opened read-only by `mount -o ro`, `info` and `fsck` (issue 19 items 4 and 6).  The read-only
media is a read-only bind mount of the test's own folder (root only; skipped elsewhere)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import assert_user_error, clawfs, safe_unmount
from helpers import StoreFixture, is_mounted, make_store


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_store_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)  # the most permissive umask: the store must not follow it
    try:
        st = make_store(tmp_path, "wide.claw")
    finally:
        os.umask(old)
    assert _mode(st.path) == 0o600, oct(_mode(st.path))


@pytest.mark.fuse
def test_wal_and_shm_files_are_0600_while_mounted(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        st = make_store(tmp_path)
        mnt = tmp_path / "mnt"
        st.mount(mnt)
        try:
            (mnt / "f").write_bytes(b"x" * 100_000)
            os.sync()
            made = [Path(str(st.path) + s) for s in ("-wal", "-shm") if Path(str(st.path) + s).exists()]
            assert made, "the mount made no -wal/-shm file to check"
            for p in [st.path, *made]:
                assert _mode(p) == 0o600, f"{p.name} is {oct(_mode(p))}"
        finally:
            st.umount(mnt)
    finally:
        os.umask(old)
    st.assert_clean()


@pytest.fixture
def ro_store(tmp_path: Path) -> Iterator[tuple[StoreFixture, Path]]:
    """A store with one file in it, seen through a read-only bind mount of its folder: (fixture, its path
    on the read-only side)."""
    rw = tmp_path / "rw"
    rw.mkdir()
    st = make_store(tmp_path, store_dir=rw)
    mnt = tmp_path / "seed"
    st.mount(mnt)
    try:
        (mnt / "note.txt").write_text("on a CD\n")
    finally:
        st.umount(mnt)
    ro = tmp_path / "ro"
    ro.mkdir()
    bind = subprocess.run(["mount", "--bind", str(rw), str(ro)], capture_output=True, text=True)
    if bind.returncode:
        pytest.skip(f"cannot make a read-only bind mount (needs root): {bind.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True)
        assert remount.returncode == 0, remount.stderr
        assert os.statvfs(ro).f_flag & os.ST_RDONLY
        yield st, ro / st.path.name
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


@pytest.mark.fuse
def test_info_and_fsck_on_read_only_media(ro_store: tuple[StoreFixture, Path]) -> None:
    st, path = ro_store
    proc = clawfs("info", str(path))
    assert proc.returncode == 0 and "store id" in proc.stdout, proc.stderr
    proc = clawfs("fsck", str(path), *st.key_args())
    assert proc.returncode == 0, proc.stderr
    assert "clean, 2 inodes" in proc.stderr
    assert not any(Path(str(path) + s).exists() for s in ("-wal", "-shm"))


@pytest.mark.fuse
def test_mount_on_read_only_media(ro_store: tuple[StoreFixture, Path]) -> None:
    st, path = ro_store
    mnt = st.tmp / "mnt"
    mnt.mkdir()
    line = assert_user_error(clawfs("mount", str(path), str(mnt), "-o", f"passphrase_file={st.passfile}"))
    assert "read-only" in line and "-o ro" in line, line
    assert not is_mounted(mnt)
    proc = clawfs("mount", str(path), str(mnt), "-o", f"ro,noindex,passphrase_file={st.passfile}")
    assert proc.returncode == 0, proc.stderr
    try:
        assert (mnt / "note.txt").read_text() == "on a CD\n"
        with pytest.raises(OSError):
            (mnt / "new").write_text("x")
    finally:
        safe_unmount(st, mnt)
    assert not is_mounted(mnt)


def test_mkfs_on_read_only_media_or_a_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "p").write_bytes(b"pass\n")
    key = ["--passphrase-file", str(tmp_path / "p")]
    line = assert_user_error(clawfs("mkfs", str(tmp_path / "no" / "such" / "s.claw"), *key))
    assert "does not exist" in line and "no such store" not in line, line
    ro = tmp_path / "ro"
    ro.mkdir()
    bind = subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True, text=True)
    if bind.returncode:
        pytest.skip(f"cannot make a read-only bind mount (needs root): {bind.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        line = assert_user_error(clawfs("mkfs", str(ro / "s.claw"), *key))
        assert "read-only" in line, line
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
