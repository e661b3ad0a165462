#!/usr/bin/env python3
"""The jail's overhead and its escape battery, as figures.  (A benchmark, not a test: needs root.)

- start: wall time of `true` run in a fresh jail (launcher start, root built, namespaces, Landlock, seccomp,
  exec, exit, cgroup removed), beside `true` run plainly; and the time until the jail's network is handed over.
- proxy: one HTTP GET on loopback to a local server, direct and through the egress proxy (the LLM-endpoint path:
  leak check, Egress with a pinned address), p50/p95 and the added p50.
- proxy_tls: HTTPS through CONNECT on loopback, tunnelled vs terminated with the store CA (bench/proxy_tls.py):
  the added p50 of termination (credential injected, response redacted).
- battery: attempts made from inside a jail (files outside the home, refused syscalls, raw sockets, the host's
  loopback v4/v6), how many were blocked, escapes (target 0).
- policy: attempts from inside a jail beneath a real ClawFS mount made with `-o agent_uid` at the owner's policy
  (settings/llm.toml, tools/, secrets/, channel.toml, .clawfs/: docs/ARCHITECTURE.md, "Policy is the owner's"),
  blocked, escapes (target 0); an attempt that succeeds but changes no policy file still counts as an escape.

Output: OUT/jail.json and the same JSON on stdout.

    .venv/bin/python -m bench.jail [--repeat 20] [--requests 300] [--out bench/results]
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.proxy_tls import Hello, bench_proxy_tls
from sandbox import jail
from sandbox.egress import Egress, ToolIdentity
from sandbox.proxy import Audit, EgressProxy, LlmEndpoint, ProxyClient

# Each line of output is one attempt: "name ok" (an escape) or "name ERRNO" (blocked).
BATTERY = r"""
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def report(name, fn):
    try:
        r = fn()
        ok = r is None or r >= 0
        print(name, "ok" if ok else errno.errorcode.get(ctypes.get_errno(), "?"))
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, "?"))
def sc(nr, *a):
    return lambda: libc.syscall(nr, *a)
def write(p):
    with open(p, "w") as f:
        f.write("x")
report("read /etc/shadow", lambda: open("/etc/shadow").read() and None)
report("read host file", lambda: open(HOSTFILE).read() and None)
report("write /usr", lambda: write("/usr/x"))
report("write /", lambda: write("/x"))
for name, nr, args in [("mount", 165, (b"none", b"/agent", b"tmpfs", 0, None)), ("umount /agent", 166, (b"/agent", 2)),
                       ("pivot_root", 155, (b"/tmp", b"/tmp")), ("unshare -U", 272, (0x10000000,)),
                       ("setns", 308, (0, 0)), ("ptrace", 101, (16, 1, 0, 0)), ("bpf", 321, (0, 0, 0)),
                       ("perf_event_open", 298, (0, 0, -1, -1, 0)), ("keyctl", 250, (0, 0)),
                       ("init_module", 175, (0, 0, b"")), ("open_by_handle_at", 304, (-100, 0, 0)),
                       ("io_uring_setup", 425, (1, 0)), ("userfaultfd", 323, (0,)), ("chroot", 161, (b"/tmp",))]:
    report(name, sc(nr, *args))
report("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW).close())
report("packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
for host, port in TARGETS:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(2)
    report(f"connect {host}", lambda: s.connect((host, port)))
    s.close()
"""


# Policy attempts, run from /agent (the mount): same output as BATTERY.
POLICY_BATTERY = r"""
import errno, os
os.chdir("/agent")
def report(name, fn):
    try:
        fn()
        print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, "?"))
def write(p, data=b"evil", mode="wb"):
    with open(p, mode) as f:
        f.write(data)
def write_existing(p):
    fd = os.open(p, os.O_WRONLY)
    try:
        os.write(fd, b"evil")
    finally:
        os.close(fd)
