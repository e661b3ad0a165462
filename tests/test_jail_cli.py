"""`clawfs jail exec` end to end on a real mount whose daemon serves the jail's proxy: CMD's exit status as its own,
a name no list allows refused, the LLM endpoint of settings/llm.toml allowed on loopback and moved live by an
owner's edit, the LLM key swapped in at the daemon (the jail holds a placeholder, the answer comes back
redacted), every request in `.clawfs/audit/network.jsonl` (the owner's, not the jail's), `.clawfs/status`'s
`proxy`, the control socket the owner's alone, a jail killed when its holder dies, clear errors."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import StoreFixture, is_mounted
from waiting import wait_for

from kernel import jailcheck
from mountd import control_socket
from sandbox import jail

pytestmark = [pytest.mark.jail, pytest.mark.fuse,
              pytest.mark.skipif(os.geteuid() != 0, reason="building a jail's root needs root (CI runs as root)"),
              pytest.mark.skipif(not all(layer.ok for layer in jailcheck.layers()),
                                 reason="this host lacks a jail layer: see `kernel.jailcheck.layers()`")]

KEY = "sk-live-" + "q" * 32


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers with what it got: the path and the Authorization header (an endpoint that echoes the key)."""

    seen: list[dict[str, str | None]]

    def do_GET(self) -> None:
        got = {"path": self.path, "auth": self.headers.get("Authorization")}
        self.seen.append(got)
        body = json.dumps(got).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Server:
    port: int
    seen: list[dict[str, str | None]]


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    out, srvs = [], []
    for _ in range(2):
        seen: list[dict[str, str | None]] = []
        handler = type("Handler", (Echo,), {"seen": seen})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        srvs.append(srv)
        out.append(Server(srv.server_address[1], seen))
    yield out
    for srv in srvs:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def mnt(store: StoreFixture, servers: list[Server]) -> Iterator[Path]:
    m = store.tmp / "mnt"
    store.mount(m, f"allow_other,agent_uid={jail.JAIL_UID},agent_gid={jail.JAIL_UID}")
    try:
        (m / "settings").mkdir(exist_ok=True)
        llm_toml(m, servers[0].port)
        (m / "notes").mkdir()
        yield m
    finally:
        if is_mounted(m):
            store.umount(m)
    store.assert_clean()


def llm_toml(m: Path, port: int, secret: str | None = None) -> None:
    extra = f'api_key_secret = "{secret}"\n' if secret else ""
    (m / "settings" / "llm.toml").write_text(f'[llm]\nbase_url = "http://127.0.0.1:{port}/v1"\n{extra}')


def clawfs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountd.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def audit(m: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (m / ".clawfs" / "audit" / "network.jsonl").read_text().splitlines()]


GET = ("import json, sys, urllib.request as u, urllib.error as e\n"
       "def get(url, **headers):\n"
       "    try:\n"
       "        return u.urlopen(u.Request(url, headers=headers), timeout=30).read().decode()\n"
       "    except e.HTTPError as x:\n"
       "        return str(x.code)\n")


def test_exec_runs_the_command_with_the_daemons_proxy(mnt: Path, servers: list[Server]) -> None:
    port = servers[0].port
    script = GET + (f"print(get('http://127.0.0.1:{port}/v1/models'))\n"
                    "print(get('http://api.example.invalid/'))\n"
                    "import subprocess\n"
                    f"print(subprocess.run(['curl', '-s', 'http://127.0.0.1:{port}/v1/curl'], capture_output=True,"
                    " text=True).stdout)\n"
                    "try:\n    open('/agent/.clawfs/audit/network.jsonl').read(); print('read')\n"
                    "except OSError as x:\n    print(x.errno)\n"
                    "raise SystemExit(9)")
    p = clawfs("jail", "exec", str(mnt), "--json", "--", "python3", "-c", script)
    assert p.returncode == 9, p.stderr
    first, second, by_curl, audit_read = p.stdout.split("\n")[:4]
    assert json.loads(first)["path"] == "/v1/models"
    assert second == "403"
    assert json.loads(by_curl)["path"] == "/v1/curl", "curl uses the jail's http_proxy as it is"
    assert audit_read == "13", "the jail may not read the network audit (EACCES)"
    figures = json.loads(p.stderr.strip().splitlines()[-1])
    assert figures["proxy"] == {"allowed": 2, "refused": 1}
    lines = audit(mnt)
    assert [(x["allowed"], x["tool"]) for x in lines] == [(True, "runtime"), (False, "runtime"), (True, "runtime")]
    assert lines[1]["reason"] == "this tool has no HTTP capability"  # no settings/network.toml: no list at all
    status = json.loads((mnt / ".clawfs" / "status").read_text())["proxy"]
    assert status["control_socket"] == control_socket.control_path(str(mnt))
    assert status["jails"] == [] and status["allowed"] == 2 and status["refused"] == 1


