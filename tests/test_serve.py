"""`clawfs serve` (mountd/serve.py) and its parts sd_notify (mountd/notify.py) and the systemd credentials: unit
tests on real AF_UNIX sockets, then end to end on real mounts with the scripted LLM server: READY after the
first liveness ping, a chat answered, a webhook delivered, a killed runtime restarted (the message answered
once), SIGTERM a clean stop (fsck clean), `clawfs umount` stopping it all, a stale mount recovered, and bad
input (the store locked, a runtime that cannot start, a webhook address in use)."""

from __future__ import annotations

import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from agent_home import agent_toml, llm_toml
from faults import clawfs, process_gone
from helpers import CLAWFS, StoreFixture, is_mounted, make_store, run
from llm_server import ScriptedLLM
from waiting import wait_for

from agent import maildir
from mountd import serve as serve_mod
from mountd.notify import Notifier
from mountd.options import MountOptions

TIMEOUT = 60.0


# -- sd_notify on a real datagram socket ------------------------------------------------------------------------
@contextmanager
def notify_socket(abstract: bool, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"clawfs-test-{os.getpid()}-{id(s)}"
        s.bind(b"\0" + name.encode())
        env_name = "@" + name
    else:
        env_name = str(tmp_path / "notify")
        s.bind(env_name)
    s.settimeout(10)
    try:
        yield s, env_name
    finally:
        s.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_ready_status_watchdog_stopping(tmp_path: Path, abstract: bool) -> None:
    with notify_socket(abstract, tmp_path) as (sock, name):
        n = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "8000000"})
        assert n.enabled and n.watchdog_interval == 4.0
        assert n.ready("mounted\nsomewhere")
        assert sock.recv(4096) == b"READY=1\nSTATUS=mounted somewhere"
        assert n.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
        assert n.stopping() and sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_notify_without_a_manager_does_nothing() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready("x") is False and n.watchdog() is False


def test_watchdog_meant_for_another_pid_is_not_ours() -> None:
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 0.5
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_a_gone_manager_is_logged_not_fatal(tmp_path: Path) -> None:
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).ready("x") is False


