"""The agent runtime's own cost per turn (all but the LLM's time) on a real mount, and messages/s with 8 threads
in flight.

    .venv/bin/python -m bench.agent [--chunks 10000] [--turns 200] [--out bench/results]   (from the repo root)

Setup: a new store (`--agent-home`), indexed with `--embedder` (hashing-384 by default: no model, so the home
of `--chunks` chunks is built in minutes; all-MiniLM-L6-v2 adds its query embedding to every search), mounted;
notes written through the mount until the index holds `--chunks` chunks; the scripted LLM of tests/ (zero
latency: it answers at once from rules) on 127.0.0.1; the runtime in this process.

Each turn is a question: context (prompt files, memory search through `.clawfs/search`, thread history), LLM
-> memory_search tool call -> LLM -> reply, journaled, flagged.  Overhead = the runtime's time for the turn
minus the time spent waiting for the LLM's HTTP answers.  Targets (issue 23): p50 <= 40 ms, p95 <= 100 ms.
Then `--threads` threads get `--turns` messages delivered at once (parallel_turns = threads): messages/s from
the first delivery to the last reply.

Each measure runs on a new home (built alike) with the runtime in a process of its own (`python -c
'bench.agent.measure(...)'`, the scripted LLM staying in this one), `--rounds` times.  `--compare TREE` (e.g. a
`git worktree` of an earlier commit) runs that tree's own `bench.agent.measure` and runtime too, alternating with
this tree's round by round, so that both see the same load.  `--jail` (root) mounts with an agent uid and also
measures `clawfs agent run`: the runtime in the jail as that uid, its LLM requests through the daemon's egress
proxy; its per-turn figures are the runtime's own "answered ... in X ms, Y ms of it the LLM's" log lines
(sequential turns only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent import maildir
from agent.runtime import Runtime
from bench.machine import machine_info
from tests.llm_server import ScriptedLLM

REPO = Path(__file__).resolve().parent.parent
CLAWFS = str(Path(sys.executable).with_name("clawfs"))
PW = "agent bench passphrase\n"
WORDS = [
    "grant", "budget", "engine", "mirror", "telescope", "harbour", "boat", "tea", "coffee", "garden", "tomato",
    "basil", "deadline", "review", "calendar", "meeting", "invoice", "travel", "train", "ticket", "museum",
    "lecture", "chapter", "draft", "reviewer", "summary", "mortgage", "bank", "insurance", "doctor", "dentist",
    "vaccine", "kitten", "vet", "marathon", "interval", "taper", "kernel", "cluster", "memory", "container",
    "deployment", "manifest", "probe", "backup", "disk", "archive", "letter", "parcel", "birthday", "present",
    "recipe", "sourdough", "starter", "oven", "crust"
]
PARAGRAPH_WORDS = 170  # about one chunk of the index each
PARAGRAPHS_PER_FILE = 10


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def sh(*args: str) -> None:
    subprocess.run([CLAWFS, *args], check=True, capture_output=True, text=True)


def note(rng: random.Random, i: int) -> str:
    paras = [" ".join(rng.choice(WORDS) for _ in range(PARAGRAPH_WORDS)) + "." for _ in range(PARAGRAPHS_PER_FILE)]
    return f"# Note {i}\n\n" + "\n\n".join(paras) + "\n"


def status(mnt: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((mnt / ".clawfs" / "status").read_text())
    return data


def fill(mnt: Path, chunks: int) -> int:
    rng = random.Random(23)
    (mnt / "notes").mkdir(exist_ok=True)
    i = 0
    while status(mnt)["chunks"] + status(mnt)["pending"] * PARAGRAPHS_PER_FILE < chunks:
        for _ in range(50):
            (mnt / "notes" / f"{i:05d}.md").write_text(note(rng, i))
            i += 1
    deadline = time.monotonic() + 3600
    while status(mnt)["pending"] and time.monotonic() < deadline:
        time.sleep(0.5)  # the background indexer catches up
    return int(status(mnt)["chunks"])


def ask(mnt: Path, text: str, thread: str) -> str:
    msg = maildir.make_message(text, sender="bench@example.test", thread=thread)
    maildir.deliver(mnt / "channels" / "local" / "inbox", msg.as_bytes())
    return str(msg["Message-ID"])


def wait_replies(mnt: Path, ids: list[str], timeout: float = 600) -> None:
    outbox = mnt / "channels" / "local" / "outbox"
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        pending = {m for m in pending if maildir.find_reply(outbox, m) is None}
        if pending and time.monotonic() > deadline:
            raise SystemExit(f"bench: {len(pending)} replies missing after {timeout} s")
        time.sleep(0.005)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def measure(mnt: Path, turns: int, threads: int) -> dict[str, Any]:
    (mnt / "settings" / "agent.toml").write_text(
        f"[agent]\npoll_seconds = 0.02\nparallel_turns = {threads}\nheartbeat_minutes = 0\n")
    rt = Runtime(mnt)
    records: list[dict[str, Any]] = []
    real_answer = rt._answer

    def answer_and_record(channel: str, inbound: maildir.Inbound) -> None:
        real_answer(channel, inbound)
        records.append(dict(rt._last_turn))

    rt._answer = answer_and_record  # type: ignore[method-assign]
    stop = threading.Event()
    t = threading.Thread(target=rt.run, args=(stop,), daemon=True)
    t.start()
    rng = random.Random(7)
    latencies = []
    try:
        for _ in range(5):  # warm-up: caches, first search
            wait_replies(mnt, [ask(mnt, f"what about the {rng.choice(WORDS)}?", "warm")])
        records.clear()
        for i in range(turns):
            t0 = time.perf_counter()
            wait_replies(mnt, [ask(mnt, f"what do my notes say about the {rng.choice(WORDS)} and "
                                        f"{rng.choice(WORDS)}?", f"seq{i % 4}")])
            latencies.append(time.perf_counter() - t0)
        seq = [r["seconds"] - r["llm_seconds"] for r in records]
        llm = [r["llm_seconds"] for r in records]
        records.clear()
        t0 = time.perf_counter()
        ids = [ask(mnt, f"what about the {rng.choice(WORDS)}?", f"par{i % threads}") for i in range(turns)]
        wait_replies(mnt, ids)
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        t.join(timeout=120)
    ms = [1000 * x for x in seq]
    return {
        "turns": len(ms),
        "overhead_ms": {"p50": round(pct(ms, 50), 2), "p95": round(pct(ms, 95), 2), "mean": round(
            statistics.mean(ms), 2), "max": round(max(ms), 2)},
        "llm_wait_ms_p50": round(1000 * pct(llm, 50), 2),
        "end_to_end_ms": {"p50": round(1000 * pct(latencies, 50), 2), "p95": round(1000 * pct(latencies, 95), 2)},
        "targets_ms": {"p50": 40, "p95": 100},
        "meets_targets": pct(ms, 50) <= 40 and pct(ms, 95) <= 100,
        "parallel": {"threads": threads, "messages": turns, "seconds": round(wall, 3),
                     "messages_per_s": round(turns / wall, 2)},
    }


@contextlib.contextmanager
def new_home(args: argparse.Namespace) -> Iterator[tuple[Path, Path, int, float]]:
    """A new store with --agent-home, indexed, mounted (with an agent uid for --jail), filled to --chunks, its
    llm.toml pointing at a scripted LLM of this process: (mountpoint, its folder, chunks, seconds to build)."""
    with tempfile.TemporaryDirectory(prefix="clawfs-agent-bench-") as tmp:
        root = Path(tmp)
        store, mnt, pw = root / "agent.claw", root / "mnt", root / "pw"
        pw.write_text(PW)
        mnt.mkdir()
        sh("mkfs", str(store), "--passphrase-file", str(pw), "--agent-home")
        sh("reindex", str(store), "--passphrase-file", str(pw), "--embedder", args.embedder)
        agent_uid = ",allow_other,agent_uid=64010,agent_gid=64010" if args.jail else ""
        sh("mount", str(store), str(mnt), "-o", f"passphrase_file={pw},log_file={root / 'mount.log'}{agent_uid}")
        llm = ScriptedLLM().start()
        try:
            (mnt / "settings" / "llm.toml").write_text(f'[llm]\nbase_url = "{llm.base_url}"\nmodel = "bench"\n')
            t0 = time.perf_counter()
            chunks = fill(mnt, args.chunks)
            build = time.perf_counter() - t0
            print(f"bench: home of {chunks} chunks built in {build:.0f} s", file=sys.stderr)
            yield mnt, root, chunks, build
        finally:
            llm.stop()
            sh("umount", str(mnt))


MEASURE = ("import json, sys; from pathlib import Path; from bench.agent import measure; "
           "print('RESULT ' + json.dumps(measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))")


def measure_tree(tree: Path, mnt: Path, turns: int, threads: int) -> dict[str, Any]:
    """`tree`'s own measure() and runtime, in a process of its own, on the mounted home."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(mnt), str(turns), str(threads)], cwd=tree, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench: the measure of {tree} failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    return result