def test_the_llm_key_is_swapped_at_the_daemon_and_redacted_from_the_answer(mnt: Path, servers: list[Server]) -> None:
    srv = servers[0]
    (mnt / "secrets").mkdir(exist_ok=True)
    (mnt / "secrets" / "llm_key").write_text(KEY + "\n")
    (mnt / "secrets" / "other").write_text("other-secret-value-123456")
    llm_toml(mnt, srv.port, "llm_key")
    url = f"http://127.0.0.1:{srv.port}/v1/chat"
    script = GET + (f"print(get({url!r}, Authorization='Bearer clawfs-secret:llm_key'))\n"
                    f"print(get({url!r}, Authorization='Bearer clawfs-secret:other'))\n"
                    f"print(get({url!r} + '?k=' + {KEY!r}))\n"
                    "import os\n"
                    "for root, dirs, files in os.walk('/agent'):\n"
                    "    dirs[:] = [d for d in dirs if d != '.clawfs']\n"
                    "    for f in files:\n"
                    "        try:\n            sys.stdout.write(open(os.path.join(root, f), errors='replace').read())\n"
                    "        except OSError:\n            pass\n"
                    "print(open('/proc/self/environ').read())\n")
    p = clawfs("jail", "exec", str(mnt), "--", "python3", "-c", script)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    answer = json.loads(lines[0])
    assert answer["auth"] == "Bearer [REDACTED:llm_key]", "the echo is redacted before it enters the jail"
    assert srv.seen[0]["auth"] == f"Bearer {KEY}", "the LLM got the value"
    assert lines[1] == "403", "a placeholder of another secret is refused"
    assert lines[2] == "403", "the value itself may not leave (exact-value leak check)"
    assert len(srv.seen) == 1
    assert KEY not in p.stdout + p.stderr, "no secret value anywhere the jail can read"
    text = (mnt / ".clawfs" / "audit" / "network.jsonl").read_text()
    assert KEY not in text
    reasons = [x.get("reason") for x in audit(mnt)]
    assert "the Authorization placeholder is not settings/llm.toml's api_key_secret" in reasons
    assert any("leak detected" in str(r) for r in reasons)


def test_an_owners_edit_of_llm_toml_moves_the_endpoint_live(mnt: Path, servers: list[Server]) -> None:
    a, b = servers
    script = GET + (f"print(get('http://127.0.0.1:{a.port}/v1/one'), flush=True)\n"
                    "open('/agent/notes/step1', 'w').close()\n"
                    "import os, time\n"
                    "for _ in range(600):\n"
                    "    if os.path.exists('/agent/notes/go'):\n        break\n"
                    "    time.sleep(0.05)\n"
                    f"print(get('http://127.0.0.1:{a.port}/v1/two'))\n"
                    f"print(get('http://127.0.0.1:{b.port}/v1/three'))\n")
    proc = subprocess.Popen([sys.executable, "-m", "mountd.cli", "jail", "exec", str(mnt), "--", "python3", "-c",
                             script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (mnt / "notes" / "step1").exists(), timeout=60, what="the first request")
        llm_toml(mnt, b.port)  # the owner's edit: no remount, the same jail
        (mnt / "notes" / "go").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    one, two, three = out.splitlines()
    assert json.loads(one)["path"] == "/v1/one"
    assert two == "403", "the old endpoint is no longer allowed"
    assert json.loads(three)["path"] == "/v1/three"
    assert [s["path"] for s in a.seen] == ["/v1/one"] and [s["path"] for s in b.seen] == ["/v1/three"]


def test_the_control_socket_is_the_owners_alone(mnt: Path) -> None:
    path = control_socket.control_path(str(mnt))
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    code = (f"import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
            f"try:\n    s.connect({path!r}); print('connected')\nexcept OSError as e:\n    print(e.errno)")
    def as_third_uid(script: str) -> str:
        p = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True, text=True, timeout=30,
                           user=65534, group=65534, extra_groups=[], cwd="/")
        return p.stdout.strip() + p.stderr

    assert as_third_uid(code) == "13"
    # Modes loosened (by mistake, say): the daemon still answers only its own uid, by the kernel's SO_PEERCRED.
    os.chmod(os.path.dirname(path), 0o711)
    os.chmod(path, 0o666)
    try:
        ask = (f"import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\ns.connect({path!r})\n"
               "print(s.recv(4096).decode())")  # the daemon answers at once, before any request
        answer = json.loads(as_third_uid(ask))
    finally:
        os.chmod(path, 0o600)
        os.chmod(os.path.dirname(path), 0o700)
    assert answer == {"error": f"only uid {os.getuid()} (the mount's owner) may use this socket"}