def test_systemd_credentials_fill_only_missing_keys(tmp_path: Path) -> None:
    (tmp_path / "passphrase").write_text("pw\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    mo = MountOptions()
    assert serve_mod.systemd_credentials(mo, env) == ["passphrase"]
    assert mo.passphrase_file == str(tmp_path / "passphrase")
    given = MountOptions(keyfile="/k")
    assert serve_mod.systemd_credentials(given, env) == [] and given.passphrase_file is None
    assert serve_mod.systemd_credentials(MountOptions(), {}) == []


# -- end to end ---------------------------------------------------------------------------------------------------
HOOK_TOML = ('type = "webhook"\nlisten = "127.0.0.1:{port}"\n[webhook]\nsecret_name = "hook_token"\n'
             '[rate_limit]\nrequests_per_minute = 1000\n')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A store served by `clawfs serve --foreground` under a notify socket of the test's."""

    def __init__(self, store: StoreFixture, mnt: Path, llm: ScriptedLLM, port: int) -> None:
        self.store, self.mnt, self.llm, self.port = store, mnt, llm, port
        self.proc: subprocess.Popen[str] | None = None
        self.sock: socket.socket | None = None
        self.messages: list[str] = []

    def args(self, *extra: str) -> list[str]:
        return [CLAWFS, "serve", str(self.store.path), str(self.mnt), "-o",
                f"passphrase_file={self.store.passfile},log_file={self.store.tmp / 'serve.log'}", *extra]

    def start(self, *extra: str, env_extra: dict[str, str] | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = str(self.store.tmp / f"notify-{len(self.messages)}")
        self.sock.bind(path)
        self.sock.settimeout(TIMEOUT)
        env = {k: v for k, v in os.environ.items() if k != "CLAWFS_PASSPHRASE_FILE"}
        env["NOTIFY_SOCKET"] = path
        env.update(env_extra or {})
        self.err = open(self.store.tmp / "serve.stderr", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args("--foreground", *extra), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err, text=True, env=env)

    def wait_ready(self) -> str:
        assert self.sock is not None
        while True:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                raise AssertionError(f"no READY=1 within {TIMEOUT} s:\n{self.stderr()}") from None
            self.messages.append(msg)
            if "READY=1" in msg:
                return msg

    def stderr(self) -> str:
        p = self.store.tmp / "serve.stderr"
        return p.read_text()[-4000:] if p.exists() else ""

    def status(self) -> dict[str, Any]:
        state = serve_mod.read_state(str(self.mnt))
        assert state is not None, self.stderr()
        return state

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(TIMEOUT)
        self.err.close()
        if self.sock is not None:
            self.sock.setblocking(False)
            while True:  # what the daemon told the manager after READY, for the test to look at
                try:
                    self.messages.append(self.sock.recv(4096).decode())
                except BlockingIOError:
                    break
            self.sock.close()
        return code

    def post(self, body: bytes, token: str = "s3cret") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/", body=body, headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def send(self, text: str, thread: str = "t1") -> str:
        msg = maildir.make_message(text, sender="ada@example.test", thread=thread)
        maildir.deliver(self.mnt / "channels" / "local" / "inbox", msg.as_bytes())
        return str(msg["Message-ID"])

    def reply_to(self, msgid: str) -> str:
        outbox = self.mnt / "channels" / "local" / "outbox"
        path = wait_for(lambda: maildir.find_reply(outbox, msgid), timeout=TIMEOUT, what=f"the reply to {msgid}",
                        detail=self.stderr)
        return maildir.body_text(path.read_bytes()).rstrip("\n")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """An agent home with settings for the scripted LLM, a webhook channel and its secret, unmounted."""
    store = make_store(tmp_path, "agent.claw", "--agent-home")
    mnt = tmp_path / "mnt"
    llm = ScriptedLLM().start()
    port = free_port()
    store.mount(mnt)
    try:
        (mnt / "settings" / "llm.toml").write_text(llm_toml(llm.base_url))
        (mnt / "settings" / "agent.toml").write_text(agent_toml())
        (mnt / "channels" / "hook" / "inbox").mkdir(parents=True)
        for box in ("inbox", "outbox"):
            for sub in ("tmp", "new", "cur"):
                (mnt / "channels" / "hook" / box / sub).mkdir(parents=True, exist_ok=True)
        (mnt / "channels" / "hook" / "channel.toml").write_text(HOOK_TOML.format(port=port))
        (mnt / "secrets" / "hook_token").write_text("s3cret\n")
    finally:
        store.umount(mnt)
    s = Served(store, mnt, llm, port)
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.stop(signal.SIGKILL)
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        llm.stop()


@pytest.mark.fuse
def test_serve_ready_chat_webhook_restart_and_clean_stop(served: Served) -> None:
    served.start("--runtime", "host", "--ping-timeout", "20")
    ready = served.wait_ready()
    assert f"mounted {served.store.path}" in ready and "runtime running" in ready
    st = served.status()
    rt = st["runtime"]
    assert rt["state"] == "running" and rt["restarts"] == 0 and rt["uid"] == os.getuid()
    assert os.path.exists(f"/proc/{rt['pid']}")
    ctl = json.loads((served.mnt / ".clawfs" / "status").read_text())  # the same runtime, read through the mount
    assert ctl["runtime"]["pid"] == rt["pid"] and ctl["runtime"]["state"] == "running", ctl.get("runtime")
    assert "proxy" in ctl and "files" in ctl, sorted(ctl)
    # a chat through channels/local
    msgid = served.send("hello there")
    assert served.reply_to(msgid) == "You said: hello there"
    # a webhook, delivered and answered like any message
    status, body = served.post(b"the build is green")
    assert status == 202, body
    hook_id = json.loads(body)["message_id"]
    assert served.post(b"forged", token="nope")[0] == 401
    outbox = served.mnt / "channels" / "hook" / "outbox"
    reply = wait_for(lambda: maildir.find_reply(outbox, hook_id), timeout=TIMEOUT, what="the webhook's reply")
    assert "the build is green" in maildir.body_text(reply.read_bytes())
    # kill -9 of the runtime: restarted; a message sent meanwhile answered once
    os.kill(rt["pid"], signal.SIGKILL)
    msgid2 = served.send("after the crash")
    st2 = wait_for(served.status, timeout=TIMEOUT, what="the runtime restarted",
                   until=lambda s: s["runtime"]["restarts"] == 1 and s["runtime"]["state"] == "running")
    assert st2["runtime"]["last_error"] == "killed by SIGKILL"
    assert served.reply_to(msgid2) == "You said: after the crash"
    replies = [n for sub in ("new", "cur") for n in os.listdir(served.mnt / "channels/local/outbox" / sub)]
    assert len(replies) == 2
    # SIGTERM: clean stop, exit 0, unmounted, fsck clean
    runtime_pid = st2["runtime"]["pid"]
    assert served.stop() == 0, served.stderr()
    assert not is_mounted(served.mnt)
    assert process_gone(runtime_pid)
    assert any(m.startswith("STOPPING=1") for m in served.messages), served.messages
    log = served.stderr()
    # the runtime finished and exited on its SIGTERM while its home was still mounted, and only then the unmount
    assert "did not stop within" not in log
    assert 0 <= log.index("agent runtime stopped after") < log.index("clawfs.mountd: unmounted"), log
    served.store.assert_clean()
    assert serve_mod.read_state(str(served.mnt)) is None


@pytest.mark.fuse
@pytest.mark.jail
@pytest.mark.skipif(os.geteuid() != 0, reason="the jail is built by root")
def test_the_jailed_runtime_pings_through_the_jail_and_is_restarted(served: Served) -> None:
    """The default runtime: `clawfs agent run` in the jail as the mount's agent uid, its liveness socket passed
    through the jail; pid and uid in the status are the host's."""
    served.start("-o", "allow_other,agent_uid=64010")
    served.wait_ready()
    rt = served.status()["runtime"]
    assert rt["state"] == "running" and rt["uid"] == 64010
    with open(f"/proc/{rt['pid']}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    assert fields["Uid"].split()[0] == "64010"
    assert len(fields["NSpid"].split()) == 2  # the host's pid, and its own in the jail's pid namespace
    msgid = served.send("hello from outside")
    assert served.reply_to(msgid) == "You said: hello from outside"
    os.kill(rt["pid"], signal.SIGKILL)
    st = wait_for(served.status, timeout=TIMEOUT, what="the jailed runtime restarted",
                  until=lambda s: s["runtime"]["restarts"] == 1 and s["runtime"]["state"] == "running")
    assert st["runtime"]["last_error"] == "killed by SIGKILL (exit status 137)"
    assert st["runtime"]["pid"] != rt["pid"] and st["runtime"]["uid"] == 64010
    msgid2 = served.send("and again")
    assert served.reply_to(msgid2) == "You said: and again"
    assert served.stop() == 0, served.stderr()
    assert not is_mounted(served.mnt) and process_gone(st["runtime"]["pid"])
    served.store.assert_clean()


@pytest.mark.fuse
def test_sigterm_mid_turn_lets_the_turn_finish_before_the_unmount(served: Served) -> None:
    from llm_server import rules

    in_turn = threading.Event()
    release = threading.Event()

    def slow(body: dict[str, Any]) -> Any:
        in_turn.set()
        release.wait(TIMEOUT)  # the model is still thinking when SIGTERM arrives
        return rules(body)

    served.llm.script = slow
    served.start("--runtime", "host")
    served.wait_ready()
    msgid = served.send("answer me slowly")
    assert in_turn.wait(TIMEOUT), served.stderr()
    assert served.proc is not None
    served.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "STOPPING=1" in _drain(served), timeout=TIMEOUT, what="STOPPING=1")
    assert served.post(b"too late")[0] == 503  # intake is closed while the turn finishes
    assert is_mounted(served.mnt)  # the home stays while the runtime works in it
    served.proc.send_signal(signal.SIGTERM)  # a second one changes nothing
    release.set()
    assert served.stop() == 0, served.stderr()
    assert not is_mounted(served.mnt)
    served.store.assert_clean()
    served.store.mount(served.mnt)
    try:
        outbox = served.mnt / "channels" / "local" / "outbox"
        reply = maildir.find_reply(outbox, msgid)
        assert reply is not None and "answer me slowly" in maildir.body_text(reply.read_bytes())
        [cur] = list((served.mnt / "channels" / "local" / "inbox" / "cur").iterdir())
        assert maildir.flags(cur.name) == "RS"
        assert list((served.mnt / "channels" / "hook" / "inbox" / "new").iterdir()) == []
    finally:
        served.store.umount(served.mnt)


def _drain(served: Served) -> str:
    """What the daemon has told the manager since the last look (non-blocking)."""
    assert served.sock is not None
    served.sock.setblocking(False)
    try:
        while True:
            served.messages.append(served.sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        served.sock.setblocking(True)
        served.sock.settimeout(TIMEOUT)
    return "\n".join(served.messages)


@pytest.mark.fuse
def test_a_daemon_killed_mid_turn_leaves_the_message_to_the_next_serve(served: Served) -> None:
    from llm_server import rules

    in_turn = threading.Event()
    stuck = threading.Event()

    def first_stuck(body: dict[str, Any]) -> Any:
        if not stuck.is_set():
            stuck.set()
            in_turn.set()
            threading.Event().wait(TIMEOUT)  # this answer never reaches its runtime: the daemon is killed
        return rules(body)

    served.llm.script = first_stuck
    served.start("--runtime", "host")
    served.wait_ready()
    msgid = served.send("are you still there")
    assert in_turn.wait(TIMEOUT), served.stderr()
    served.stop(signal.SIGKILL)
    served.start("--runtime", "host")  # recovers the dead mount, and the runtime redelivers the claimed message
    served.wait_ready()
    assert served.reply_to(msgid) == "You said: are you still there"
    assert "lazily unmounted" in served.stderr()
    assert served.stop() == 0
    served.store.assert_clean()


@pytest.mark.fuse
def test_watchdog_pings_at_half_the_interval(served: Served) -> None:
    served.start("--no-agent", env_extra={"WATCHDOG_USEC": "1000000"})
    served.wait_ready()
    wait_for(lambda: "WATCHDOG=1" in _drain(served), timeout=TIMEOUT, what="WATCHDOG=1")
    assert served.stop() == 0


@pytest.mark.fuse
def test_background_serve_no_agent_and_umount_stops_it(served: Served) -> None:
    proc = clawfs(*served.args("--no-agent")[1:])
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(served.mnt)
    st = served.status()
    assert st["runtime"] == {"state": "off"} and st["state"] == "ready"
    assert st["webhooks"]["hook"]["listen"] == f"127.0.0.1:{served.port}"
    assert served.post(b"ping")[0] == 202
    assert len(os.listdir(served.mnt / "channels/hook/inbox/new")) == 1
    pid = st["pid"]
    run("umount", str(served.mnt))
    assert not is_mounted(served.mnt) and process_gone(pid)
    served.store.assert_clean()


@pytest.mark.fuse
def test_a_stale_mount_of_a_killed_daemon_is_recovered(served: Served) -> None:
    served.start("--runtime", "host")
    served.wait_ready()
    runtime = served.status()["runtime"]["pid"]
    served.stop(signal.SIGKILL)
    wait_for(lambda: process_gone(runtime), timeout=TIMEOUT, what="the runtime to die with its daemon")
    assert is_mounted(served.mnt)  # dead: the transport endpoint is not connected
    with pytest.raises(OSError) as dead:
        os.listdir(served.mnt)
    assert dead.value.errno == errno.ENOTCONN
    proc = clawfs(*served.args("--no-agent")[1:])
    assert proc.returncode == 0, proc.stderr
    log = (served.store.tmp / "serve.log").read_text()
    assert "stale mount" in log or "lazily unmounted" in proc.stderr + log
    assert served.post(b"again")[0] == 202
    run("umount", str(served.mnt))
    served.store.assert_clean()


@pytest.mark.fuse
def test_the_store_locked_by_another_mount_is_refused(served: Served, tmp_path: Path) -> None:
    other = tmp_path / "other"
    served.store.mount(other)
    try:
        proc = clawfs(*served.args("--no-agent")[1:])
    finally:
        served.store.umount(other)
    assert proc.returncode == 1 and "clawfs:" in proc.stderr
    assert not is_mounted(served.mnt)


@pytest.mark.fuse
def test_a_mountpoint_in_use_is_refused(served: Served, tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    other = make_store(tmp_path / "o", "other.claw")
    other.mount(served.mnt)
    try:
        proc = clawfs(*served.args("--no-agent")[1:])
        assert proc.returncode == 1 and "already a mount point" in proc.stderr
        assert (served.mnt / ".clawfs" / "status").exists()  # the live mount there is left alone
    finally:
        other.umount(served.mnt)


@pytest.mark.fuse
def test_a_webhook_address_in_use_fails_the_start(served: Served) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", served.port))
        squatter.listen()
        proc = clawfs(*served.args("--no-agent")[1:])
    assert proc.returncode == 1
    assert "webhooks: cannot listen" in proc.stderr
    wait_for(lambda: not is_mounted(served.mnt), timeout=TIMEOUT, what="the mount to end")
    served.store.assert_clean()


@pytest.mark.fuse
@pytest.mark.slow
def test_a_runtime_that_cannot_start_leaves_the_mount_up_and_says_why(served: Served) -> None:
    served.store.mount(served.mnt)
    try:
        (served.mnt / "settings" / "llm.toml").write_text("[llm\n")
    finally:
        served.store.umount(served.mnt)
    proc = clawfs(*served.args("--runtime", "host")[1:])  # 5 quick failures: 1 + 2 + 4 + 8 s of backoff
    assert proc.returncode == 0, proc.stderr
    assert "agent runtime is down" in proc.stderr and "not valid TOML" in proc.stderr
    st = served.status()
    assert st["runtime"]["state"] == "failed" and st["runtime"]["restarts"] == 4
    assert (served.mnt / "AGENTS.md").read_text()  # the mount stays up and readable
    run("umount", str(served.mnt))
    served.store.assert_clean()