ANSWERED = re.compile(r"answered \(.*\) in ([0-9.]+) ms, ([0-9.]+) ms of it the LLM's")


def measure_jail(mnt: Path, turns: int, log_path: Path) -> dict[str, Any]:
    """`clawfs agent run` (the runtime in the jail beneath this agent-uid mount), sequential turns."""
    (mnt / "settings" / "agent.toml").write_text("[agent]\npoll_seconds = 0.02\nparallel_turns = 8\n"
                                                 "heartbeat_minutes = 0\n")
    rng = random.Random(11)
    with open(log_path, "wb") as err:
        proc = subprocess.Popen([CLAWFS, "agent", "run", str(mnt)], stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    latencies = []
    try:
        for _ in range(5):
            wait_replies(mnt, [ask(mnt, f"what about the {rng.choice(WORDS)}?", "jail-warm")], timeout=120)
        skip = len(ANSWERED.findall(log_path.read_text(errors="replace")))
        for i in range(turns):
            t0 = time.perf_counter()
            wait_replies(mnt, [ask(mnt, f"what do my notes say about the {rng.choice(WORDS)} and "
                                        f"{rng.choice(WORDS)}?", f"jail{i % 4}")])
            latencies.append(time.perf_counter() - t0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    found = ANSWERED.findall(log_path.read_text(errors="replace"))[skip:]
    ms = [float(total) - float(llm) for total, llm in found]
    return {"turns": len(ms), "overhead_ms": {"p50": round(pct(ms, 50), 2), "p95": round(pct(ms, 95), 2),
                                              "mean": round(statistics.mean(ms), 2), "max": round(max(ms), 2)},
            "llm_wait_ms_p50": round(pct([float(llm) for _, llm in found], 50), 2),
            "end_to_end_ms": {"p50": round(1000 * pct(latencies, 50), 2),
                              "p95": round(1000 * pct(latencies, 95), 2)},
            "meets_targets": pct(ms, 50) <= 40 and pct(ms, 95) <= 100}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--embedder", default="hashing-384")
    ap.add_argument("--rounds", type=int, default=3, help="measures of each tree, alternating")
    ap.add_argument("--compare", metavar="TREE", help="also measure this tree's runtime (e.g. a git worktree)")
    ap.add_argument("--jail", action="store_true", help="also measure `clawfs agent run` in the jail (root)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="output directory")
    args = ap.parse_args()
    trees = {"this": REPO, **({"compare": Path(args.compare).resolve()} if args.compare else {})}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    jail_runs: list[dict[str, Any]] = []
    measures = [(r, name, tree) for r in range(args.rounds)
                for name, tree in (list(trees.items()) if r % 2 == 0 else list(reversed(trees.items())))]
    for r, name, tree in measures:
        # a new home for each measure, built alike (same seed): every turn grows the daily log and the threads'
        # histories, which the indexer then reads again, so a measure on a used home is slower than the one before
        with new_home(args) as (mnt, root, chunks, build):
            before = loadavg()
            result = measure_tree(tree, mnt, args.turns, args.threads)
            result["loadavg_before_after"] = [before, loadavg()]
            runs[name].append(result)
            print(f"bench: round {r} {name}: overhead {result['overhead_ms']}, "
                  f"{result['parallel']['messages_per_s']} msg/s, load {result['loadavg_before_after']}",
                  file=sys.stderr)
            write_doc(args, trees, runs, jail_runs, chunks, build, complete=False)
        if args.jail and name == "this":
            with new_home(args) as (mnt, root, chunks, build):
                before = loadavg()
                jail_result = measure_jail(mnt, args.turns, root / "agent-jail.log")
                jail_result["loadavg_before_after"] = [before, loadavg()]
                jail_runs.append(jail_result)
                print(f"bench: round {r} jail: overhead {jail_result['overhead_ms']}", file=sys.stderr)
                write_doc(args, trees, runs, jail_runs, chunks, build, complete=False)
    write_doc(args, trees, runs, jail_runs, chunks, build, complete=True)


def write_doc(args: argparse.Namespace, trees: dict[str, Path], runs: dict[str, list[dict[str, Any]]],
              jail_runs: list[dict[str, Any]], chunks: int, build: float, complete: bool) -> None:
    """agent.json, written after every measure too (a run stopped early keeps what it measured)."""
    if not runs["this"]:
        return
    # the headline is the round of median p50 (every round is in "runs", with its load)
    best = sorted(runs["this"], key=lambda x: x["overhead_ms"]["p50"])[(len(runs["this"]) - 1) // 2]
    doc = {"bench": "agent", "home_chunks": chunks, "embedder": args.embedder, "build_seconds": round(build, 1),
           "complete": complete, "rounds_asked": args.rounds,
           "runtime": "in a process of its own, as root beside the mount (not jailed)", **best,
           "runs": runs["this"], "commit": _git("rev-parse", "HEAD"), "tree_dirty": bool(_git("status", "--short",
                                                                                               "--", "agent", "bench")),
           **({"compare": {"tree": str(trees["compare"]), "commit": _git("-C", str(trees["compare"]), "rev-parse",
                                                                         "HEAD"), "runs": runs["compare"]}}
              if "compare" in trees else {}),
           **({"jail": {"runtime": "clawfs agent run (jailed, agent uid 64010, LLM through the egress proxy)",
                        "runs": jail_runs}} if args.jail else {}),
           "machine": machine_info()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agent.json").write_text(json.dumps(doc, indent=2) + "\n")
    if complete:
        print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
