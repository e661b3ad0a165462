"""`clawfs serve` figures: time from the command to READY=1 (sd_notify, on a datagram socket of ours) with a
home of N files (default 10,000; the index model loads in the background), the restart time of a runtime
killed with SIGKILL (from the kill to the new runtime's first liveness ping, as the daemon's log stamps it;
the first backoff step alone is 1 s by policy), and the memory (PSS) of the whole service at idle.

    python -m bench.serve [--files 10000] [--runs 3] [--runtime host|jail] [--out bench/results]

`--runtime jail` mounts with `allow_other,agent_uid=64010` and runs the runtime in the jail (root only); writes
bench/results/serve.json, or serve_jail.json for the jail (bench.machine.write_report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import REPO, machine_info, write_report
from mountd import serve as serve_mod
from tests.llm_server import ScriptedLLM

CLAWFS = str(Path(sys.executable).parent / "clawfs")
PW = "bench passphrase\n"


def sh(*args: str) -> None:
    subprocess.run([CLAWFS, *args], check=True, capture_output=True)


def fill(mnt: Path, files: int) -> None:
    """`files` small notes in folders of 100 (what a long-lived agent's memory looks like, not its size)."""
    for i in range(files):
        d = mnt / "memory" / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        text = f"# Note {i}\n\nThe agent wrote this on day {i % 365}: item {i * 7919 % 10007}.\n"
        (d / f"note{i:05d}.md").write_text(text)


def pss_kib(pid: int) -> int:
    """PSS of a process and its descendants (a shared page counted once overall)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    kids: dict[int, list[int]] = {}
    for line in out:
        if line.strip():
            p, pp = map(int, line.split())
            kids.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            found.append(k)
            todo.append(k)
    return found


def alive_stamps(log: Path) -> list[float]:
    """Wall-clock times of the daemon's "agent runtime is alive" lines (its log's millisecond stamps)."""
    stamps = []
    for line in log.read_text().splitlines():
        if "agent runtime is alive" in line:
            when = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            stamps.append(when.timestamp())
    return stamps


def one_run(store: Path, mnt: Path, pw: Path, root: Path, n: int, idle: float, runtime: str) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = root / f"notify-{n}"
    sock.bind(str(path))
    sock.settimeout(300)
    log = root / f"serve-{n}.stderr"
    env = dict(os.environ, NOTIFY_SOCKET=str(path))
    t0 = time.perf_counter()
    with open(log, "w") as err:
        opts = f"passphrase_file={pw}" + (",allow_other,agent_uid=64010" if runtime == "jail" else "")
        proc = subprocess.Popen([CLAWFS, "serve", "--foreground", "--runtime", runtime, str(store), str(mnt), "-o",
                                 opts], stdin=subprocess.DEVNULL, stderr=err, env=env)
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
        ready = time.perf_counter() - t0
        time.sleep(idle)  # idle: the model has loaded in the background meanwhile
        pss = pss_kib(proc.pid)
        state = serve_mod.read_state(str(mnt))
        assert state is not None and state["runtime"]["state"] == "running", log.read_text()[-2000:]
        killed_at = time.time()
        os.kill(state["runtime"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(alive_stamps(log)) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the runtime was not restarted:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        restart = alive_stamps(log)[1] - killed_at
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        sock.close()
    return {"ready_seconds": round(ready, 3), "restart_seconds": round(restart, 3),
            "idle_pss_mib": round(pss / 1024, 1), "exit_code": code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds after READY before memory is measured")
    ap.add_argument("--runtime", choices=["host", "jail"], default="host")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="clawfs-serve-bench-") as tmp:
        root = Path(tmp)
        store, mnt, pw = root / "agent.claw", root / "mnt", root / "pw"
        pw.write_text(PW)
        mnt.mkdir()
        sh("mkfs", str(store), "--passphrase-file", str(pw), "--agent-home")
        sh("mount", str(store), str(mnt), "-o", f"passphrase_file={pw},noindex")
        llm = ScriptedLLM().start()
        try:
            (mnt / "settings" / "llm.toml").write_text(f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "bench"\n')
            (mnt / "settings" / "agent.toml").write_text("[agent]\nheartbeat_minutes = 0\n")
            t0 = time.perf_counter()
            fill(mnt, args.files)
            build = time.perf_counter() - t0
            sh("umount", str(mnt))
            print(f"bench: home of {args.files} files built in {build:.0f} s", file=sys.stderr)
            runs = [one_run(store, mnt, pw, root, i, args.idle, args.runtime) for i in range(args.runs)]
        finally:
            llm.stop()
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    report = {"bench": "serve", "files": args.files, "runtime": args.runtime, "runs": runs,
              "ready_seconds_median": med("ready_seconds"), "ready_target_seconds": 3.0,
              "restart_seconds_median": med("restart_seconds"), "restart_target_seconds": 1.0,
              "restart_backoff_seconds": 1.0, "idle_pss_mib_median": med("idle_pss_mib"),
              "machine": machine_info()}
    write_report(Path(args.out), "serve" if args.runtime == "host" else "serve_jail", report)


if __name__ == "__main__":
    main()
