"""`clawfs serve` figures: time from the command to READY=1 (sd_notify, on a datagram socket of ours) with a
home of N files (default 10,000; the index model loads in the background), the restart time of a runtime
killed with SIGKILL (from the kill to the new runtime's first liveness ping, as the daemon's log stamps it;
the policy restarts a first failure at once), and the memory (PSS) of the whole service at idle.  Each run also
has its phases from the daemon's log (the runtime spawned, its jail's proxy served, its first ping; after the
kill: the death seen and the successor spawned) and the 1-minute load average before it: this machine is shared.

    python -m bench.serve [--files 10000] [--runs 3] [--runtime host|jail] [--home DIR] [--out bench/results]

`--runtime jail` mounts with `allow_other,agent_uid=64010` and runs the runtime in the jail (root only); writes
bench/results/serve.json, or serve_jail.json for the jail (bench.machine.write_report).  `--home DIR` keeps the
store built there and reuses it on the next call (the home of 10,000 files takes about a minute to write).
"""

from __future__ import annotations

import argparse
import contextlib
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
from mountd.supervisor import RestartPolicy
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


def stamps(log: Path, what: str) -> list[float]:
    """Wall-clock times of the daemon's log lines containing `what` (its log's millisecond stamps)."""
    found = []
    for line in log.read_text().splitlines():
        if what in line:
            with contextlib.suppress(ValueError):
                found.append(dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return found


def alive_stamps(log: Path) -> list[float]:
    return stamps(log, "agent runtime is alive")


def phases(log: Path, t0: float, killed_at: float) -> dict[str, float | None]:
    """Seconds from the start (and from the kill) to each step the daemon's log stamps."""
    def at(what: str, i: int, since: float) -> float | None:
        found = stamps(log, what)
        return round(found[i] - since, 3) if len(found) > i else None

    return {"spawned": at("agent runtime started", 0, t0), "jail_served": at("egress proxy: serving jail", 0, t0),
            "first_ping": at("agent runtime is alive", 0, t0),
            "death_seen_after_kill": at("agent runtime: killed", 0, killed_at),
            "respawned_after_kill": at("agent runtime started", 1, killed_at),
            "jail_served_after_kill": at("egress proxy: serving jail", 1, killed_at)}


def one_run(store: Path, mnt: Path, pw: Path, root: Path, n: int, idle: float, runtime: str) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = root / f"notify-{n}"
    sock.bind(str(path))
    sock.settimeout(300)
    log = root / f"serve-{n}.stderr"
    env = dict(os.environ, NOTIFY_SOCKET=str(path))
    load = os.getloadavg()[0]
    t0_wall = time.time()
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
            "idle_pss_mib": round(pss / 1024, 1), "exit_code": code, "load_1min_before": round(load, 2),
            "phases_seconds": phases(log, t0_wall, killed_at)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds after READY before memory is measured")
    ap.add_argument("--runtime", choices=["host", "jail"], default="host")
    ap.add_argument("--home", help="build the store here once and reuse it (default: a temporary directory)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        root = Path(args.home) if args.home else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="clawfs-serve-bench-")))
        root.mkdir(parents=True, exist_ok=True)
        store, mnt, pw = root / f"agent-{args.files}.claw", root / "mnt", root / "pw"
        pw.write_text(PW)
        mnt.mkdir(exist_ok=True)
        built = store.exists()
        if not built:
            sh("mkfs", str(store), "--passphrase-file", str(pw), "--agent-home")
        sh("mount", str(store), str(mnt), "-o", f"passphrase_file={pw},noindex")
        llm = ScriptedLLM().start()
        try:
            (mnt / "settings" / "llm.toml").write_text(f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "bench"\n')
            (mnt / "settings" / "agent.toml").write_text("[agent]\nheartbeat_minutes = 0\n")
            if not built:
                t0 = time.perf_counter()
                fill(mnt, args.files)
                print(f"bench: home of {args.files} files built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            sh("umount", str(mnt))
            runs = [one_run(store, mnt, pw, root, i, args.idle, args.runtime) for i in range(args.runs)]
        finally:
            llm.stop()
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    report = {"bench": "serve", "files": args.files, "runtime": args.runtime, "runs": runs,
              "ready_seconds_median": med("ready_seconds"), "ready_target_seconds": 3.0,
              "restart_seconds_median": med("restart_seconds"), "restart_target_seconds": 1.0,
              "restart_backoff_seconds": RestartPolicy().on_failure(1.0, 0.0),  # the first failure's wait
              "load_1min_before_runs": [r["load_1min_before"] for r in runs],
              "idle_pss_mib_median": med("idle_pss_mib"),
              "machine": machine_info()}
    write_report(Path(args.out), "serve" if args.runtime == "host" else "serve_jail", report)


if __name__ == "__main__":
    main()
