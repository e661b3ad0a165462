"""The runtime's caches (agent/cache.py) on a real mount: what it keeps in memory between turns is read again as
soon as the home changes under it (an in-place edit of the same size, another writer's append to a thread, a new
channel), so caching saves round trips and hides nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_home import Home, mounted_home, running
from llm_server import answer

from agent import maildir

pytestmark = [pytest.mark.fuse]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    with mounted_home(tmp_path) as h:
        yield h


def system_text(request: dict[str, object]) -> str:
    messages = request["messages"]
    assert isinstance(messages, list)
    return " ".join(m["content"] for m in messages if m["role"] == "system")


def test_a_prompt_file_edited_in_place_with_the_same_size_is_seen_at_the_next_turn(home: Home) -> None:
    (home.mnt / "SOUL.md").write_text("colour: amber\n")
    home.llm.push(answer("one"), answer("two"))
    with running(home):
        home.reply_to(home.send("first"))
        with open(home.mnt / "SOUL.md", "r+") as f:  # same size, same inode: only the mtime says it changed
            f.write("colour: olive\n")
        home.reply_to(home.send("second"))
    assert "colour: amber" in system_text(home.llm.requests[0])
    assert "colour: olive" in system_text(home.llm.requests[1])
    assert "amber" not in system_text(home.llm.requests[1])


def test_a_thread_appended_to_by_another_writer_is_read_again(home: Home) -> None:
    home.llm.push(answer("first answer"), answer("second answer"))
    with running(home):
        home.reply_to(home.send("hello there"))
        path = home.mnt / "conversations" / "local" / "t1.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps({"id": "x", "role": "user", "content": "a line from elsewhere",
                                "created_at": "2026-01-01T00:00:00+00:00"}) + "\n")
        home.reply_to(home.send("and again"))
    convo = [(m["role"], m["content"].strip()) for m in home.llm.requests[1]["messages"] if m["role"] != "system"]
    assert convo == [("user", "hello there"), ("assistant", "first answer"), ("user", "a line from elsewhere"),
                     ("user", "and again")]
    # and the runtime's own append after it extends what it read, in order
    lines = [json.loads(x)["content"].strip() for x in path.read_text().splitlines()]
    assert lines[-3:] == ["a line from elsewhere", "and again", "second answer"]


def test_a_channel_made_while_running_is_served(home: Home) -> None:
    home.llm.push(answer("on local"), answer("on the new channel"))
    with running(home):
        home.reply_to(home.send("hello"))
        for box in ("inbox", "outbox"):
            for sub in ("tmp", "new", "cur"):
                (home.mnt / "channels" / "fresh" / box / sub).mkdir(parents=True)
        msg = maildir.make_message("anyone there?", sender="ada@example.test", thread="t9")
        maildir.deliver(home.mnt / "channels" / "fresh" / "inbox", msg.as_bytes())
        assert home.reply_to(str(msg["Message-ID"]), channel="fresh") == "on the new channel"
