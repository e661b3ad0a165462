"""OS probes of the machine itself: the CPU's model and flags (/proc/cpuinfo), its memory (/proc/meminfo), the
CPU time the whole machine and this process have spent (/proc/stat, times(2)), the load average, and the facts
a benchmark's JSON records about the host; and the one write, dropping the page cache for a cold-cache
benchmark.  Every such probe of ClawFS, its tuner and its benchmarks lives here
(the house rule: /proc and /sys reads only in kernel/); each parser is a pure function of the file's text so a
unit test can feed it any machine's file."""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")


# ---- CPU model and flags -------------------------------------------------------------------------------------


def parse_cpuinfo_field(text: str, name: str) -> str | None:
    """The value of the first `name : value` line of a /proc/cpuinfo text (the first CPU's), None if absent."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _cpuinfo() -> str:
    try:
        return (PROC / "cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name ("?" where /proc/cpuinfo does not say, e.g. on some ARM kernels)."""
    return parse_cpuinfo_field(_cpuinfo(), "model name") or "?"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The first CPU's feature flags (empty where /proc/cpuinfo cannot be read); fixed for the process's life."""
    return frozenset((parse_cpuinfo_field(_cpuinfo(), "flags") or "").split())


def native_bf16() -> bool:
    """Does this CPU multiply bfloat16 natively (AMX-BF16 or AVX512-BF16)?  Elsewhere bfloat16 is emulated,
    slower than float32."""
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_count() -> int:
    """Logical CPUs of the machine (at least 1)."""
    return os.cpu_count() or 1


# ---- memory --------------------------------------------------------------------------------------------------


def parse_meminfo_total(text: str) -> str:
    """MemTotal of a /proc/meminfo text as the kernel writes it ("24567890 kB"), "?" if absent."""
    return parse_cpuinfo_field(text, "MemTotal") or "?"


def memory_total() -> str:
    """The machine's memory as /proc/meminfo states it ("24567890 kB"), "?" where it cannot be read."""
    try:
        return parse_meminfo_total((PROC / "meminfo").read_text())
    except OSError:
        return "?"


def parse_status_kib(text: str) -> dict[str, int]:
    """The memory figures (kB) of a /proc/PID/status text: VmRSS, VmHWM, RssAnon, RssFile, RssShmem..."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        fields = value.split()
        if sep and len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            out[key] = int(fields[0])
    return out


def process_memory_kib(pid: int) -> dict[str, int]:
    """Process `pid`'s memory figures in KiB (RssAnon: its own memory; RssFile: file pages it maps, e.g. a
    store read through mmap, which is the page cache); {} once the process has gone."""
    try:
        return parse_status_kib((PROC / str(pid) / "status").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return {}


# ---- CPU time: the machine's and this process's --------------------------------------------------------------


def parse_stat_busy(text: str, ticks_per_s: int) -> float | None:
    """CPU seconds all cores have been busy since boot (user, nice, system, irq, softirq, steal: idle and
    iowait excluded) from a /proc/stat text; None if its first line is not the `cpu` total."""
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        return None
    try:
        ticks = [int(x) for x in fields[1:9]]
    except ValueError:
        return None
    return (sum(ticks[:3]) + sum(ticks[5:8])) / ticks_per_s


def busy_cpu_seconds() -> float | None:
    """CPU seconds all cores have been busy since boot; None where /proc/stat cannot be read."""
    try:
        with open(PROC / "stat") as f:
            first = f.readline()
    except OSError:
        return None
    return parse_stat_busy(first, os.sysconf("SC_CLK_TCK"))


def own_cpu_seconds(*, children: bool = False) -> float:
    """CPU seconds (user + system) this process has spent; with `children`, also its waited-for children."""
    t = os.times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


@dataclass(frozen=True)
class CpuSample:
    """One look at the machine's and this process's CPU time, to subtract from a later look."""

    at: float  # time.monotonic()
    busy_s: float | None  # machine-wide busy seconds since boot; None where /proc/stat cannot be read
    own_s: float  # this process's CPU seconds (with its children if sampled so)


def sample_cpu(*, children: bool = False) -> CpuSample:
    """The CPU time now (`children`: count this process's waited-for children as its own)."""
    return CpuSample(time.monotonic(), busy_cpu_seconds(), own_cpu_seconds(children=children))


def other_cores(before: CpuSample, after: CpuSample) -> float:
    """Cores other processes kept busy between two samples (machine busy time less this process's), 0 if
    either sample could not read /proc/stat or no time passed."""
    wall = after.at - before.at
    if before.busy_s is None or after.busy_s is None or wall <= 0:
        return 0.0
    return max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall


def other_cores_over(interval: float = 1.0, *, children: bool = True) -> float:
    """Cores other processes keep busy, measured over the next `interval` seconds (blocks that long)."""
    before = sample_cpu(children=children)
    time.sleep(interval)  # the measuring window itself, not a wait for work
    return other_cores(before, sample_cpu(children=children))


class OtherLoad:
    """Cores other processes kept busy since the previous look; looks at most every `every` seconds (cheap
    enough to ask before every model call), 0 where /proc/stat cannot be read.  Thread-safe."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._last: CpuSample | None = None
        self._cores = 0.0

    def cores(self) -> float:
        with self._lock:
            if self._last is None or time.monotonic() - self._last.at >= self.every:
                now = sample_cpu()
                if self._last is not None:
                    self._cores = other_cores(self._last, now)
                self._last = now
            return self._cores


def drop_caches(*, proc: Path = PROC) -> None:
    """Write what is dirty, then drop the kernel's page cache, dentries and inodes (`sync; echo 3 >
    /proc/sys/vm/drop_caches`): the next reads come from the disk.  Needs root (PermissionError otherwise)."""
    os.sync()
    (proc / "sys" / "vm" / "drop_caches").write_text("3\n")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


# ---- what a benchmark records about the host -----------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """Host, CPU model and count, memory, kernel release, platform string and Python version: what a
    benchmark's JSON records so that figures from different machines are never compared unknowingly."""
    return {"hostname": platform.node(), "nproc": os.cpu_count(), "cpu": cpu_model(), "memory": memory_total(),
            "kernel": platform.release(), "platform": platform.platform(), "python": platform.python_version()}