os.symlink("../settings/llm.toml", "memory/llm-sym")
report("append settings/llm.toml", lambda: write("settings/llm.toml", mode="ab"))
report("overwrite settings/llm.toml", lambda: write_existing("settings/llm.toml"))
report("truncate settings/llm.toml", lambda: os.truncate("settings/llm.toml", 0))
report("unlink settings/llm.toml", lambda: os.unlink("settings/llm.toml"))
report("rename over settings/llm.toml", lambda: os.rename("memory/prepared.toml", "settings/llm.toml"))
report("rename settings/ away", lambda: os.rename("settings", "memory/old-settings"))
report("create settings/network.toml", lambda: write("settings/network.toml"))
report("mkdir tools/evil", lambda: os.mkdir("tools/evil"))
report("overwrite tools/echo/capabilities.json", lambda: write_existing("tools/echo/capabilities.json"))
report("overwrite tools/echo/tool.wasm", lambda: write_existing("tools/echo/tool.wasm"))
report("hard link settings/llm.toml", lambda: os.link("settings/llm.toml", "memory/llm-hard"))
report("write through a symlink", lambda: write_existing("memory/llm-sym"))
report("chmod settings/llm.toml", lambda: os.chmod("settings/llm.toml", 0o666))
report("setxattr settings/llm.toml", lambda: os.setxattr("settings/llm.toml", "user.evil", b"1"))
report("create a secret", lambda: write("secrets/new"))
report("overwrite channel.toml", lambda: write_existing("channels/mail/channel.toml"))
report("write under .clawfs", lambda: write(".clawfs/evil"))
report("read .clawfs/audit", lambda: os.listdir(".clawfs/audit"))
"""
POLICY_FILES = ("settings/llm.toml", "tools/echo/tool.wasm", "tools/echo/capabilities.json",
                "channels/mail/channel.toml")


def bench_policy(tmp: str) -> dict[str, Any]:
    """The policy battery beneath a real agent_uid mount (a fresh store), and whether any policy file changed."""
    import sys

    def clawfs(*argv: str) -> None:
        subprocess.run([sys.executable, "-m", "mountd.cli", *argv], check=True, capture_output=True, timeout=120)

    store, passfile, mnt = Path(tmp, "policy.claw"), Path(tmp, "policy.pass"), Path(tmp, "policy-mnt")
    passfile.write_text("bench passphrase\n")
    mnt.mkdir()
    clawfs("mkfs", str(store), "--passphrase-file", str(passfile))
    clawfs("mount", str(store), str(mnt), "-o", f"passphrase_file={passfile},noindex,agent_uid={jail.JAIL_UID}")
    try:
        for d in ("settings", "tools/echo", "channels/mail", "secrets", "memory"):
            (mnt / d).mkdir(parents=True)
        for rel in (*POLICY_FILES, "memory/prepared.toml"):
            (mnt / rel).write_text(f"{rel}\n")
        j = jail.start(jail.JailConfig(mount=str(mnt)), ["python3", "-c", POLICY_BATTERY], stdout=subprocess.PIPE)
        out, _ = j.proc.communicate(timeout=120)
        j.wait()
        results = dict(line.rsplit(" ", 1) for line in out.decode().splitlines())
        changed = [rel for rel in POLICY_FILES if (mnt / rel).read_text() != f"{rel}\n"]
    finally:
        clawfs("umount", str(mnt))
    escapes = sorted({k for k, v in results.items() if v == "ok"} | {f"changed {rel}" for rel in changed})
    return {"attempts": len(results), "blocked": len(results) - len([k for k in escapes if k in results]),
            "escapes": len(escapes), "escaped": escapes, "answers": results}


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def bench_start(home: str, repeat: int) -> dict[str, Any]:
    plain, jailed, ready = [], [], []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(["true"], check=True)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        j = jail.start(jail.JailConfig(mount=home), ["true"])
        code = j.wait()
        jailed.append(time.perf_counter() - t)
        ready.append(j.ready_seconds)
        assert code == 0
    return {"repeat": repeat, "jailed_true_ms_p50": round(statistics.median(jailed) * 1000, 1),
            "jailed_true_ms_p95": round(_pct(jailed, 0.95) * 1000, 1),
            "network_ready_ms_p50": round(statistics.median(ready) * 1000, 1),
            "plain_true_ms_p50": round(statistics.median(plain) * 1000, 2),
            "target_ms": 300}


def _get(port: int, target: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.") or b" 200 " not in data[:20]:
        raise RuntimeError(f"unexpected answer {data[:60]!r}")


def bench_proxy(requests: int) -> dict[str, Any]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    px = EgressProxy(Egress(), Audit(io.StringIO()), LlmEndpoint("http", "127.0.0.1", port))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    pport = lsock.getsockname()[1]
    px.serve(lsock, ProxyClient(ToolIdentity("bench"), None))
    direct, proxied = [], []
    try:
        for _ in range(requests):  # interleaved, so both sides see the same machine load
            t = time.perf_counter()
            _get(port, "/v1/x")
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            _get(pport, f"http://127.0.0.1:{port}/v1/x")
            proxied.append(time.perf_counter() - t)
    finally:
        px.close()
        lsock.close()
        srv.shutdown()
        srv.server_close()
    d50, p50 = statistics.median(direct), statistics.median(proxied)
    return {"requests": requests, "direct_ms_p50": round(d50 * 1000, 3), "proxied_ms_p50": round(p50 * 1000, 3),
            "direct_ms_p95": round(_pct(direct, 0.95) * 1000, 3),
            "proxied_ms_p95": round(_pct(proxied, 0.95) * 1000, 3),
            "added_ms_p50": round((p50 - d50) * 1000, 3), "ratio_p50": round(p50 / d50, 2), "target_added_ms": 2}


def bench_battery(home: str, hostfile: str) -> dict[str, Any]:
    l4 = socket.socket()
    l4.bind(("127.0.0.1", 0))
    l4.listen(4)
    l6 = socket.socket(socket.AF_INET6)
    l6.bind(("::1", 0))
    l6.listen(4)
    targets = [("127.0.0.1", l4.getsockname()[1]), ("::1", l6.getsockname()[1])]
    script = f"HOSTFILE = {hostfile!r}\nTARGETS = {targets!r}\n" + BATTERY
    j = jail.start(jail.JailConfig(mount=home), ["python3", "-c", script], stdout=subprocess.PIPE)
    out, _ = j.proc.communicate(timeout=120)
    j.wait()
    l4.close()
    l6.close()
    results = dict(line.rsplit(" ", 1) for line in out.decode().splitlines())
    escapes = sorted(k for k, v in results.items() if v == "ok")
    return {"attempts": len(results), "blocked": len(results) - len(escapes), "escapes": len(escapes),
            "escaped": escapes, "answers": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        home.chmod(0o777)
        hostfile = Path(tmp) / "store.claw"
        hostfile.write_text("ciphertext")
        result = {"machine": machine_info(), "start": bench_start(str(home), args.repeat),
                  "proxy": bench_proxy(args.requests), "proxy_tls": bench_proxy_tls(args.requests),
                  "battery": bench_battery(str(home), str(hostfile)),
                  "policy": bench_policy(tmp)}
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "jail.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
