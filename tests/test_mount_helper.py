"""mount(8) integration: `mount -t clawfs`, fstab lines (through an alternative fstab, never the real one),
`umount`, `fusermount3 -u` and `clawfs umount`, which must return only once the daemon let go of the store."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from faults import (
    clawfs,
    fsck_json,
    info,
    mount_source,
    pids_holding,
    process_gone,
    safe_unmount,
    wait_released,
)
from helpers import StoreFixture, is_mounted
from waiting import wait_for

pytestmark = pytest.mark.fuse

HELPER = "/usr/sbin/mount.clawfs"


@pytest.fixture(autouse=True)
def _need_mount_helper() -> None:
    if not (os.path.exists(HELPER) or shutil.which("mount.clawfs", path="/sbin:/usr/sbin")):
        pytest.skip(f"mount(8) helper {HELPER} is not installed (`make setup` installs it)")


def _sh(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CLAWFS_PASSPHRASE_FILE"}
    return subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                          timeout=timeout)


def _assert_clawfs_mount(store: StoreFixture, mnt: Path) -> None:
    src = mount_source(mnt)
    assert src is not None, f"nothing is mounted on {mnt}"
    fstype, source = src
    assert fstype == "fuse.clawfs", f"{mnt} is a {fstype} mount"
    assert source == str(store.path.resolve()), f"mount source is {source!r}, expected the store path"


def _round_trip(store: StoreFixture, mnt: Path, name: str) -> None:
    data = f"written through {name}\n".encode()
    (mnt / f"{name}.txt").write_bytes(data)
    assert (mnt / f"{name}.txt").read_bytes() == data


def _assert_clean_and_unmarked(store: StoreFixture) -> None:
    code, report, _ = fsck_json(store)
    assert code == 0 and report["clean"], report["problems"]
    i = info(store.path)
    assert i["mounted_flag"] is False, "the daemon did not finish a clean unmount (mounted mark still set)"
    assert i["unclean_shutdowns"] == 0


def test_mount_t_clawfs_and_umount(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    mnt.mkdir()
    try:
        proc = _sh("mount", "-t", "clawfs", str(store.path), str(mnt), "-o",
                   f"passphrase_file={store.passfile},log_file={store.tmp / 'mount.log'}")
        assert proc.returncode == 0, f"mount -t clawfs exited {proc.returncode}: {proc.stderr}"
        _assert_clawfs_mount(store, mnt)
        _round_trip(store, mnt, "mount-t")
        proc = _sh("umount", str(mnt))
        assert proc.returncode == 0, f"umount exited {proc.returncode}: {proc.stderr}"
        assert not is_mounted(mnt)
        wait_released(store)
    finally:
        safe_unmount(store, mnt)
    _assert_clean_and_unmarked(store)
    store.mount(mnt)
    try:
        assert (mnt / "mount-t.txt").read_bytes() == b"written through mount-t\n"
    finally:
        store.umount(mnt)


def test_mount_t_clawfs_wrong_passphrase(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    mnt.mkdir()
    wrong = store.tmp / "wrong"
    wrong.write_bytes(b"wrong\n")
    try:
        proc = _sh("mount", "-t", "clawfs", str(store.path), str(mnt), "-o", f"passphrase_file={wrong}")
        assert proc.returncode != 0, "mount -t clawfs with a wrong passphrase succeeded"
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "passphrase" in proc.stderr, f"mount(8) does not pass on why it failed: {proc.stderr!r}"
        assert not is_mounted(mnt)
    finally:
        safe_unmount(store, mnt)


def test_fstab_line(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    mnt.mkdir()
    fstab = store.tmp / "fstab"
    fstab.write_text("# test fstab, not /etc/fstab\n"
                     f"{store.path} {mnt} clawfs passphrase_file={store.passfile},nofail,noauto 0 0\n")
    try:
        proc = _sh("mount", "--fstab", str(fstab), str(mnt))
        assert proc.returncode == 0, f"mount --fstab exited {proc.returncode}: {proc.stderr}"
        _assert_clawfs_mount(store, mnt)
        _round_trip(store, mnt, "fstab")
        daemons = pids_holding(store.path)
        assert daemons, "no process holds the store while it is mounted"

        proc = clawfs("umount", str(mnt))
        assert proc.returncode == 0, f"clawfs umount exited {proc.returncode}: {proc.stderr}"
        assert not is_mounted(mnt)
        # right after `clawfs umount` returns the daemon must have let go: no polling here
        code, report, stderr = fsck_json(store)
        assert code == 0 and report["clean"], f"fsck right after clawfs umount: {report} {stderr}"
        wait_for(lambda: all(process_gone(p) for p in daemons), timeout=5,
                 what=f"the mount daemon(s) {daemons} to exit after clawfs umount")
    finally:
        safe_unmount(store, mnt)
    _assert_clean_and_unmarked(store)

    # the same fstab line mounts again, and the data is still there
    try:
        proc = _sh("mount", "-T", str(fstab), str(mnt))
        assert proc.returncode == 0, f"mount -T exited {proc.returncode}: {proc.stderr}"
        assert (mnt / "fstab.txt").read_bytes() == b"written through fstab\n"
    finally:
        safe_unmount(store, mnt)
    wait_released(store)
    _assert_clean_and_unmarked(store)


def test_clawfs_umount_waits_for_daemon(store: StoreFixture) -> None:
    """Repeat a few times: a race between unmount and the daemon's last commit would show up as `in use`."""
    mnt = store.tmp / "mnt"
    try:
        for i in range(3):
            store.mount(mnt)
            daemons = pids_holding(store.path)
            assert daemons, "no process holds the store while it is mounted"
            with open(mnt / f"f{i}.bin", "wb") as f:
                f.write(os.urandom(2 * 1024 * 1024))  # dirty data for the daemon to flush on unmount
            proc = clawfs("umount", str(mnt))
            assert proc.returncode == 0, f"clawfs umount exited {proc.returncode}: {proc.stderr}"
            proc = clawfs("fsck", str(store.path), *store.key_args())
            assert proc.returncode == 0, f"round {i}: fsck right after clawfs umount failed: {proc.stderr}"
            wait_for(lambda pids=daemons: all(process_gone(p) for p in pids), timeout=5,  # type: ignore[misc]
                     what=f"the mount daemon(s) {daemons} to exit")
    finally:
        safe_unmount(store, mnt)
    _assert_clean_and_unmarked(store)


def test_fusermount3_unmount(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    store.mount(mnt)
    try:
        _round_trip(store, mnt, "fusermount")
        proc = _sh("fusermount3", "-u", str(mnt))
        assert proc.returncode == 0, f"fusermount3 -u exited {proc.returncode}: {proc.stderr}"
        assert not is_mounted(mnt)
        wait_released(store)
    finally:
        safe_unmount(store, mnt)
    _assert_clean_and_unmarked(store)
    store.mount(mnt)
    try:
        assert (mnt / "fusermount.txt").read_bytes() == b"written through fusermount\n"
    finally:
        store.umount(mnt)
