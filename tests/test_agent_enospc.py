"""A full disk under the home while the agent works: the turn's writes fail with ENOSPC, the runtime says so in
its log, the message waits (nothing lost, nothing half-answered), and once space is freed it is answered once."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_home import Home, llm_toml, running
from faults import safe_unmount, wait_for
from helpers import PASSPHRASE, StoreFixture, run
from llm_server import ScriptedLLM

from agent import maildir

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

DISK_MB = 48
CHUNK = 1 << 20


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


def fill(path: Path) -> OSError | None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for i in range(4 * DISK_MB):
            os.write(fd, os.urandom(CHUNK))
            if i % 4 == 3:
                os.fsync(fd)
        os.fsync(fd)
    except OSError as e:
        return e
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return None


def test_a_full_disk_pauses_the_turn_and_the_message_is_answered_once_space_is_back(
        small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    passfile = tmp_path / "passphrase"
    passfile.write_bytes(PASSPHRASE + b"\n")
    store = StoreFixture(small_disk / "agent.claw", passfile, tmp_path)
    run("mkfs", str(store.path), "--passphrase-file", str(passfile), "--agent-home")
    mnt = tmp_path / "mnt"
    store.mount(mnt)
    llm = ScriptedLLM().start()
    try:
        home = Home(store, mnt, llm)
        home.configure()
        (mnt / "settings" / "llm.toml").write_text(llm_toml(llm.base_url))
        msgid = home.send("hello on a full disk")
        ballast = small_disk / "ballast.bin"  # beside the store: the disk under the home fills up
        err = fill(ballast)
        assert err is not None and err.errno == errno.ENOSPC, err
        caplog.set_level(logging.ERROR, logger="agent")
        with running(home):
            wait_for(lambda: "the home's disk is full" in caplog.text, timeout=60, what="the full-disk log line")
            assert maildir.find_reply(mnt / "channels/local/outbox", msgid) is None
            waiting = [p.name for p in home.box("inbox", "new").iterdir()] + [
                p.name for p in home.inbox_cur() if maildir.flags(p.name) == ""]
            assert waiting, "the message waits in new/ (or claimed, unanswered, in cur/)"
            ballast.unlink()
            assert home.reply_to(msgid, timeout=60) == "You said: hello on a full disk"
        assert len(list(home.box("outbox", "new").iterdir())) == 1
        [cur] = home.inbox_cur()
        assert maildir.flags(cur.name) == "RS"
        store.umount(mnt)
    finally:
        llm.stop()
        safe_unmount(store, mnt)
    store.assert_clean()
