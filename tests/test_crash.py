"""Crash safety: SIGKILL the mount daemon mid-work, then remount.

What must hold after a crash: every file that was fsync'd has exactly its content; files that were not fsync'd
hold no garbage (each byte is what was written or a zero from a hole that was never flushed); the store checks
clean; the unclean shutdown is counted and reported; inodes unlinked while open are purged by the next mount.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
from pathlib import Path

import pytest
from faults import ForegroundMount, foreground_mount, fsck_json, info, lazy_unmount
from helpers import StoreFixture, is_mounted

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

UNCLEAN_WARNING = "not cleanly unmounted"


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _assert_no_garbage(name: str, got: bytes, want: bytes) -> None:
    """An un-fsync'd file after a crash: a subset of its writes reached the store, the rest reads as holes."""
    assert len(got) <= len(want), f"{name}: {len(got)} bytes after the crash, only {len(want)} were written"
    for off in range(0, len(got), 4096):
        g, w = got[off:off + 4096], want[off:off + len(got[off:off + 4096])]
        if g == w or not any(g):
            continue
        bad = next(i for i in range(len(g)) if g[i] not in (w[i], 0))
        raise AssertionError(f"{name}: byte {off + bad} is {g[bad]:#x}, neither the written {w[bad]:#x} nor 0")


def _crash(fg: ForegroundMount) -> None:
    """SIGKILL the daemon and detach its dead mount."""
    fg.kill()
    assert fg.proc.returncode == -signal.SIGKILL, (
        f"the daemon exited with {fg.proc.returncode} before we killed it:\n{fg.stderr()}")
    assert is_mounted(fg.mnt), "the kernel dropped the mount by itself after SIGKILL (expected a dead mount)"
    lazy_unmount(fg.mnt)
    assert not is_mounted(fg.mnt), "fusermount3 -u -z / umount -l did not detach the dead mount"


def _mounted_flag_after_crash(store: StoreFixture) -> None:
    i = info(store.path)
    assert i["mounted_flag"] is True, "the mounted mark is not set after a crash: an unclean shutdown is invisible"
    assert i["unclean_shutdowns"] == 0, f"unclean_shutdowns counted before the next mount: {i}"


