#!/usr/bin/env python3
"""The egress proxy as the mount daemon serves it, as figures.  (A benchmark, not a test: needs root.)

One HTTP GET to the LLM endpoint of settings/llm.toml (a local server on the host's 127.0.0.1), timed inside a
jail made by `clawfs jail exec` beneath a real mount (`-o agent_uid`), through the daemon's proxy: policy read
live from the store at each request (settings/llm.toml, settings/network.toml, the secret values for the leak
check, each a hop into the mount's loop) and one line of `.clawfs/audit/network.jsonl` per request.  Beside it,
on the host, the same GET direct and through an in-process EgressProxy with a fixed policy (bench/jail.py's
`bench_proxy`), so the cost of the daemon's live reads shows as the difference.

Output: OUT/proxy_daemon.json and the same JSON on stdout.

    .venv/bin/python -m bench.proxy_daemon [--requests 300] [--out bench/results]
"""

from __future__ import annotations

import argparse
import http.server
import json
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.jail import _Hello, _pct, bench_proxy
from bench.machine import machine_info, write_report
from sandbox import jail

INSIDE = r"""
import json, socket, time
times = []
for _ in range(N):
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", 3128)) as s:
        s.sendall(f"GET http://127.0.0.1:{PORT}/v1/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b" 200 " in data[:20], data[:80]
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def clawfs(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "mountd.cli", *args], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"clawfs {' '.join(args)}: {p.stderr}")
    return p


def bench_daemon_proxy(tmp: Path, requests: int) -> dict[str, Any]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    pw = tmp / "pw"
    pw.write_text("bench passphrase\n")
    store, mnt = tmp / "bench.claw", tmp / "mnt"
    mnt.mkdir()
    clawfs("mkfs", str(store), "--passphrase-file", str(pw))
    clawfs("mount", str(store), str(mnt), "-o", f"passphrase_file={pw},noindex,allow_other,"
                                                 f"agent_uid={jail.JAIL_UID},agent_gid={jail.JAIL_UID}")
    try:
        (mnt / "settings").mkdir()
        (mnt / "settings" / "llm.toml").write_text(f'[llm]\nbase_url = "http://127.0.0.1:{port}/v1"\n')
        (mnt / "secrets").mkdir(exist_ok=True)
        (mnt / "secrets" / "k").write_text("bench-secret-value-0123456789")
        out = clawfs("jail", "exec", str(mnt), "--", "python3", "-c",
                     f"N = {requests}\nPORT = {port}\n" + INSIDE)
        times = json.loads(out.stdout)
        audit_lines = len((mnt / ".clawfs" / "audit" / "network.jsonl").read_text().splitlines())
    finally:
        clawfs("umount", str(mnt))
        srv.shutdown()
        srv.server_close()
    return {"requests": requests, "proxied_ms_p50": round(statistics.median(times) * 1000, 3),
            "proxied_ms_p95": round(_pct(times, 0.95) * 1000, 3), "audit_lines": audit_lines}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = bench_daemon_proxy(Path(tmp), args.requests)
    in_process = bench_proxy(args.requests)
    daemon["added_ms_p50_over_direct"] = round(daemon["proxied_ms_p50"] - in_process["direct_ms_p50"], 3)
    daemon["added_ms_p50_over_in_process"] = round(daemon["proxied_ms_p50"] - in_process["proxied_ms_p50"], 3)
    daemon["target_added_ms"] = 2
    write_report(Path(args.out), "proxy_daemon", {"machine": machine_info(), "daemon": daemon,
                                                  "in_process": in_process})


if __name__ == "__main__":
    main()
