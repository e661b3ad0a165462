"""What every benchmark's JSON records about the machine and the code it measured (imported by the scripts
beside it, which Python runs with this directory first on sys.path)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def out(cmd: list[str]) -> str:
    """A command's stdout, stripped; "?" when it cannot run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_info(**extra: Any) -> dict[str, Any]:
    """Date, host, CPU, memory, kernel, Python, the git commit (and whether the code measured differs from it),
    the load average at the end, and `extra`."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "hostname": platform.node(),
        "nproc": os.cpu_count(), "cpu": cpu,
        "memory": Path("/proc/meminfo").read_text().split("\n", 1)[0].split(":")[1].strip(),
        "kernel": platform.release(), "python": platform.python_version(),
        "clawfs_git": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "clawfs_git_dirty": bool(out(["git", "-C", str(REPO), "status", "--porcelain", "--", "clawfs", "mountd",
                                      "kernel"])),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        **extra,
    }
