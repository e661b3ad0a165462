"""Shared by the tests/test_agent_*.py tests: a real mounted agent home (a store made with `--agent-home`,
indexed with the model-free `hashing-384` embedder so no torch loads), a scripted LLM on 127.0.0.1, and the
runtime running in a thread of the test (or as `clawfs agent run` in a subprocess)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faults import wait_for
from helpers import StoreFixture, make_store, run
from llm_server import ScriptedLLM

from agent import maildir
from agent.runtime import Runtime

TIMEOUT = 30.0


def llm_toml(base_url: str, **extra: Any) -> str:
    settings = {"base_url": base_url, "model": "scripted", "timeout_seconds": 5, "retries": 2,
                "backoff_seconds": 0.01, **extra}
    return "[llm]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def agent_toml(**extra: Any) -> str:
    settings = {"poll_seconds": 0.05, "heartbeat_minutes": 0, **extra}
    return "[agent]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


@dataclass
class Home:
    store: StoreFixture
    mnt: Path
    llm: ScriptedLLM

    def configure(self, llm: dict[str, Any] | None = None, agent: dict[str, Any] | None = None,
                  base_url: str | None = None) -> None:
        (self.mnt / "settings" / "llm.toml").write_text(llm_toml(base_url or self.llm.base_url, **(llm or {})))
        (self.mnt / "settings" / "agent.toml").write_text(agent_toml(**(agent or {})))

    def box(self, which: str, sub: str, channel: str = "local") -> Path:
        return self.mnt / "channels" / channel / which / sub

    def outbox_bodies(self, channel: str = "local") -> list[str]:
        out = []
        for sub in ("new", "cur"):
            for p in sorted(self.box("outbox", sub, channel).iterdir()):
                out.append(maildir.body_text(p.read_bytes()))
        return out

    def conversation(self, thread: str, channel: str = "local") -> list[dict[str, Any]]:
        path = self.mnt / "conversations" / channel / f"{thread}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def wait_indexed(self) -> None:
        def idle() -> bool:
            status = json.loads((self.mnt / ".clawfs" / "status").read_text())
            return bool(status["pending"] == 0)
        wait_for(idle, timeout=TIMEOUT, what="the indexer to catch up")

    def send(self, text: str, thread: str = "t1", channel: str = "local") -> str:
        msg = maildir.make_message(text, sender="ada@example.test", thread=thread)
        maildir.deliver(self.mnt / "channels" / channel / "inbox", msg.as_bytes())
        return str(msg["Message-ID"])

    def reply_to(self, msgid: str, channel: str = "local", timeout: float = TIMEOUT) -> str:
        outbox = self.mnt / "channels" / channel / "outbox"
        wait_for(lambda: maildir.find_reply(outbox, msgid) is not None, timeout=timeout,
                 what=f"the reply to {msgid}")
        path = maildir.find_reply(outbox, msgid)
        assert path is not None
        raw = path.read_bytes()
        assert maildir.header(raw, "In-Reply-To") == msgid
        return maildir.body_text(raw).rstrip("\n")

    def inbox_cur(self, channel: str = "local") -> list[Path]:
        return sorted(self.box("inbox", "cur", channel).iterdir())


@contextmanager
def mounted_home(tmp: Path, *opts: str) -> Iterator[Home]:
    """`opts`: mount options (e.g. the agent uid, for a runtime run in the jail by `clawfs agent run`)."""
    store = make_store(tmp, "agent.claw", "--agent-home")
    run("reindex", str(store.path), *store.key_args(), "--embedder", "hashing-384")
    mnt = tmp / "mnt"
    store.mount(mnt, *opts, index=True)
    llm = ScriptedLLM().start()
    try:
        home = Home(store, mnt, llm)
        home.configure()
        yield home
    finally:
        llm.stop()
        store.umount(mnt)


@contextmanager
def running(home: Home, **kwargs: Any) -> Iterator[Runtime]:
    """The runtime in a thread of the test, stopped (current turns finished) on exit."""
    rt = Runtime(home.mnt, **kwargs)
    stop = threading.Event()
    t = threading.Thread(target=rt.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield rt
    finally:
        stop.set()
        t.join(timeout=TIMEOUT)
        assert not t.is_alive(), "the runtime did not stop"
