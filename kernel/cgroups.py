"""Resource limits for a jail through cgroups: a delegated v2 hierarchy where one exists (memory.max,
pids.max, cpu.weight), else v1's memory, pids and cpu controllers (this machine is hybrid: its v2 tree offers
only hugetlb). A jail's cgroup is made beneath the caller's own (so any limit on the caller still holds) and
afterwards says which limit, if any, stopped a process."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field

ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Limits:
    memory: int = 2 << 30
    pids: int = 256
    cpu_weight: int = 20  # v2 scale 1..10000, default 100; v1 cpu.shares gets weight * 1024 / 100


@dataclass
class Layout:
    version: int  # 2 (delegated v2 with memory and pids) or 1 (v1 controllers), 0 none usable
    why_not: str = ""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _own_path(controller: str) -> str:
    """The caller's cgroup for a v1 controller ("" for the v2 line)."""
    for line in _read("/proc/self/cgroup").splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(",") or (not controller and not names):
            return path
    return "/"


def _v2_root() -> str | None:
    for candidate in (ROOT, f"{ROOT}/unified"):
        if os.path.exists(f"{candidate}/cgroup.controllers"):
            return candidate
    return None


def detect() -> Layout:
    v2 = _v2_root()
    if v2:
        own = f"{v2}{_own_path('')}".rstrip("/")
        controllers = _read(f"{own}/cgroup.controllers").split()
        if {"memory", "pids"} <= set(controllers) and os.access(own, os.W_OK):
            return Layout(2)
    if all(os.access(f"{ROOT}/{c}{_own_path(c)}", os.W_OK) for c in ("memory", "pids")):
        return Layout(1)
    return Layout(0, "no writable cgroup v2 tree with memory and pids, nor v1 memory and pids controllers: run "
                     "as root or under a systemd unit with Delegate=yes")


@dataclass
class JailCgroup:
    """The cgroup(s) of one jail: one v2 directory, or one directory per v1 controller."""
    version: int
    dirs: dict[str, str] = field(default_factory=dict)  # controller ("" for v2) -> directory

    def join(self, pid: int = 0) -> None:
        for d in self.dirs.values():
            _write(f"{d}/cgroup.procs", str(pid or os.getpid()))

    def procs(self) -> list[int]:
        d = next(iter(self.dirs.values()))
        with contextlib.suppress(FileNotFoundError):
            return [int(x) for x in _read(f"{d}/cgroup.procs").split()]
        return []

    def stopped_by(self) -> list[str]:
        """Which limits were hit: "memory" (an OOM kill) and/or "pids" (a fork refused)."""
        hit = []
        if self.version == 2:
            d = self.dirs[""]
            if _counter(f"{d}/memory.events", "oom_kill") > 0:
                hit.append("memory")
            if _counter(f"{d}/pids.events", "max") > 0:
                hit.append("pids")
        else:
            if _counter(f"{self.dirs['memory']}/memory.oom_control", "oom_kill") > 0:
                hit.append("memory")
            if _counter(f"{self.dirs['pids']}/pids.events", "max") > 0:
                hit.append("pids")
        return hit

    def kill_all(self, rounds: int = 50) -> None:
        """SIGKILL everything left (v2: cgroup.kill; v1: a bounded loop, since forks may race the kill)."""
        if self.version == 2 and os.path.exists(f"{self.dirs['']}/cgroup.kill"):
            _write(f"{self.dirs['']}/cgroup.kill", "1")
            return
        for _ in range(rounds):
            pids = self.procs()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                os.rmdir(d)

    def set_cpu_weight(self, weight: int) -> None:
        """Change the CPU weight (v2 cpu.weight; v1 cpu.shares, as `create` converts it) of a live group."""
        if self.version == 2:
            _write(f"{self.dirs['']}/cpu.weight", str(weight))
        elif "cpu" in self.dirs:
            _write(f"{self.dirs['cpu']}/cpu.shares", str(max(2, weight * 1024 // 100)))


def group_of(pid: int, prefix: str) -> JailCgroup | None:
    """The group of process `pid` (as this process's namespaces see it) if its name starts with `prefix`: its
    v2 directory, else its v1 controllers' directories; None if it is in no such group or is gone."""
    try:
        lines = _read(f"/proc/{pid}/cgroup").splitlines()
    except OSError:
        return None
    v1: dict[str, str] = {}
    for line in lines:
        _, names, path = line.split(":", 2)
        if not path.rsplit("/", 1)[-1].startswith(prefix):
            continue
        if not names:
            return JailCgroup(2, {"": f"{_v2_root() or ROOT}{path}"})
        for controller in ("memory", "pids", "cpu"):
            if controller in names.split(","):
                v1[controller] = f"{ROOT}/{controller}{path}"
    return JailCgroup(1, v1) if v1 else None


def _counter(path: str, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def create(name: str, limits: Limits, layout: Layout | None = None) -> JailCgroup:
    layout = layout or detect()
    if layout.version == 2:
        v2 = _v2_root() or ROOT
        parent = f"{v2}{_own_path('')}".rstrip("/")
        # Controllers must be enabled in the parent's subtree before a child can use them.
        with contextlib.suppress(OSError):
            _write(f"{parent}/cgroup.subtree_control", "+memory +pids +cpu")
        d = f"{parent}/{name}"
        os.makedirs(d, exist_ok=True)
        _write(f"{d}/memory.max", str(limits.memory))
        with contextlib.suppress(OSError):
            _write(f"{d}/memory.swap.max", "0")
        _write(f"{d}/pids.max", str(limits.pids))
        with contextlib.suppress(OSError):
            _write(f"{d}/cpu.weight", str(limits.cpu_weight))
        return JailCgroup(2, {"": d})
    if layout.version == 1:
        dirs = {}
        for controller in ("memory", "pids", "cpu"):
            d = f"{ROOT}/{controller}{_own_path(controller)}".rstrip("/") + f"/{name}"
            if controller == "cpu" and not os.path.isdir(os.path.dirname(d)):
                continue
            os.makedirs(d, exist_ok=True)
            dirs[controller] = d
        _write(f"{dirs['memory']}/memory.limit_in_bytes", str(limits.memory))
        with contextlib.suppress(OSError):  # swap accounting may be off; then swap is simply not counted
            _write(f"{dirs['memory']}/memory.memsw.limit_in_bytes", str(limits.memory))
        _write(f"{dirs['pids']}/pids.max", str(limits.pids))
        if "cpu" in dirs:
            _write(f"{dirs['cpu']}/cpu.shares", str(max(2, limits.cpu_weight * 1024 // 100)))
        return JailCgroup(1, dirs)
    raise OSError(f"cgroups: {layout.why_not}")
