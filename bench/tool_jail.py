#!/usr/bin/env python3
"""What running each tool in a jail of its own costs per call.  (A benchmark, not a test: needs root.)

Beneath a real `-o agent_uid` mount (its daemon serving every jail's proxy), a jail made as `clawfs agent run`
makes the runtime's (mountd/jail_cli.run_jailed, given the broker's socket) times, from inside:
- ``in_process``: the synthetic echo tool (tests/wasm/echo.wat) run by a ToolHost in the jail's own process, as
  the runtime ran tools before (and `clawfs tool run` still does), warm;
- ``brokered``: the same call through the broker (BrokerClient -> mountd/toolbroker.py in this process -> the
  echo tool's jailed worker -> back), warm: the worker already started (the two alternate, call by call, so both
  see the same load);
- ``first_call``: the first brokered call, i.e. the worker's start (jail, Python, compile) and its lease.

Output: OUT/tool_jail.json (with the machine and its load average) and the same JSON on stdout.

    .venv/bin/python -m bench.tool_jail [--calls 500] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.machine import machine_info, write_report
from kernel import sysinfo
from mountd.jail_cli import run_jailed
from mountd.toolbroker import Broker
from sandbox import jail
from sandbox.toolworker import BROKER_ENV

REPO = Path(__file__).resolve().parent.parent

INSIDE = r"""
import json, time
from pathlib import Path
from sandbox.toolhost import ToolHost
from sandbox.toolworker import BrokerClient
params = json.dumps({"text": "hello"})
client = BrokerClient.from_env()
t = time.perf_counter()
first = client.call("echo", params).output
first_ms = (time.perf_counter() - t) * 1000
host = ToolHost(Path("/agent"))
assert host.run("echo", params).output == first
def once(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000
brokered, in_process = [], []
for i in range(N + 10):  # interleaved, so both see the same load; the first 10 of each are warm-up
    b = once(lambda: client.call("echo", params))
    p = once(lambda: host.run("echo", params))
    if i >= 10:
        brokered.append(b)
        in_process.append(p)
print(json.dumps({"first_ms": first_ms, "brokered": brokered, "in_process": in_process}))
"""


def _stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"p50_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 3),
            "min_ms": round(ms[0], 3), "n": len(ms)}


def clawfs(*args: str) -> None:
    p = subprocess.run([sys.executable, "-m", "mountd.cli", *args], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"clawfs {' '.join(args)}: {p.stderr}")


def bench(tmp: Path, calls: int) -> dict[str, Any]:
    pw, store, mnt = tmp / "pw", tmp / "bench.claw", tmp / "mnt"
    pw.write_text("bench passphrase\n")
    mnt.mkdir()
    clawfs("mkfs", str(store), "--passphrase-file", str(pw))
    clawfs("mount", str(store), str(mnt), "-o", f"passphrase_file={pw},noindex,allow_other,"
                                                 f"agent_uid={jail.JAIL_UID},agent_gid={jail.JAIL_UID}")
    broker = Broker(str(mnt))
    broker.start()
    try:
        (mnt / "tools" / "echo").mkdir(parents=True)
        (mnt / "tools" / "echo" / "tool.wasm").write_bytes((REPO / "tests" / "wasm" / "echo.wat").read_bytes())
        out_path = tmp / "inside.json"
        with open(out_path, "wb") as f:
            saved = os.dup(1)
            os.dup2(f.fileno(), 1)  # the jailed command's stdout is this process's
            try:
                outcome = run_jailed(str(mnt), ["python3", "-c", f"N = {calls}\n" + INSIDE],
                                     fds={BROKER_ENV: broker.runtime_end.fileno()})
            finally:
                os.dup2(saved, 1)
                os.close(saved)
        if outcome.code != 0:
            raise RuntimeError(f"the jailed timing script failed: {out_path.read_text()[-2000:]}")
        data = json.loads(out_path.read_text().strip().splitlines()[-1])
        workers = broker.status()
    finally:
        broker.close()
        clawfs("umount", str(mnt))
    brokered, in_process = _stats(data["brokered"]), _stats(data["in_process"])
    return {"calls": calls, "tool": "echo (tests/wasm/echo.wat)", "brokered": brokered, "in_process": in_process,
            "added_ms_p50": round(brokered["p50_ms"] - in_process["p50_ms"], 3),
            "first_call_ms": round(data["first_ms"], 1), "workers_started": workers["started"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    load_before = sysinfo.load_average()
    with tempfile.TemporaryDirectory() as tmp:
        result = bench(Path(tmp), args.calls)
    write_report(Path(args.out), "tool_jail", {"machine": machine_info(loadavg_at_start=load_before),
                                               "tool_jail": result})


if __name__ == "__main__":
    main()
