"""A full disk under the home while the agent works: the turn's writes fail with ENOSPC, the runtime says so in
its log, the message waits (nothing lost, nothing half-answered), and once space is freed it is answered once."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
from agent_home import Home, llm_toml, running
from faults import safe_unmount, wait_for
from helpers import SMALL_DISK_MB, fill_file, make_store
from llm_server import ScriptedLLM

from agent import maildir

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


def test_a_full_disk_pauses_the_turn_and_the_message_is_answered_once_space_is_back(
        small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(tmp_path, "agent.claw", "--agent-home", store_dir=small_disk)
    mnt = tmp_path / "mnt"
    store.mount(mnt)
    llm = ScriptedLLM().start()
    try:
        home = Home(store, mnt, llm)
        home.configure()
        (mnt / "settings" / "llm.toml").write_text(llm_toml(llm.base_url))
        msgid = home.send("hello on a full disk")
        ballast = small_disk / "ballast.bin"  # beside the store: the disk under the home fills up
        _, err = fill_file(ballast, 4 * SMALL_DISK_MB << 20)
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
