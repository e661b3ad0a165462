"""Each WASM tool in a jail of its own (sandbox/toolworker.py, mountd/toolbroker.py), end to end on a real
`-o agent_uid` mount whose daemon serves every jail's proxy:

- `clawfs agent run` with the scripted LLM asking for a tool call: the tool runs in its own jailed worker, its
  HTTP goes through the daemon's proxy under the tool's lease, the credential from secrets/ is injected there (the
  upstream records it) and redacted from what the tool, the runtime and the LLM see;
- a tool refused a host that only another tool's capabilities allow (and that tool allowed it), in the audit;
- from inside the runtime's jail, the worker is reachable only through the broker: the runtime's own proxy
  socket gives the runtime's list whatever it claims, no worker process or socket is visible, a bad name is refused;
- a worker that dies mid-call is a typed tool error, and the next call starts a new one.

The upstream is a loopback HTTPS server (trustme) named api.allowed.test / other.allowed.test: the daemon is
started by tests/egress_daemon.py, which lets its egress resolve those names to 127.0.0.1 and trust the test CA.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import CLAWFS, StoreFixture, make_store, run
from llm_server import ScriptedLLM, calls
from waiting import wait_for
from wasm.support import ALLOWED, Server, http_caps, install, serve, wat

from agent import maildir
from kernel import jailcheck
from mountd import toolbroker
from mountd.jail_cli import run_jailed
from mountd.toolbroker import Broker
from sandbox import jail
from sandbox.errors import ToolError
from sandbox.toolworker import BROKER_ENV, BrokerClient

pytestmark = [pytest.mark.jail, pytest.mark.fuse,
              pytest.mark.skipif(os.geteuid() != 0, reason="building a jail's root needs root (CI runs as root)"),
              pytest.mark.skipif(not all(layer.ok for layer in jailcheck.layers()),
                                 reason="this host lacks a jail layer: see `kernel.jailcheck.layers()`")]

OTHER = "other.allowed.test"
VALUE = "tok-" + "v" * 28 + "-0123456789"
AGENT_UID = f"allow_other,agent_uid={jail.JAIL_UID},agent_gid={jail.JAIL_UID}"


@dataclass
class Setup:
    store: StoreFixture
    mnt: Path
    srv: Server
    llm: ScriptedLLM

    def url(self, path: str, host: str = ALLOWED) -> str:
        return f"https://{host}:{self.srv.port}{path}"

    def audit(self) -> list[dict[str, Any]]:
        text = (self.mnt / ".clawfs" / "audit" / "network.jsonl").read_text()
        return [json.loads(x) for x in text.splitlines()]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with serve(names=(ALLOWED, OTHER)) as srv:
        assert srv.ca is not None
        config = tmp_path / "egress.json"
        config.write_text(json.dumps({"hosts": {ALLOWED: "127.0.0.1", OTHER: "127.0.0.1"},
                                      "ca_pem": srv.ca.cert_pem.bytes().decode()}))
        store = make_store(tmp_path, "agent.claw", "--agent-home")
        run("reindex", str(store.path), *store.key_args(), "--embedder", "hashing-384")
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        opts = ",".join([f"passphrase_file={store.passfile}", f"log_file={tmp_path / 'mount.log'}", AGENT_UID])
        p = subprocess.run([sys.executable, str(Path(__file__).parent / "egress_daemon.py"), str(config), "mount",
                            str(store.path), str(mnt), "-o", opts], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        llm = ScriptedLLM().start()
        try:
            (mnt / "settings" / "llm.toml").write_text(
                f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "scripted"\ntimeout_seconds = 30\nretries = 1\n')
            (mnt / "settings" / "agent.toml").write_text("[agent]\npoll_seconds = 0.05\nheartbeat_minutes = 0\n")
            (mnt / "secrets" / "tok").write_text(VALUE + "\n")
            bearer = {"k": {"secret_name": "tok", "location": {"type": "bearer"}, "host_patterns": [ALLOWED]}}
            install(mnt, "fetch", wat("fetch"), http_caps(srv.port, credentials=bearer))
            other = http_caps(srv.port)
            other["http"]["allowlist"][0]["host"] = OTHER  # type: ignore[index]
            install(mnt, "fetchother", wat("fetch"), other)
            install(mnt, "echo", wat("echo"))  # no capabilities.json: no capability at all, still runs
            yield Setup(store, mnt, srv, llm)
        finally:
            llm.stop()
            store.umount(mnt)


def send(s: Setup, text: str, thread: str) -> str:
    msg = maildir.make_message(text, sender="ada@example.test", thread=thread)
    maildir.deliver(s.mnt / "channels" / "local" / "inbox", msg.as_bytes())
    return str(msg["Message-ID"])


def reply_to(s: Setup, msgid: str) -> str:
    outbox = s.mnt / "channels" / "local" / "outbox"
    wait_for(lambda: maildir.find_reply(outbox, msgid) is not None, timeout=120, what=f"the reply to {msgid}")
    path = maildir.find_reply(outbox, msgid)
    assert path is not None
    return maildir.body_text(path.read_bytes()).rstrip("\n")


def test_agent_run_calls_tools_in_their_own_jails_through_the_daemons_proxy(setup: Setup) -> None:
    s = setup
    err = s.store.tmp / "agent.stderr"
    with open(err, "ab") as f:
        agent = subprocess.Popen([CLAWFS, "agent", "run", str(s.mnt)], stdout=f, stderr=f, stdin=subprocess.DEVNULL)
    try:
        # 1. the credential injected by the daemon, the echo redacted before it reaches the tool
        s.llm.push(calls(("fetch", {"url": s.url("/api/echo")})))
        first = reply_to(s, send(s, "fetch the echo", "t1"))
        # 2. fetch may not reach the host only fetchother's list has; fetchother may
        s.llm.push(calls(("fetch", {"url": s.url("/api/ok", OTHER)})))
        second = reply_to(s, send(s, "fetch other", "t2"))
        s.llm.push(calls(("fetchother", {"url": s.url("/api/ok", OTHER)})))
        third = reply_to(s, send(s, "fetch other with the other tool", "t3"))
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=120) == 0, err.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    echoed = [x for x in s.srv.seen if str(x["path"]).startswith("/api/echo")]
    assert len(echoed) == 1 and echoed[0]["headers"]["Authorization"] == f"Bearer {VALUE}"  # type: ignore[index]
    assert first.startswith("Done: ") and "Bearer [REDACTED:tok]/api/echo" in first, first
    assert "Done: " in second and "is not in the tool's allowlist" in second, second
    assert third == 'Done: {"ok": true}', third
    assert [x["path"] for x in s.srv.seen] == ["/api/echo", "/api/ok"], "fetch's refused request never left"
    # the value is nowhere the runtime or the model saw
    assert VALUE not in json.dumps(s.llm.requests) + err.read_text()
    tool_messages = [m["content"] for r in s.llm.requests for m in r["messages"] if m.get("role") == "tool"]
    assert any("[REDACTED:tok]" in m for m in tool_messages)
    lines = s.audit()
    assert VALUE not in json.dumps(lines)
    by_tool = [(x["tool"], x["allowed"], x.get("target", "")) for x in lines if x["tool"] != "runtime"]
    assert by_tool == [("fetch", True, f"http://{ALLOWED}:{s.srv.port}/api/echo"),
                       ("fetch", False, f"http://{OTHER}:{s.srv.port}/api/ok"),
                       ("fetchother", True, f"http://{OTHER}:{s.srv.port}/api/ok")], by_tool
    refusal = next(x for x in lines if x["tool"] == "fetch" and not x["allowed"])
    assert refusal["status"] == 403 and "not in the tool's allowlist" in refusal["reason"]
    assert {x["tool"] for x in lines if x.get("target", "").startswith("http://127.0.0.1")} == {"runtime"}
    # every jail has ended with its holder: the runtime's and both workers'
    assert json.loads((s.mnt / ".clawfs" / "status").read_text())["proxy"]["jails"] == []


PROBE = """
import json, os, socket, sys
from sandbox.toolworker import BrokerClient
from sandbox.errors import ToolError
out = {}
client = BrokerClient.from_env()
out["via_broker"] = client.call("fetch", json.dumps({"url": URL + "/api/echo"})).output
for bad in ("../fetch", "nope"):
    try:
        client.call(bad, "{}")
        out[bad] = "ran"
    except ToolError as e:
        out[bad] = e.kind
