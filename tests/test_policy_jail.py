"""Policy is the owner's, from inside the real jail: `clawfs jail exec MNT --uid AGENT_UID` beneath a mount made
with `-o agent_uid=AGENT_UID`.  Every way in at policy fails and changes nothing (the daemon's refusals are in the
audit), a rewritten llm.toml cannot open the host's loopback to the proxy, the jail still reads settings and writes
its memory; and the agent's way to ask works end to end: a tool it proposes shows in `clawfs status --json`, is not
runnable until the owner's `clawfs tool approve --yes`, then runs; a network.toml it proposes reaches
settings/ only through `clawfs policy approve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import StoreFixture, is_mounted
from test_policy_mount import AGENT_BATTERY, AGENT_KEEPS, LLM, snapshot
from wasm.support import wat

from clawfs.errors import UserError
from kernel import jailcheck
from mountd import policy_cli
from sandbox import jail

AGENT_UID = jail.JAIL_UID
WEATHER_CAPS = {"http": {"allowlist": [{"host": "api.weather.test", "methods": ["GET"]}]}}

pytestmark = [pytest.mark.fuse, pytest.mark.jail,
              pytest.mark.skipif(os.geteuid() != 0, reason="a jail and an agent_uid mount need root (as CI)"),
              pytest.mark.skipif(not all(layer.ok for layer in jailcheck.layers()),
                                 reason="this host lacks a jail layer: see `kernel.jailcheck.layers()`")]

# Appended to the setpriv battery of tests/test_policy_mount.py (run from /agent): the proposals, the loopback.
EXTRA = r'''
def propose():
    os.makedirs("proposals/tools/weather", exist_ok=True)
    write("proposals/tools/weather/tool.wasm", WASM.encode())
    write("proposals/tools/weather/capabilities.json", json.dumps(CAPS).encode())
    write("proposals/network.toml", b'[[allow]]\nhost = "api.weather.test"\n')
attempt("write the proposals", propose)
attempt("create tools/weather/tool.wasm", lambda: write("tools/weather/tool.wasm", WASM.encode()))
attempt("rewrite llm.toml to the loopback listener",
        lambda: write_existing("settings/llm.toml", ('[llm]\nbase_url = "http://127.0.0.1:%d/"\n' % PORT).encode()))
import urllib.request, urllib.error
def loopback():
    try:
        urllib.request.urlopen("http://127.0.0.1:%d/v1/models" % PORT, timeout=10).read()
    except urllib.error.HTTPError as e:
        raise PermissionError(errno.EACCES, "proxy refused: %d" % e.code) from None
attempt("reach the loopback listener through the proxy", loopback)
'''
JAIL_KEEPS = (*AGENT_KEEPS, "write the proposals")


def clawfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountd.cli", *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env={**os.environ, "CLAWFS_WASM_CACHE": "/tmp/clawfs-test-wasm"})


class Listener:
    """A TCP listener on the host's loopback that records every connection (an escape shows up here)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections: list[object] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.connections.append(peer)
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def agent_home(store: StoreFixture) -> Iterator[Path]:
    mnt = store.tmp / "mnt"
    store.mount(mnt, f"agent_uid={AGENT_UID}")
    try:
        for d in ("settings", "tools/echo", "channels/mail/inbox", "secrets", "memory"):
            (mnt / d).mkdir(parents=True)
        (mnt / "settings/llm.toml").write_bytes(LLM)
        (mnt / "tools/echo/tool.wasm").write_text(wat("echo"))
        (mnt / "tools/echo/capabilities.json").write_bytes(b'{"http": null}')
        (mnt / "channels/mail/channel.toml").write_bytes(b"kind = 'mail'\n")
        (mnt / "secrets/github_token").write_bytes(b"ghp_secret")
        (mnt / "MEMORY.md").write_bytes(b"# memory\n")
        (mnt / "memory/prepared.toml").write_bytes(b'[llm]\nbase_url = "http://127.0.0.1:9/"\n')
        yield mnt
    finally:
        if is_mounted(mnt):
            store.umount(mnt)
    store.assert_clean()