def test_sigkill_keeps_fsynced_files(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    synced = {
        "tiny.txt": b"fsync'd before the crash\n",
        "one-block.bin": _data(1, 64 * 1024),
        "big.bin": _data(2, 3 * 1024 * 1024 + 17),
        "sub/dir/nested.bin": _data(3, 200_000),
    }
    rewritten_v2 = _data(5, 150_000)
    appended_head, appended_tail = _data(6, 70_000), _data(7, 90_000)
    unsynced = {"loose-small.txt": b"never fsync'd\n" * 10, "loose-big.bin": _data(8, 2 * 1024 * 1024 + 3)}
    open_files: list[int] = []
    fg = ForegroundMount(store, mnt)
    try:
        (mnt / "sub" / "dir").mkdir(parents=True)
        for name, data in synced.items():
            _write_synced(mnt / name, data)
        # rewritten in place and fsync'd again: the second version must win
        _write_synced(mnt / "rewritten.bin", _data(4, 150_000))
        fd = os.open(mnt / "rewritten.bin", os.O_WRONLY)
        os.pwrite(fd, rewritten_v2, 0)
        os.fsync(fd)
        os.close(fd)
        # fsync'd and still open at the crash
        fd = os.open(mnt / "open-synced.bin", os.O_CREAT | os.O_WRONLY, 0o644)
        open_files.append(fd)
        os.write(fd, synced["one-block.bin"][:5000])
        os.fsync(fd)
        # an fsync'd head with an un-fsync'd tail
        fd = os.open(mnt / "appended.bin", os.O_CREAT | os.O_WRONLY, 0o644)
        open_files.append(fd)
        os.write(fd, appended_head)
        os.fsync(fd)
        os.write(fd, appended_tail)
        # never fsync'd at all: one closed, one still open
        (mnt / "loose-small.txt").write_bytes(unsynced["loose-small.txt"])
        fd = os.open(mnt / "loose-big.bin", os.O_CREAT | os.O_WRONLY, 0o644)
        open_files.append(fd)
        os.write(fd, unsynced["loose-big.bin"])
        _crash(fg)
    finally:
        fg.cleanup()
        for fd in open_files:
            with contextlib.suppress(OSError):
                os.close(fd)

    _mounted_flag_after_crash(store)
    code, report, _ = fsck_json(store)
    assert code == 0 and report["clean"], f"the store is inconsistent after a crash: {report['problems']}"

    store.mount(mnt)
    try:
        assert UNCLEAN_WARNING in store.log_text(), (
            f"the remount did not warn that the store was {UNCLEAN_WARNING}; log:\n{store.log_text()}")
        assert info(store.path)["unclean_shutdowns"] == 1
        for name, data in synced.items():
            got = (mnt / name).read_bytes()
            assert got == data, f"{name}: fsync'd content lost or changed ({len(got)} of {len(data)} bytes)"
        assert (mnt / "rewritten.bin").read_bytes() == rewritten_v2, "rewritten.bin: the fsync'd rewrite is lost"
        assert (mnt / "open-synced.bin").read_bytes() == synced["one-block.bin"][:5000]
        got = (mnt / "appended.bin").read_bytes()
        assert got[:len(appended_head)] == appended_head, "appended.bin: the fsync'd head is damaged"
        _assert_no_garbage("appended.bin", got, appended_head + appended_tail)
        for name, data in unsynced.items():
            if (mnt / name).exists():
                _assert_no_garbage(name, (mnt / name).read_bytes(), data)
    finally:
        store.umount(mnt)

    after = info(store.path)
    assert after["mounted_flag"] is False, "a clean unmount after the crash left the mounted mark set"
    assert after["unclean_shutdowns"] == 1
    store.assert_clean()

    # the next clean mount must not report the old crash again
    store.mount(mnt)
    store.umount(mnt)
    assert store.log_text().count(UNCLEAN_WARNING) == 1, "a mount after a clean unmount warned of a crash"
    assert info(store.path)["unclean_shutdowns"] == 1


def test_sigkill_reported_in_foreground_stderr(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    with foreground_mount(store, mnt) as fg:
        _write_synced(mnt / "a.txt", b"a\n")
        _crash(fg)
    _mounted_flag_after_crash(store)
    with foreground_mount(store, mnt) as fg2:
        assert (mnt / "a.txt").read_bytes() == b"a\n"
        assert info(store.path)["unclean_shutdowns"] == 1
        assert UNCLEAN_WARNING in fg2.stderr(), f"no warning on the foreground mount's stderr:\n{fg2.stderr()}"
        os.kill(fg2.pid, signal.SIGTERM)  # a clean stop: the daemon unmounts and clears its mark
        fg2.proc.wait(timeout=30)
        assert fg2.proc.returncode == 0, f"SIGTERM'd foreground mount exited {fg2.proc.returncode}:\n{fg2.stderr()}"
        assert not is_mounted(mnt), "SIGTERM did not unmount the foreground mount"
    i = info(store.path)
    assert i["mounted_flag"] is False and i["unclean_shutdowns"] == 1, i
    store.assert_clean()


def _inode_rows(store_path: Path, ino: int) -> tuple[int | None, int]:
    """(nlink of inode `ino` or None if it is gone, number of blocks it owns), read straight from SQLite: the
    store file as a crash left it, without the recovery `Store.open` would run first."""
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT nlink FROM inodes WHERE id = ?", (ino,)).fetchone()
        blocks = conn.execute("SELECT count(*) FROM blocks WHERE ino = ?", (ino,)).fetchone()[0]
    finally:
        conn.close()
    return (None if row is None else int(row[0])), int(blocks)


def test_unlinked_while_open_orphan_is_purged(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    keeper = _data(10, 100_000)
    doomed_fd = -1
    fg = ForegroundMount(store, mnt)
    try:
        _write_synced(mnt / "keeper.bin", keeper)
        doomed_fd = os.open(mnt / "doomed.bin", os.O_CREAT | os.O_RDWR, 0o644)
        doomed = _data(11, 300_000)
        os.write(doomed_fd, doomed)
        os.fsync(doomed_fd)
        ino = os.fstat(doomed_fd).st_ino
        os.unlink(mnt / "doomed.bin")
        assert "doomed.bin" not in os.listdir(mnt)
        os.write(doomed_fd, _data(12, 100_000))  # still writable through its handle
        os.fsync(doomed_fd)
        assert os.fstat(doomed_fd).st_nlink == 0
        assert os.pread(doomed_fd, 1000, 0) == doomed[:1000], "an unlinked-but-open file must stay readable"
        _crash(fg)
    finally:
        fg.cleanup()
        with contextlib.suppress(OSError):
            os.close(doomed_fd)

    nlink, nblocks = _inode_rows(store.path, ino)
    assert nlink == 0 and nblocks > 0, f"after the crash inode {ino} should be an orphan: {nlink=} {nblocks=}"
    code, report, _ = fsck_json(store)
    assert code == 0 and report["clean"], f"an orphan is not a problem, but fsck says: {report['problems']}"
    assert any(f"inode {ino}" in n and "orphan" in n for n in report["notes"]), (
        f"fsck does not note orphan inode {ino}: {report['notes']}")

    store.mount(mnt)
    try:
        assert UNCLEAN_WARNING in store.log_text()
        assert sorted(os.listdir(mnt)) == ["keeper.bin"]
        assert (mnt / "keeper.bin").read_bytes() == keeper
    finally:
        store.umount(mnt)

    assert _inode_rows(store.path, ino) == (None, 0), f"the next mount did not purge orphan inode {ino}"
    code, report, _ = fsck_json(store)
    assert code == 0 and report["clean"], report["problems"]
    assert not any("orphan" in n for n in report["notes"]), f"orphans left after remount: {report['notes']}"
