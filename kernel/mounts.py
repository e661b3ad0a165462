"""The kernel's mount table (/proc/self/mountinfo), mountpoint checks, and unmounting (fusermount3 / umount)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class MountEntry:
    dev: str  # "major:minor"
    mountpoint: str
    fstype: str
    source: str
    options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[MountEntry]:
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            lf, rf = left.split(), right.split()
            if len(lf) < 5 or len(rf) < 2:
                continue
            entries.append(MountEntry(lf[2], _unescape(lf[4]), rf[0], _unescape(rf[1]), lf[5] if len(lf) > 5 else ""))
    return entries


def find_by_mountpoint(path: str) -> MountEntry | None:
    real = os.path.realpath(path)
    found = [m for m in mounts() if m.mountpoint == real]
    return found[-1] if found else None


def find_by_source(source: str, fstype: str) -> list[MountEntry]:
    real = os.path.realpath(source)
    return [m for m in mounts() if m.source == real and m.fstype == fstype]


def is_mountpoint(path: str) -> bool:
    return find_by_mountpoint(path) is not None


def mounts_under(path: str) -> list[str]:
    """The mountpoints strictly below `path` (a directory about to be removed must have none left)."""
    top = os.path.realpath(path).rstrip("/") + "/"
    return [m.mountpoint for m in mounts() if m.mountpoint.startswith(top)]


def set_readahead(mountpoint: str, kib: int) -> bool:
    """Raise the kernel's read-ahead for a mount (FUSE starts at 128 KiB, so cold streaming reads arrive in
    128 KiB requests).  Needs root; reads /proc rather than stat()ing the mount, which a FUSE daemon that is not
    serving yet must never do.  Returns whether it took effect."""
    # `mountpoint` must already be canonical: realpath() would lstat() the mount and hang on ourselves.
    entry = next((m for m in reversed(mounts()) if m.mountpoint == mountpoint), None)
    if entry is None:
        return False
    try:
        with open(f"/sys/class/bdi/{entry.dev}/read_ahead_kb", "w") as f:
            f.write(str(kib))
        return True
    except OSError:
        return False


def unmount(mountpoint: str) -> str | None:
    """Unmount a FUSE mount: `fusermount3 -u` for an unprivileged user, `umount` for root.  None when it
    worked, else the tool's last line of complaint."""
    tool = ["fusermount3", "-u", mountpoint] if os.geteuid() else ["umount", mountpoint]
    proc = subprocess.run(tool, capture_output=True, text=True)
    if not proc.returncode:
        return None
    return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