def in_jail(mnt: Path, script: str) -> dict[str, str]:
    p = clawfs("jail", "exec", str(mnt), "--uid", str(AGENT_UID), "--", "python3", "-c", script)
    assert p.returncode == 0, p.stderr
    out: dict[str, str] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def test_from_inside_the_jail_policy_holds_and_a_proposal_runs_only_after_approval(agent_home: Path) -> None:
    mnt = agent_home
    listener = Listener()
    try:
        before = snapshot(mnt)
        script = (f"WASM = {wat('echo')!r}\nCAPS = {WEATHER_CAPS!r}\nPORT = {listener.port}\n"
                  "import os\nos.chdir('/agent')\n"
                  + AGENT_BATTERY.replace("print(json.dumps(out))", EXTRA + "print(json.dumps(out))"))
        out = in_jail(mnt, script)
    finally:
        listener.close()
    llm = out.pop("llm.toml", None)
    refused = {k: v for k, v in out.items() if k not in JAIL_KEEPS}
    escapes = {k: v for k, v in refused.items() if v not in ("EACCES", "EPERM", "EROFS", "ENOENT")}
    assert not escapes, f"escapes: {escapes}"
    assert {k for k, v in refused.items() if v == "ENOENT"} <= {
        "write through the hard link", "create tools/evil/tool.wasm", "create tools/evil/capabilities.json",
        "create tools/weather/tool.wasm"}
    assert {k: out[k] for k in JAIL_KEEPS} == dict.fromkeys(JAIL_KEEPS, "ok"), out
    assert llm == LLM.decode(), "the jail still reads settings/llm.toml"
    assert listener.connections == [], "the host's loopback listener was reached"
    after = snapshot(mnt)
    after.pop("channels/mail/inbox/1", None)
    assert after == before, "a refused attempt changed something"
    assert (mnt / "memory/note.md").read_bytes() == b"remembered\n"
    audit = [json.loads(line) for line in (mnt / ".clawfs/audit/files.jsonl").read_text().splitlines()]
    assert {r["uid"] for r in audit} == {AGENT_UID}
    assert {"truncate", "unlink", "rename", "create", "open for writing", "link"} <= {r["op"] for r in audit}

    # the proposal is listed, with what it would add, and is not a tool yet
    status = clawfs("status", str(mnt), "--json")
    assert status.returncode == 0, status.stderr
    s = json.loads(status.stdout)
    assert set(s["jail"]) == {"userns", "seccomp", "landlock", "cgroups"} and "index_off" in s
    pending = {p["name"]: p for p in s["proposals"]}
    assert set(pending) == {"weather", "network.toml"}
    assert pending["weather"]["valid"] and pending["weather"]["change"] == "new"
    assert pending["weather"]["diff"]["hosts"]["added"] == ["api.weather.test"]
    assert pending["network.toml"]["diff"]["hosts"] == {"added": ["api.weather.test"], "removed": []}
    human = clawfs("status", str(mnt))
    assert human.returncode == 0 and f"clawfs tool approve {mnt} weather" in human.stdout, human.stdout
    assert not (mnt / "tools/weather").exists()
    run = clawfs("tool", "run", str(mnt), "weather", "--params", '{"text": "hi"}')
    assert run.returncode == 1 and "no tool 'weather'" in run.stderr

    # the owner approves: installed, runs; the proposal is gone; the installed echo runs unchanged
    approve = clawfs("tool", "approve", str(mnt), "weather", "--yes", "--json")
    assert approve.returncode == 0, approve.stderr
    assert json.loads(approve.stdout)["proposal_removed"] is True
    run = clawfs("tool", "run", str(mnt), "weather", "--params", '{"text": "hi"}')
    assert run.returncode == 0 and json.loads(run.stdout) == {"text": "hi"}, run.stderr
    assert json.loads((mnt / "tools/weather/capabilities.json").read_text()) == WEATHER_CAPS
    echo = clawfs("tool", "run", str(mnt), "echo", "--params", '{"text": "still"}')
    assert echo.returncode == 0 and json.loads(echo.stdout) == {"text": "still"}, echo.stderr
    assert not (mnt / "settings/network.toml").exists()
    assert clawfs("policy", "approve", str(mnt), "--yes").returncode == 0
    assert (mnt / "settings/network.toml").read_text() == '[[allow]]\nhost = "api.weather.test"\n'
    s = json.loads(clawfs("status", str(mnt), "--json").stdout)
    assert s["proposals"] == []

    # the approved tool is now the owner's: the agent cannot change it either
    out = in_jail(mnt, "import errno, json, os\nout = {}\ntry:\n"
                       "    os.open('/agent/tools/weather/tool.wasm', os.O_WRONLY)\n    out['w'] = 'ok'\n"
                       "except OSError as e:\n    out['w'] = errno.errorcode[e.errno]\nprint(json.dumps(out))")
    assert out == {"w": "EACCES"}


def test_approval_is_the_owners(agent_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to approve, an invalid proposal, and a caller who is not the mount's owner: refused, nothing
    installed."""
    mnt = agent_home
    p = clawfs("tool", "approve", str(mnt), "weather", "--yes")
    assert p.returncode == 1 and "nothing to approve" in p.stderr
    out = in_jail(mnt, "import json, os\nos.makedirs('/agent/proposals/tools/bad')\n"
                       "open('/agent/proposals/tools/bad/tool.wasm', 'w').write('(component)')\n"
                       "open('/agent/proposals/tools/bad/capabilities.json', 'w').write('{\"htp\": 1}')\n"
                       "print(json.dumps({}))")
    assert out == {}
    p = clawfs("tool", "approve", str(mnt), "bad", "--yes")
    assert p.returncode == 1 and "invalid" in p.stderr and "htp" in p.stderr
    s = json.loads(clawfs("status", str(mnt), "--json").stdout)
    assert [(x["name"], x["valid"]) for x in s["proposals"]] == [("bad", False)]
    assert policy_cli.mount_owner(mnt) == os.geteuid() == 0, "the mount's owner, from FUSE's user_id"
    monkeypatch.setattr(os, "geteuid", lambda: 65534)  # any other caller (policy_cli asks os.geteuid)
    with pytest.raises(UserError, match="run this as uid 0"):
        policy_cli.as_owner(mnt)
    assert not (mnt / "tools/bad").exists()