def test_a_jail_whose_holder_dies_is_killed(mnt: Path) -> None:
    script = "import time\nopen('/agent/notes/alive', 'w').close()\ntime.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-m", "mountd.cli", "jail", "exec", str(mnt), "--", "python3", "-c",
                               script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (mnt / "notes" / "alive").exists(), timeout=60, what="the jail to start")
        status = json.loads((mnt / ".clawfs" / "status").read_text())["proxy"]
        assert [j["tool"] for j in status["jails"]] == ["runtime"]
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        wait_for(lambda: json.loads((mnt / ".clawfs" / "status").read_text())["proxy"]["jails"] == [], timeout=30,
                 what="the daemon to drop the jail")
        wait_for(lambda: not _jailed_sleepers(), timeout=30, what="the jail's processes to be gone")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _jailed_sleepers() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/status") as f:
                uid = next(int(x.split()[1]) for x in f if x.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if b"time.sleep(120)" in cmd and uid == jail.JAIL_UID:
            found.append(int(pid))
    return found


def test_unknown_tool_is_a_one_line_error(mnt: Path) -> None:
    p = clawfs("jail", "exec", str(mnt), "--tool", "nope", "--", "true")
    assert p.returncode == 1
    assert "no tool 'nope'" in p.stderr


def test_a_directory_without_a_daemon_is_a_clear_error(tmp_path: Path) -> None:
    p = clawfs("jail", "exec", str(tmp_path), "--", "true")
    assert p.returncode == 1
    assert "no ClawFS mount daemon answers" in p.stderr and "clawfs mount STORE" in p.stderr


def test_missing_command_is_usage(tmp_path: Path) -> None:
    assert clawfs("jail", "exec", str(tmp_path)).returncode == 2


def test_check_lists_every_layer() -> None:
    p = clawfs("jail", "check", "--json")
    assert p.returncode == 0, p.stderr
    layers = json.loads(p.stdout)
    assert set(layers) == {"userns", "seccomp", "landlock", "cgroups"}
    assert all(v["ok"] for v in layers.values())


def test_status_of_a_mount_reports_its_proxy(mnt: Path) -> None:
    """Before any jail: the control socket is up and nothing is counted yet."""
    status = json.loads((mnt / ".clawfs" / "status").read_text())["proxy"]
    assert status == {"control_socket": control_socket.control_path(str(mnt)), "jails": [], "allowed": 0,
                      "refused": 0}
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        assert s.connect_ex(status["control_socket"]) == 0


def test_the_jail_trusts_the_stores_ca_kept_across_mounts(store: StoreFixture, mnt: Path) -> None:
    """The daemon's store CA (kept in the store, never its key in the jail) is in the jail's trust bundle."""
    script = ("import os\nb = open(os.environ['SSL_CERT_FILE']).read()\n"
              "print(b[b.rindex('-----BEGIN CERTIFICATE-----'):].strip())\nprint('PRIVATE KEY' in b)")

    def last_cert() -> tuple[str, str]:
        p = clawfs("jail", "exec", str(mnt), "--", "python3", "-c", script)
        assert p.returncode == 0, p.stderr
        cert, _, has_key = p.stdout.strip().rpartition("\n")
        return cert, has_key

    first, has_key = last_cert()
    assert first.startswith("-----BEGIN CERTIFICATE-----") and has_key == "False"
    store.umount(mnt)
    store.mount(mnt, f"allow_other,agent_uid={jail.JAIL_UID},agent_gid={jail.JAIL_UID}")
    assert last_cert()[0] == first


def test_each_lease_gets_its_own_tools_list_whatever_the_jail_claims(mnt: Path) -> None:
    """The tool named at hand-over decides the list; a header or user name sent from inside changes nothing.
    Each name is refused before any DNS lookup (the .test names resolve nowhere)."""
    (mnt / "tools" / "alpha").mkdir(parents=True, exist_ok=True)
    (mnt / "tools" / "alpha" / "capabilities.json").write_text(json.dumps(
        {"http": {"allowlist": [{"host": "alpha.test", "path_prefix": "/api/"}]}}))
    (mnt / "settings" / "network.toml").write_text('[[allow]]\nhost = "runtime.test"\n')
    script = ("import socket\nfor host in ('alpha.test', 'runtime.test'):\n"
              "    s = socket.create_connection(('127.0.0.1', 3128))\n"
              "    claim = 'X-Tool: alpha\\r\\nProxy-Authorization: alpha\\r\\n'\n"
              "    s.sendall(f'CONNECT {host}:443 HTTP/1.1\\r\\n{claim}\\r\\n'.encode())\n"
              "    print(s.recv(200).split(b'\\r\\n')[0].decode(), flush=True)\n")
    as_alpha = clawfs("jail", "exec", str(mnt), "--tool", "alpha", "--", "python3", "-c", script)
    as_runtime = clawfs("jail", "exec", str(mnt), "--", "python3", "-c", script)
    assert as_alpha.returncode == 0 and as_runtime.returncode == 0, as_alpha.stderr + as_runtime.stderr
    # alpha.test passes alpha's list and fails only at DNS (.test resolves nowhere): 502; runtime.test is not its
    alpha_lines, runtime_lines = as_alpha.stdout.splitlines(), as_runtime.stdout.splitlines()
    assert alpha_lines[1].startswith("HTTP/1.1 403") and runtime_lines[0].startswith("HTTP/1.1 403")
    assert not alpha_lines[0].startswith("HTTP/1.1 403") and not runtime_lines[1].startswith("HTTP/1.1 403")
    refused = [(x["tool"], x["reason"]) for x in audit(mnt) if not x["allowed"] and x["status"] == 403]
    assert ("alpha", "runtime.test is not in alpha's allowlist") in refused
    assert ("runtime", "alpha.test is not in runtime's allowlist") in refused
