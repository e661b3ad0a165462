"""The agent's commands on a real mount, as a user runs them: `clawfs mkfs --agent-home`, `clawfs agent init`
(idempotent, never overwriting), `clawfs agent run` (SIGTERM exits 0; a SIGKILL mid-turn redelivers the message
on restart, answered once), `clawfs chat`, `clawfs agent status`, and how the LLM key travels: the runtime
runs in the jail (`-o agent_uid` mount, marker `jail`) and holds a placeholder; the mount daemon's egress proxy
swaps in the value from secrets/, and no value is anywhere the jail can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_home import Home, mounted_home
from faults import assert_user_error
from helpers import CLAWFS, make_store, run
from llm_server import Reply, answer, rules
from waiting import wait_for

from agent import maildir
from kernel import jailcheck
from sandbox import jail

pytestmark = [pytest.mark.fuse]
jailed = [pytest.mark.jail,
          pytest.mark.skipif(os.geteuid() != 0, reason="`clawfs agent run` builds a jail: root only (CI runs as root)"),
          pytest.mark.skipif(not all(layer.ok for layer in jailcheck.layers()),
                             reason="this host lacks a jail layer: see `kernel.jailcheck.layers()`")]
AGENT_UID = f"allow_other,agent_uid={jail.JAIL_UID},agent_gid={jail.JAIL_UID}"


def in_jail(f: Any) -> Any:
    for mark in jailed:
        f = mark(f)
    return f


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    with mounted_home(tmp_path, AGENT_UID) as h:
        yield h


def jail_count(home: Home) -> int:
    return len(json.loads((home.mnt / ".clawfs" / "status").read_text())["proxy"]["jails"])


class AgentProcess:
    def __init__(self, home: Home, *args: str) -> None:
        self.err = home.store.tmp / "agent.stderr"
        with open(self.err, "ab") as f:
            self.proc = subprocess.Popen([CLAWFS, "agent", "run", str(home.mnt), *args], stdout=f, stderr=f,
                                         stdin=subprocess.DEVNULL)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout=60)


@pytest.fixture
def agent_procs() -> Iterator[list[AgentProcess]]:
    procs: list[AgentProcess] = []
    yield procs
    for p in procs:
        p.stop(signal.SIGKILL)


def test_mkfs_agent_home_and_init_seed_the_same_layout_and_never_overwrite(tmp_path: Path, home: Home) -> None:
    expected = {"AGENTS.md", "IDENTITY.md", "SOUL.md", "USER.md", "TOOLS.md", "HEARTBEAT.md", "MEMORY.md", "daily",
                "conversations", "jobs", "routines", "tools", "secrets", "settings", "channels", ".agent"}
    assert expected <= {p.name for p in home.mnt.iterdir()}
    for box in ("inbox", "outbox"):
        assert {p.name for p in (home.mnt / "channels/local" / box).iterdir()} == {"tmp", "new", "cur"}
    assert json.loads(run("agent", "init", str(home.mnt), "--json").stdout) == {"created": []}
    (home.mnt / "SOUL.md").write_text("my own soul\n")
    (home.mnt / "USER.md").unlink()
    out = json.loads(run("agent", "init", str(home.mnt), "--json").stdout)
    assert out == {"created": ["USER.md"]}
    assert (home.mnt / "SOUL.md").read_text() == "my own soul\n"
    # a plain store seeded by init on the mount
    (tmp_path / "plain").mkdir()
    other = make_store(tmp_path / "plain")
    mnt = tmp_path / "plain" / "mnt"
    other.mount(mnt)
    try:
        created = json.loads(run("agent", "init", str(mnt), "--json").stdout)["created"]
        assert {"settings/llm.toml", "settings/agent.toml", "channels/local/inbox/new/"} <= set(created)
        assert expected <= {p.name for p in mnt.iterdir()}
    finally:
        other.umount(mnt)


def test_commands_on_something_that_is_not_a_mount_fail_clearly(tmp_path: Path) -> None:
    for args in (["agent", "init", str(tmp_path)], ["agent", "run", str(tmp_path)], ["agent", "status", str(tmp_path)],
                 ["chat", str(tmp_path), "hi"]):
        proc = run(*args, check=False)
        assert proc.returncode == 1
        assert_user_error(proc, contains="not a mounted ClawFS home")


@in_jail
def test_chat_and_status_with_a_running_agent_then_sigterm_exits_0(home: Home,
                                                                   agent_procs: list[AgentProcess]) -> None:
    before = json.loads(run("agent", "status", str(home.mnt), "--json").stdout)
    assert before["running"] is False and before["last_turn"] is None
    agent = AgentProcess(home)
    agent_procs.append(agent)
    proc = run("chat", str(home.mnt), "hello agent", "--timeout", "30")
    assert proc.stdout == "You said: hello agent\n"
    reply = json.loads(run("chat", str(home.mnt), "hello again", "--thread", "x", "--json").stdout)
    assert reply["text"] == "You said: hello again" and reply["thread"] == "x" and reply["reply_id"]
    # .agent/status.json is rewritten every STATUS_EVERY seconds, not at each reply: wait for the one after the turn
    status = wait_for(lambda: json.loads(run("agent", "status", str(home.mnt), "--json").stdout), timeout=30,
                      until=lambda st: st["running"] and (st.get("last_turn") or {}).get("thread") == "x",
                      what="status to show the turn on thread x")
    assert status["queue"] == {"local": 0} and status["turns"] == 2, status
    assert "runtime: running" in run("agent", "status", str(home.mnt)).stdout
    outbox_cur = list((home.mnt / "channels/local/outbox/cur").iterdir())
    assert len(outbox_cur) == 2 and all(maildir.flags(p.name) == "S" for p in outbox_cur), "chat marks replies seen"
    assert agent.stop(signal.SIGTERM) == 0, agent.stderr()
    assert "stopped after 2 turns" in agent.stderr()
    assert json.loads(run("agent", "status", str(home.mnt), "--json").stdout)["running"] is False


def test_chat_without_a_runtime_times_out_clearly_and_the_message_waits(home: Home) -> None:
    proc = run("chat", str(home.mnt), "anyone?", "--timeout", "0.5", check=False)
    assert proc.returncode == 1
    assert_user_error(proc, contains="no reply within 0.5 s")
    assert "clawfs agent run" in proc.stderr
    assert len(list((home.mnt / "channels/local/inbox/new").iterdir())) == 1, "the message waits for the agent"


@in_jail
def test_interactive_chat_reads_lines_until_eof(home: Home, agent_procs: list[AgentProcess]) -> None:
    agent_procs.append(AgentProcess(home))
    proc = run("chat", str(home.mnt), input=b"one\ntwo\n", timeout=60)
    assert proc.stdout == "You said: one\nYou said: two\n"


@in_jail
def test_a_crash_mid_turn_redelivers_on_restart_and_answers_once(home: Home,
                                                                  agent_procs: list[AgentProcess]) -> None:
    entered, release = threading.Event(), threading.Event()

    def stuck_once(body: dict[str, Any]) -> Reply:
        if not entered.is_set():
            entered.set()
            release.wait(60)
            return answer("too late")
        return rules(body)

    home.llm.script = stuck_once
    msgid = home.send("survive a crash")
    first = AgentProcess(home)
    agent_procs.append(first)
    wait_for(entered.is_set, timeout=30, what="the turn to reach the LLM")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    # The daemon kills a jail whose holder died (before the stuck answer could reach the orphaned runtime).
    wait_for(lambda: jail_count(home) == 0, timeout=30, what="the daemon to kill the dead holder's jail")
    release.set()
    [claimed] = home.inbox_cur()
    assert maildir.flags(claimed.name) == "", "claimed, not answered"
    assert not list(home.box("outbox", "new").iterdir())
    second = AgentProcess(home)
    agent_procs.append(second)
    assert home.reply_to(msgid) == "You said: survive a crash"
    assert second.stop() == 0
    assert "redelivering" in second.stderr()
    assert len(list(home.box("outbox", "new").iterdir())) == 1
    answered = [json.loads(x) for x in (home.mnt / ".agent/answered.jsonl").read_text().splitlines()]
    assert [a["message_id"] for a in answered] == [msgid]


@in_jail
def test_a_message_answered_before_a_crash_is_only_flagged_on_restart(home: Home,
                                                                       agent_procs: list[AgentProcess]) -> None:
    """The reply went out, then the runtime died before flagging the message: no second reply, no LLM call."""
    msgid = home.send("already answered")
    [new] = list(home.box("inbox", "new").iterdir())
    claimed = maildir.claim(new)
    assert claimed is not None
    reply = maildir.make_message("the earlier reply", sender="agent@clawfs.local", in_reply_to=msgid)
    maildir.deliver(home.mnt / "channels/local/outbox", reply.as_bytes(), maildir.reply_name(msgid))
    agent = AgentProcess(home)
    agent_procs.append(agent)
    wait_for(lambda: maildir.flags(home.inbox_cur()[0].name) == "RS", timeout=30, what="the message flagged")
    assert agent.stop() == 0
    assert home.llm.requests == [] and len(list(home.box("outbox", "new").iterdir())) == 1


@in_jail
def test_the_llm_key_is_swapped_at_the_daemons_proxy_and_nowhere_in_the_jail(
        home: Home, agent_procs: list[AgentProcess]) -> None:
    # no api_key_secret: no Authorization at all
    with_none = AgentProcess(home)
    agent_procs.append(with_none)
    home.reply_to(home.send("one"))
    assert with_none.stop() == 0
    assert "authorization" not in home.llm.headers[-1]
    # api_key_secret: the runtime sends a placeholder, the daemon's proxy the value (read from the store)
    key = "sk-test-" + "k" * 30
    (home.mnt / "secrets" / "openai_api_key").write_text(key + "\n")
    home.configure(llm={"api_key_secret": "openai_api_key"})
    with_key = AgentProcess(home)
    agent_procs.append(with_key)
    assert home.reply_to(home.send("two")) == "You said: two"
    assert with_key.stop() == 0, with_key.stderr()
    assert home.llm.headers[-1]["authorization"] == f"Bearer {key}"
    assert key not in json.dumps(home.llm.requests), "the key is in no request body"
    assert key not in with_key.stderr()
    lines = [json.loads(x) for x in (home.mnt / ".clawfs/audit/network.jsonl").read_text().splitlines()]
    assert lines and all(x["allowed"] and x["tool"] == "runtime" for x in lines), lines
    assert key not in json.dumps(lines)
    # and nowhere the jail can read: every file of the home it may open, its environment, its /tmp
    walk = ("import os, sys\nfor top in ('/agent', '/tmp', '/etc'):\n"
            "    for root, dirs, files in os.walk(top):\n"
            "        for f in files:\n"
            "            try:\n                sys.stdout.write(open(os.path.join(root, f), errors='replace').read())\n"
            "            except OSError:\n                pass\n"
            "print(open('/proc/self/environ').read())\nprint('walked')")
    p = run("jail", "exec", str(home.mnt), "--", "python3", "-c", walk, timeout=300)
    assert p.stdout.rstrip().endswith("walked")
    assert "You said: two" in p.stdout, "the walk read the home (its conversations)"
    assert key not in p.stdout + p.stderr


def test_a_broken_settings_file_is_a_clear_error(home: Home) -> None:
    (home.mnt / "settings" / "llm.toml").write_text("[llm\nbase_url = 3")
    proc = run("agent", "run", str(home.mnt), check=False)
    assert proc.returncode == 1
    assert_user_error(proc, contains="llm.toml is not valid TOML")
    (home.mnt / "settings" / "llm.toml").write_text('[llm]\nbase_url = "ftp://x"\n')
    assert_user_error(run("agent", "run", str(home.mnt), check=False), contains="must be an http(s) URL")
    (home.mnt / "settings" / "llm.toml").write_text('[llm]\nmodle = "x"\n')
    assert_user_error(run("agent", "run", str(home.mnt), check=False), contains="unknown setting(s) modle")
