#!/usr/bin/env python3
"""Side-by-side filesystem benchmark: a plain directory, gocryptfs and ClawFS, in one run on one machine.

Every system lives in a work directory on the same disk (under ``OUT/tmp``) and is measured with the same
workloads, the streaming ones and the small-file ones each on a filesystem created fresh for them:

* streaming: write a file of ``--size-mib`` MiB with 1 MiB and with 128 KiB ``os.write`` requests from one
  preallocated random buffer, then ``fsync`` and ``close`` (all inside the timing); then a COLD read of the
  same file with the same request size.  Both files are kept until the end, and the order of the two request
  sizes alternates between repeats.  "Cold" means: unmount the FUSE filesystem (the ClawFS unmount waits until
  the daemon has flushed and exited), ``sync; echo 3 > /proc/sys/vm/drop_caches``, mount again.  The data is
  checked against the buffer after the timed read (untimed).
* small files: a deterministic tarball (``--files`` text files of 1-8 KiB in about one directory per 50 files,
  seeded RNG, built once) is extracted with ``tar -xf``, listed with ``ls -lR``, searched with ``grep -r`` and
  removed with ``rm -rf``.  ``ls``, ``grep`` and ``rm`` each start cold, as above (``--small-warm`` skips
  that).
  grep's output goes through a pipe, not to /dev/null: GNU grep stops at the first match when its output is
  /dev/null, which would measure nothing; the piped lines are counted to check the result.

Each ClawFS block size given in ``--block-sizes`` is its own column.  With ``--repeat N`` the whole set runs N
times, systems interleaved, and the median is reported.  MB/s means 10^6 bytes per second.

Output: ``OUT/fs_throughput.json`` (machine, configuration, per-system figures, ClawFS/gocryptfs ratios and
whether each target is met: throughput ratio >= 1.0, small-file time ratio <= 2.0), ``OUT/fs_throughput.png``
(unless ``--json-only``), and a table on the terminal.  Needs root (to drop caches), FUSE, gocryptfs and
clawfs.

    .venv/bin/python -m bench.fs_throughput --quick
    .venv/bin/python -m bench.fs_throughput --block-sizes 16384,65536,262144
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import machine
from kernel import mounts, sysinfo
from mountd.ui import Progress

REPO = Path(__file__).resolve().parent.parent
MIB, KIB, MB = 1024 * 1024, 1024, 1_000_000
REQUESTS = {"1MiB": MIB, "128KiB": 128 * KIB}
STREAM_WORKLOADS = [f"{op}_{r}" for op in ("write", "read") for r in REQUESTS]
SMALL_WORKLOADS = ["extract", "ls_lR", "grep_r", "rm_rf"]
THROUGHPUT_TARGET, SMALL_TARGET = 1.0, 2.0
CMD_TIMEOUT = 1800.0
PASSPHRASE = "fs-throughput benchmark passphrase\n"
console = Console(stderr=True)
Run = tuple[dict[str, float], dict[str, float]]  # (workload -> seconds, extra measurement -> seconds)


# -- the systems under test ----------------------------------------------------------------------------------
def is_mounted(path: Path) -> bool:
    return mounts.is_mountpoint(str(path))


def run(cmd: list[str], *, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


class Target:
    """One filesystem under test: created in `root`, workloads run in `data`."""

    name = "target"
    is_fuse = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mnt = root / "mnt"
        self.pwfile = root / "passphrase"

    @property
    def data(self) -> Path:
        return self.mnt

    def create(self) -> None:
        self.root.mkdir(parents=True)
        self.mnt.mkdir()
        self.pwfile.write_text(PASSPHRASE)

    def mount(self) -> None:
        raise NotImplementedError

    def unmount(self) -> None:
        raise NotImplementedError

    def force_unmount(self) -> None:
        """Best effort, for `finally`: a normal unmount, then a lazy one."""
        if not self.is_fuse or not is_mounted(self.mnt):
            return
        try:
            self.unmount()
        except Exception as e:
            console.log(f"[red]{self.name}: unmount failed ({e}); lazy unmount")
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)

    def destroy(self) -> None:
        self.force_unmount()
        if not is_mounted(self.mnt):
            shutil.rmtree(self.root, ignore_errors=True)


class PlainTarget(Target):
    name = "plain"
    is_fuse = False

    def mount(self) -> None:
        return None

    def unmount(self) -> None:
        return None


class GocryptfsTarget(Target):
    name = "gocryptfs"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.cipher = root / "cipher"
        self.proc: subprocess.Popen[bytes] | None = None

    def create(self) -> None:
        super().create()
        self.cipher.mkdir()
        run(["gocryptfs", "-init", "-q", "-passfile", str(self.pwfile), "-scryptn", "10", str(self.cipher)])

    def mount(self) -> None:
        """Run gocryptfs in the foreground as our own child, so that we can wait for it to exit."""
        log = open(self.root / "gocryptfs.log", "ab")  # noqa: SIM115 - handed to the child, closed below
        with log:
            self.proc = subprocess.Popen(["gocryptfs", "-fg", "-q", "-passfile", str(self.pwfile),
                                          str(self.cipher), str(self.mnt)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gocryptfs did not mount (see {self.root / 'gocryptfs.log'})")
            time.sleep(0.01)

    def unmount(self) -> None:
        run(["fusermount3", "-u", str(self.mnt)])
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(timeout=10)
            self.proc = None


class ClawfsTarget(Target):
    """ClawFS; `index=False` mounts with `noindex` (the filesystem alone), True as users get it by default
    (the background indexer embeds what the workload writes, on the same 2 cores)."""

    def __init__(self, root: Path, block_size: int, clawfs: str, index: bool = False) -> None:
        super().__init__(root)
        self.block_size = block_size
        self.clawfs = clawfs
        self.index = index
        self.store = root / "store.claw"
        self.name = f"clawfs-{size_label(block_size)}" + ("+index" if index else "")

    def create(self) -> None:
        super().create()
        run([self.clawfs, "mkfs", str(self.store), "--passphrase-file", str(self.pwfile),
             "--block-size", str(self.block_size)])

    def mount(self) -> None:
        opts = f"passphrase_file={self.pwfile}" + ("" if self.index else ",noindex")
        run([self.clawfs, "mount", str(self.store), str(self.mnt), "-o", opts])

    def unmount(self) -> None:
        run([self.clawfs, "umount", str(self.mnt)])


def size_label(n: int) -> str:
    for unit, factor in (("M", MIB), ("K", KIB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


# -- timing primitives ---------------------------------------------------------------------------------------
def go_cold(t: Target) -> float:
    """Unmount (flushing the daemon), drop the kernel caches, mount again; returns the unmount seconds."""
    start = time.perf_counter()
    t.unmount()
    unmount_s = time.perf_counter() - start
    sysinfo.drop_caches()
    t.mount()
    return unmount_s


def write_file(path: Path, buf: bytes, req: int) -> float:
    view = memoryview(buf)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        off = 0
        while off < len(buf):
            off += os.write(fd, view[off:off + req])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def read_file(path: Path, size: int, req: int) -> float:
    chunk = bytearray(req)
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        total = 0
        while n := os.readv(fd, [chunk]):
            total += n
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    if total != size:
        raise RuntimeError(f"{path}: read {total} bytes, expected {size}")
    return elapsed


def verify_file(path: Path, buf: bytes) -> None:
    with open(path, "rb", buffering=0) as f:
        off = 0
        while piece := f.read(MIB):
            if piece != buf[off:off + len(piece)]:
                raise RuntimeError(f"{path}: contents differ from what was written, in the MiB at {off}")
            off += len(piece)
    if off != len(buf):
        raise RuntimeError(f"{path}: {off} bytes, expected {len(buf)}")


def timed_cmd(cmd: list[str], *, capture: bool = False) -> tuple[float, bytes]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=CMD_TIMEOUT, cwd="/")
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed, proc.stdout or b""


# -- the small-file tree -------------------------------------------------------------------------------------
@dataclass
class Tree:
    """A deterministic tarball of small text files and what extracting it must produce."""

    tarball: str
    files: int
    dirs: int
    bytes: int
    needle: str
    needle_lines: int


def tree_text(rng: random.Random, vocab: list[str], size: int, needle: str | None) -> bytes:
    lines: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(vocab, k=rng.randint(6, 14)))
        if needle and len(lines) == 1:
            line = f"{line} {needle} {rng.choice(vocab)}"
        lines.append(line)
        length += len(line) + 1
    return ("\n".join(lines)[: size - 1] + "\n").encode()


def make_tree(workdir: Path, files: int, seed: int = 20240501) -> Tree:
    """`files` text files of 1-8 KiB in about files/50 leaf directories (two levels); one in 25 holds the
    needle word once."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(3000)]
    needle = "clawneedle"
    leaves = max(1, round(files / 50))
    dirs = sorted({f"tree/d{j // 10:02d}" for j in range(leaves)} | {f"tree/d{j // 10:02d}/s{j % 10:02d}"
                                                                      for j in range(leaves)})
    dirs.insert(0, "tree")
    tarball = workdir / "tree.tar"
    total = 0
    with tarfile.open(tarball, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for i in range(files):
            j = i % leaves
            body = tree_text(rng, vocab, rng.randint(1024, 8192), needle if i % 25 == 0 else None)
            info = tarfile.TarInfo(f"tree/d{j // 10:02d}/s{j % 10:02d}/f{i:05d}.txt")
            info.size, info.mode, info.mtime = len(body), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(body))
            total += len(body)
    return Tree(str(tarball), files, len(dirs), total, needle, (files + 24) // 25)


def check_tree(root: Path, tree: Tree) -> None:
    files = size = dirs = 0
    for top, dirnames, filenames in os.walk(root / "tree"):
        dirs += len(dirnames)
        for name in filenames:
            files += 1
            size += os.lstat(os.path.join(top, name)).st_size
    got, want = (files, dirs + 1, size), (tree.files, tree.dirs, tree.bytes)
    if got != want:
        raise RuntimeError(f"extracted tree has (files, dirs, bytes) {got}, expected {want}")


# -- workloads -----------------------------------------------------------------------------------------------
class Reporter:
    """Progress on stderr: one bar over all measurements, a log line per result."""

    TASK = "measurements"

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        progress.start(self.TASK, total, "starting")

    def start(self, what: str) -> None:
        self.progress.advance(self.TASK, 0, description=what)

    def done(self, what: str, seconds: float, extra: str = "") -> None:
        self.progress.log(f"{time.strftime('%H:%M:%S')} {what}: {seconds:.3f} s{extra}")
        self.progress.advance(self.TASK)


def run_streaming(t: Target, buf: bytes, rep: Reporter, *, flip: bool) -> Run:
    """Write then cold-read a new file with each request size; returns (workload seconds, extra seconds).

    Each file goes into space never used before: both are kept until the end, so the second is not written into
    the first one's freed space (which measures a store's free-space reuse, not the request size).  `flip`
    reverses the order of the request sizes: on this kind of VM disk the first cold read after a large write
    is often slower whatever the request size, so repeats alternate the order."""
    secs: dict[str, float] = {}
    extra: dict[str, float] = {}
    for label, req in reversed(REQUESTS.items()) if flip else REQUESTS.items():
        path = t.data / f"stream-{label}.bin"
        os.sync()
        rep.start(f"{t.name}: write {label}")
        secs[f"write_{label}"] = s = write_file(path, buf, req)
        rep.done(f"{t.name} write {label}", s, f", {len(buf) / s / MB:.1f} MB/s")
        extra[f"unmount_after_write_{label}"] = go_cold(t)
        rep.start(f"{t.name}: read {label}")
        secs[f"read_{label}"] = s = read_file(path, len(buf), req)
        rep.done(f"{t.name} read {label}", s, f", {len(buf) / s / MB:.1f} MB/s")
        verify_file(path, buf)
    for label in REQUESTS:
        os.unlink(t.data / f"stream-{label}.bin")
    return secs, extra


def run_small(t: Target, tree: Tree, rep: Reporter, *, cold: bool) -> Run:
    """Extract, list, grep and remove the tree; returns (workload seconds, extra seconds)."""
    secs: dict[str, float] = {}
    extra: dict[str, float] = {}
    top = str(t.data / "tree")
    steps: list[tuple[str, list[str]]] = [
        ("ls_lR", ["ls", "-lR", top]), ("grep_r", ["grep", "-r", tree.needle, top]), ("rm_rf", ["rm", "-rf", top])]
    os.sync()
    rep.start(f"{t.name}: extract")
    secs["extract"], _ = timed_cmd(["tar", "-xf", tree.tarball, "-C", str(t.data)])
    rep.done(f"{t.name} extract", secs["extract"])
    check_tree(t.data, tree)
    for name, cmd in steps:
        if cold:
            extra[f"unmount_before_{name}"] = go_cold(t)
        else:
            os.sync()
        rep.start(f"{t.name}: {name}")
        secs[name], out = timed_cmd(cmd, capture=name == "grep_r")
        rep.done(f"{t.name} {name}", secs[name])
        found = out.count(b"\n")
        if name == "grep_r" and found != tree.needle_lines:
            raise RuntimeError(f"grep found {found} lines, expected {tree.needle_lines}")
    if os.path.lexists(top):
        raise RuntimeError(f"{top} still exists after rm -rf")
    return secs, extra


def on_fresh_fs(t: Target, phase: str, work: Callable[[], Run]) -> Run:
    """Create and mount `t`, run `work`, unmount (timed as an extra) and delete it, also on failure."""
    t.create()
    try:
        t.mount()
        secs, extra = work()
        start = time.perf_counter()
        t.unmount()
        return secs, extra | {f"final_unmount_{phase}": time.perf_counter() - start}
    finally:
        t.destroy()


def run_target(t: Target, buf: bytes, tree: Tree, rep: Reporter, *, cold_small: bool,
               flip: bool) -> dict[str, Any]:
    """Streaming and small files, each on its own fresh filesystem."""
    s1, e1 = on_fresh_fs(t, "streaming", lambda: run_streaming(t, buf, rep, flip=flip))
    s2, e2 = on_fresh_fs(t, "small", lambda: run_small(t, tree, rep, cold=cold_small))
    return {"seconds": s1 | s2, "extra": e1 | e2}


# -- figures -------------------------------------------------------------------------------------------------
def summarize(runs: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """Median over repeats of one system's runs; MB/s for the streaming workloads."""
    out: dict[str, Any] = {}
    for w in STREAM_WORKLOADS + SMALL_WORKLOADS:
        values = [r["seconds"][w] for r in runs]
        sec = statistics.median(values)
        out[w] = {"seconds": round(sec, 4), "runs_seconds": [round(v, 4) for v in values]}
        if w in STREAM_WORKLOADS:
            out[w]["MBps"] = round(size / sec / MB, 1)
    extra_keys = runs[0]["extra"].keys()
    out["extra_seconds"] = {k: round(statistics.median(r["extra"][k] for r in runs), 4) for k in extra_keys}
    return out


def ratios_and_targets(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """ClawFS / gocryptfs: MB/s ratio for streaming (target >= 1.0), seconds ratio for small files (<= 2.0)."""
    ratios: dict[str, Any] = {}
    targets: dict[str, Any] = {"throughput_ratio_min": THROUGHPUT_TARGET, "small_file_ratio_max": SMALL_TARGET}
    ref = results["gocryptfs"]
    for name in (n for n in results if n.startswith("clawfs-")):
        r, t = {}, {}
        for w in STREAM_WORKLOADS:
            r[w] = round(results[name][w]["MBps"] / ref[w]["MBps"], 3)
            t[w] = {"ratio": r[w], "target": f">= {THROUGHPUT_TARGET}", "met": r[w] >= THROUGHPUT_TARGET}
        for w in SMALL_WORKLOADS:
            r[w] = round(results[name][w]["seconds"] / ref[w]["seconds"], 3)
            t[w] = {"ratio": r[w], "target": f"<= {SMALL_TARGET}", "met": r[w] <= SMALL_TARGET}
        met = sum(v["met"] for v in t.values())
        targets[name] = t | {"met_count": met, "of": len(t), "all_met": met == len(t)}
        ratios[name] = r
    return ratios, targets


def best_block_size(ratios: dict[str, Any], targets: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    """Most targets met; ties broken by the geometric mean of the speed ratios (small-file ratios inverted)."""
    def score(name: str) -> float:
        r = ratios[name]
        speed = [r[w] for w in STREAM_WORKLOADS] + [1 / r[w] for w in SMALL_WORKLOADS]
        return math.exp(sum(math.log(x) for x in speed) / len(speed))

    scores = {n: round(score(n), 3) for n in ratios}
    best = max((n for n in ratios if n in sizes), key=lambda n: (targets[n]["met_count"], scores[n]))
    return {"system": best, "block_size": sizes[best], "geomean_speed_vs_gocryptfs": scores,
            "rule": "most targets met, then highest geometric mean of speed ratios vs gocryptfs"}


def machine_details(work: Path) -> dict[str, Any]:
    return machine.machine_info(
        gocryptfs=machine.out(["gocryptfs", "-version"]).splitlines()[0],
        clawfs=machine.out([clawfs_cmd(), "--version"]), fusermount3=machine.out(["fusermount3", "--version"]),
        work_dir_device=machine.out(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", str(work)]),
        same_device_as_work=os.stat(work).st_dev == os.stat("/work").st_dev if os.path.exists("/work") else None)


def clawfs_cmd() -> str:
    local = Path(sys.prefix) / "bin" / "clawfs"
    return str(local) if local.exists() else shutil.which("clawfs") or "clawfs"


# -- output --------------------------------------------------------------------------------------------------
def values_table(report: dict[str, Any]) -> Table:
    results, cfg = report["results"], report["config"]
    table = Table(title=f"fs_throughput: {cfg['size_mib']} MiB streaming, {cfg['files']} small files "
                        f"(median of {cfg['repeat']})")
    table.add_column("workload")
    for n in results:
        table.add_column(n, justify="right")
    for w in STREAM_WORKLOADS:
        table.add_row(f"{w} MB/s", *(f"{r[w]['MBps']:.1f}" for r in results.values()))
    for w in SMALL_WORKLOADS:
        table.add_row(f"{w} s", *(f"{r[w]['seconds']:.2f}" for r in results.values()))
    return table


def ratios_table(report: dict[str, Any]) -> Table:
    ratios, targets = report["ratios"], report["targets"]
    table = Table(title="ClawFS / gocryptfs (throughput: >= 1.0 wanted; small-file time: <= 2.0 wanted)")
    table.add_column("workload")
    for n in ratios:
        table.add_column(n, justify="right")
    for w in STREAM_WORKLOADS + SMALL_WORKLOADS:
        table.add_row(w, *(("[green]" if targets[n][w]["met"] else "[red]") + f"{ratios[n][w]:.2f}" for n in ratios))
    table.add_row("targets met", *(f"{targets[n]['met_count']}/{targets[n]['of']}" for n in ratios))
    return table


def print_tables(report: dict[str, Any]) -> None:
    out = Console()
    out.print(values_table(report))
    if report["ratios"]:
        out.print(ratios_table(report))
    for name, errs in report["errors"].items():
        out.print(f"[red]{name}: {len(errs)} failed run(s): {errs[0]}")
    if best := report["best_clawfs"]:
        out.print(f"best ClawFS block size: {best['block_size']} ({best['system']}); geometric-mean speed vs "
                  f"gocryptfs: {best['geomean_speed_vs_gocryptfs']}")


def grouped_bars(ax: Any, workloads: list[str], names: list[str], value: Any, unit: str, fmt: str) -> None:
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(workloads))]
        vals = [value(n, w) for w in workloads]
        bars = ax.bar(xs, vals, width, label=n)
        ax.bar_label(bars, labels=[format(v, fmt) for v in vals], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel(unit)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, names, cfg = report["results"], list(report["results"]), report["config"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 9))
    grouped_bars(top, STREAM_WORKLOADS, names, lambda n, w: results[n][w]["MBps"], "MB/s (higher is better)",
                 ".0f")
    top.set_title(f"streaming, {cfg['size_mib']} MiB file, cold reads")
    top.legend(fontsize=8, ncols=len(names))
    grouped_bars(bottom, SMALL_WORKLOADS, names, lambda n, w: results[n][w]["seconds"],
                 "seconds (lower is better)", ".3g")
    bottom.set_yscale("log")
    bottom.set_title(f"small files: {cfg['files']} files of 1-8 KiB"
                     + (", cold before ls/grep/rm" if cfg["small_cold"] else ""))
    m = report["machine"]
    fig.suptitle(f"fs_throughput  {m['date']}  {m['nproc']} cores  kernel {m['kernel']}  "
                 f"median of {cfg['repeat']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- driver --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="Result directory.")
    p.add_argument("--size-mib", type=int, help="Streaming file size (default 512, 64 with --quick).")
    p.add_argument("--files", type=int, help="Small files in the tree (default 5000, 1000 with --quick).")
    p.add_argument("--block-sizes", default="65536", help="ClawFS block sizes, comma-separated (one column each).")
    p.add_argument("--repeat", type=int, default=1, help="Runs of everything; the median is reported.")
    p.add_argument("--quick", action="store_true", help="Small sizes for a smoke check.")
    p.add_argument("--with-index", action="store_true",
                   help="Add a ClawFS column mounted with the semantic index on (the default for users).")
    p.add_argument("--json-only", action="store_true", help="Skip the PNG plot.")
    p.add_argument("--small-warm", action="store_true",
                   help="Do not unmount and drop caches before ls -lR, grep -r and rm -rf.")
    p.add_argument("--work-dir", type=Path, help="Parent of the temporary work directory (default OUT/tmp).")
    a = p.parse_args(argv)
    a.out = a.out.resolve()  # tar -C and mounts change directories: every path must be absolute
    a.work_dir = a.work_dir.resolve() if a.work_dir else None
    a.size_mib = a.size_mib or (64 if a.quick else 512)
    a.files = a.files or (1000 if a.quick else 5000)
    try:
        a.block_sizes = [int(x) for x in a.block_sizes.split(",") if x.strip()]
    except ValueError:
        p.error("--block-sizes takes integers (bytes), e.g. 16384,65536")
    if a.repeat < 1 or a.size_mib < 1 or a.files < 25 or not a.block_sizes:
        p.error("--repeat, --size-mib must be >= 1, --files >= 25, and at least one block size is needed")
    return a


def preflight() -> None:
    if os.geteuid() != 0:
        sys.exit("fs_throughput: run as root (dropping caches and cold remounts need it)")
    for tool in ("gocryptfs", "fusermount3", "tar", "grep", "ls", "rm"):
        if not shutil.which(tool):
            sys.exit(f"fs_throughput: {tool} not found on PATH")


def make_targets(work: Path, block_sizes: list[int], rep_no: int, with_index: bool = False) -> list[Target]:
    base = work / f"run{rep_no}"
    targets: list[Target] = [PlainTarget(base / "plain"), GocryptfsTarget(base / "gocryptfs")]
    targets += [ClawfsTarget(base / f"clawfs-{bs}", bs, clawfs_cmd()) for bs in block_sizes]
    if with_index:
        targets.append(ClawfsTarget(base / f"clawfs-{block_sizes[0]}-index", block_sizes[0], clawfs_cmd(), True))
    return targets


def measure(a: argparse.Namespace, work: Path) -> dict[str, list[dict[str, Any]]]:
    """Every repeat runs every system on a fresh filesystem, in order: plain, gocryptfs, ClawFS columns."""
    console.log(f"generating {a.size_mib} MiB of random data and a {a.files}-file tarball")
    buf = os.urandom(a.size_mib * MIB)
    tree = make_tree(work, a.files)
    runs: dict[str, list[dict[str, Any]]] = {}
    steps_per_target = len(STREAM_WORKLOADS) + len(SMALL_WORKLOADS)
    total = a.repeat * (2 + len(a.block_sizes) + a.with_index) * steps_per_target
    with Progress(transient=True) as progress:
        rep = Reporter(progress, total)
        for rep_no in range(a.repeat):
            for t in make_targets(work, a.block_sizes, rep_no, a.with_index):
                try:
                    result = run_target(t, buf, tree, rep, cold_small=not a.small_warm, flip=rep_no % 2 == 1)
                except Exception as e:  # one broken system must not cost the others' figures
                    console.print_exception(max_frames=4)
                    console.log(f"[red]{t.name}: run {rep_no + 1} failed: {e}")
                    result = {"error": f"{type(e).__name__}: {e}"}
                runs.setdefault(t.name, []).append(result)
    return runs


def build_report(a: argparse.Namespace, work: Path, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    size = a.size_mib * MIB
    ok = {name: [r for r in rs if "error" not in r] for name, rs in runs.items()}
    errors = {name: [r["error"] for r in rs if "error" in r] for name, rs in runs.items()}
    results = {name: summarize(rs, size) for name, rs in ok.items() if rs}
    ratios, targets = ratios_and_targets(results) if "gocryptfs" in results else ({}, {})
    sizes = {f"clawfs-{size_label(bs)}": bs for bs in a.block_sizes}
    return {
        "machine": machine_details(work),
        "config": {"size_mib": a.size_mib, "files": a.files, "repeat": a.repeat, "block_sizes": a.block_sizes,
                   "quick": a.quick, "small_cold": not a.small_warm, "requests": REQUESTS,
                   "request_order": "1MiB first in runs 1, 3, ...; 128KiB first in runs 2, 4, ...",
                   "units": {"MBps": "10^6 bytes per second", "seconds": "wall-clock, median of repeats"}},
        "results": results, "ratios": ratios, "targets": targets,
        "best_clawfs": best_block_size(ratios, targets, sizes) if ratios else None,
        "errors": {name: e for name, e in errors.items() if e},
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    preflight()
    a.out.mkdir(parents=True, exist_ok=True)
    parent = a.work_dir or a.out / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fs_throughput-", dir=parent))
    try:
        runs = measure(a, work)
        report = build_report(a, work, runs)
    finally:
        if not mounts.mounts_under(str(work)):
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.log(f"[red]left {work} in place: still mounted there: {mounts.mounts_under(str(work))}")
        with contextlib.suppress(OSError):
            parent.rmdir()  # only if empty
    (a.out / "fs_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    if not a.json_only:
        plot(report, a.out / "fs_throughput.png")
    print_tables(report)
    console.log(f"wrote {a.out / 'fs_throughput.json'}" + ("" if a.json_only else " and fs_throughput.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