# the runtime's own proxy socket, claiming to be the tool: the runtime's list (none) applies
s = socket.create_connection(("127.0.0.1", 3128))
target = URL.replace("https://", "http://") + "/api/echo"
s.sendall(f"GET {target} HTTP/1.1\\r\\nHost: x\\r\\nX-Tool: fetch\\r\\nProxy-Authorization: fetch\\r\\n\\r\\n".encode())
out["own_proxy"] = s.recv(4096).decode(errors="replace").split("\\r\\n")[0]
# no process but this jail's own; no socket of the worker's in this network namespace
cmds = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmds.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
    except OSError:
        pass
out["processes"] = cmds
out["unix"] = open("/proc/net/unix").read().splitlines()[1:]
out["tcp_listeners"] = [l.split()[1] for l in open("/proc/net/tcp").read().splitlines()[1:] if l.split()[3] == "0A"]
print(json.dumps(out))
"""


def test_the_runtime_reaches_a_worker_only_through_the_broker(setup: Setup) -> None:
    s = setup
    broker = Broker(str(s.mnt))
    broker.start()
    try:
        script = f"URL = {s.url('').rstrip('/')!r}\n" + PROBE
        out_path = s.store.tmp / "probe.out"
        with open(out_path, "wb") as f:
            fd = os.dup(1)
            os.dup2(f.fileno(), 1)  # the jailed command writes to this process's stdout
            try:
                outcome = run_jailed(str(s.mnt), ["python3", "-c", script],
                                     fds={BROKER_ENV: broker.runtime_end.fileno()})
            finally:
                os.dup2(fd, 1)
                os.close(fd)
        assert outcome.code == 0, out_path.read_text()
        out = json.loads(out_path.read_text().strip().splitlines()[-1])
        assert "Bearer [REDACTED:tok]/api/echo" in out["via_broker"]
        assert out["../fetch"] == "not-found" and out["nope"] == "not-found"
        assert out["own_proxy"].startswith("HTTP/1.1 403"), out["own_proxy"]
        assert out["processes"] and not any("-m sandbox.toolworker" in c for c in out["processes"])
        assert out["unix"] == [] and out["tcp_listeners"] == ["0100007F:0C38"], out  # only its own proxy port
        runtime_refusal = [x for x in s.audit() if x["tool"] == "runtime" and not x["allowed"]]
        assert runtime_refusal and runtime_refusal[0]["reason"] == "this tool has no HTTP capability"
        assert broker.status()["started"] == 1 and "fetch" in broker.status()["workers"]
        launcher = broker._workers["fetch"].jail.proc.pid
        assert os.getpgid(launcher) != os.getpgid(0), "a signal to the holder's group does not reach a worker"

        # a worker that dies mid-call: a typed error; the next call starts a new worker
        def call(path: str, call_id: int) -> dict[str, Any]:
            return broker.call({"id": call_id, "op": "call", "tool": "fetch",
                                "params": json.dumps({"url": s.url(path)})})

        answers: list[dict[str, Any]] = []
        slow = threading.Thread(target=lambda: answers.append(call("/api/slow", 7)))
        slow.start()
        wait_for(lambda: any(x["path"] == "/api/slow" for x in s.srv.seen), timeout=60, what="the slow call")
        worker = broker._workers["fetch"]
        worker.jail.kill()
        slow.join(timeout=60)
        assert answers and answers[0]["id"] == 7 and answers[0]["ok"] is False
        assert answers[0]["kind"] == "worker" and "died during the call" in answers[0]["reason"], answers
        again = call("/api/ok", 8)
        assert again == {**again, "id": 8, "ok": True, "output": '{"ok": true}'}, again
        assert broker.status()["started"] == 2 and broker.status()["died"] == 1
        echo = broker.call({"id": 9, "op": "call", "tool": "echo", "params": '{"text": "hi"}'})
        assert echo["ok"] is True and echo["output"] == '{"text": "hi"}', echo
        assert set(broker.status()["workers"]) == {"fetch", "echo"}
    finally:
        broker.close()
    wait_for(lambda: json.loads((s.mnt / ".clawfs" / "status").read_text())["proxy"]["jails"] == [], timeout=30,
             what="every worker's lease to end")


def test_a_workers_jail_reads_the_home_and_cannot_write_it(setup: Setup) -> None:
    """The broker's workers get /agent read-only (JailConfig.agent_readonly): a worker reads its tool, and one
    broken out of wasmtime still could not change the home."""
    script = ("import errno, sys\nassert open('/agent/tools/fetch/tool.wasm', 'rb').read(9) == b';; fetch:'\n"
              "try:\n    open('/agent/notes-from-a-worker', 'w')\nexcept OSError as e:\n    sys.exit(e.errno)\n"
              "sys.exit(0)")
    cfg = jail.JailConfig(mount=str(setup.mnt), agent_readonly=True)
    assert jail.run(cfg, ["python3", "-c", script], timeout=120) == errno.EROFS
    assert not (setup.mnt / "notes-from-a-worker").exists()
    writable = jail.JailConfig(mount=str(setup.mnt))
    assert jail.run(writable, ["python3", "-c", script], timeout=120) == 0, "the runtime's jail may write"
    assert (setup.mnt / "notes-from-a-worker").exists()



def test_a_tools_lease_does_not_reach_the_llm_endpoint(setup: Setup) -> None:
    """The LLM endpoint of settings/llm.toml is on the runtime's list, not on a tool's: a jail leased as a tool
    (a worker's, or `jail exec --tool`) is refused it, the runtime's own jail is not."""
    url = setup.llm.base_url + "/chat/completions"
    script = ("import urllib.request as u, urllib.error as e\n"
              f"r = u.Request({url!r}, data=b'{{}}', headers={{'Content-Type': 'application/json'}})\n"
              "try:\n    print(u.urlopen(r, timeout=30).status)\nexcept e.HTTPError as x:\n    print(x.code)\n")

    def status(tool: str | None) -> str:
        p = subprocess.run([sys.executable, "-m", "mountd.cli", "jail", "exec", str(setup.mnt),
                            *(["--tool", tool] if tool else []), "--", "python3", "-c", script],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    assert status(None) == "200"  # reached (the scripted LLM answers even an empty request)
    assert status("fetch") == "403"
    refused = [x for x in setup.audit() if x["tool"] == "fetch"]
    assert refused and not refused[0]["allowed"], refused


def test_tool_invoke_runs_the_target_in_its_own_worker(setup: Setup) -> None:
    """A tool-invoke from a worker comes back to the broker: the alias checked against the caller's own
    capabilities, the target run in its own worker (under its own lease), a cycle refused, depth bounded."""
    s = setup
    install(s.mnt, "inv", wat("invoke"), {"tool_invoke": {"aliases": {"e": "echo", "x": "inv2", "self": "inv",
                                                                      "bad": "nope"}}})
    install(s.mnt, "inv2", wat("invoke"), {"tool_invoke": {"aliases": {"x": "inv"}}})
    broker = Broker(str(s.mnt))
    try:
        def call(tool: str, params: str) -> dict[str, Any]:
            return broker.call({"id": 1, "op": "call", "tool": tool, "params": params})

        out = call("inv", '"e"')
        assert out["ok"] is True and out["output"] == '"e"' and out["logs"] == [["info", "after"]], out
        assert set(broker.status()["workers"]) == {"inv", "echo"}, "echo ran in a worker of its own"
        cycle = call("inv", '"x"')  # inv -> inv2 -> inv: inv's worker is busy with the outer call
        assert "busy with it" in json.dumps(cycle), cycle
        deep = call("inv", '"self"')  # nested in inv's own worker, as in process
        assert "nested more than 3 deep" in json.dumps(deep), deep
        missing = call("inv", '"bad"')
        assert "no tool 'nope'" in json.dumps(missing), missing
    finally:
        broker.close()


def test_the_broker_bounds_the_calls_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_IN_FLIGHT open calls, a call is answered at once with kind `worker` (no thread, no worker)."""
    monkeypatch.setattr(toolbroker, "MAX_IN_FLIGHT", 2)
    broker = Broker(str(tmp_path))
    release = threading.Event()

    def blocked(frame: dict[str, Any]) -> dict[str, Any]:
        release.wait(30)
        return {"id": frame["id"], "ok": True, "output": "done", "logs": []}

    monkeypatch.setattr(broker, "call", blocked)
    broker.start()
    client = BrokerClient(broker.runtime_end)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(client.call("echo", "{}").output)) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: broker._slots._value == 0, timeout=30, what="two calls in flight")  # type: ignore[attr-defined]
        with pytest.raises(ToolError, match="more than 2 tool calls in flight") as e:
            client.call("echo", "{}")
        assert e.value.kind == "worker"
    finally:
        release.set()
        for t in threads:
            t.join(30)
        broker.close()
    assert results == ["done", "done"]
