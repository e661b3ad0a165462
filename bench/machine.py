"""What every benchmark's JSON records about the machine (kernel/sysinfo.py's facts) and about the code it
measured (the git commit, and whether the measured code differs from it)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

from kernel import sysinfo

REPO = Path(__file__).resolve().parent.parent


def out(cmd: list[str]) -> str:
    """A command's stdout, stripped; "?" when it cannot run (a tool's version, the work directory's device)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_info(**extra: Any) -> dict[str, Any]:
    """Date, host, CPU, memory, kernel, platform, Python, the git commit (and whether the code measured differs
    from it), the load average at the end, and `extra`."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **sysinfo.machine_facts(),
        "clawfs_git": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "clawfs_git_dirty": bool(out(["git", "-C", str(REPO), "status", "--porcelain", "--", "clawfs", "mountd",
                                      "kernel"])),
        "loadavg_at_end": sysinfo.load_average(),
        **extra,
    }


def write_report(out_dir: Path, name: str, report: dict[str, Any], *, echo: bool = True) -> Path:
    """Write ``report`` as ``OUT_DIR/NAME.json`` (indented, one trailing newline) and, with ``echo``, print it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    path = out_dir / f"{name}.json"
    path.write_text(text)
    if echo:
        print(text, end="")
    return path
