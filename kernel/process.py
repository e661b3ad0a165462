"""Process hardening for a daemon that holds key material: no core dumps, not ptrace-attachable by peers."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import threading

PR_SET_DUMPABLE = 4


def lower_thread_priority(nice: int = 10) -> None:
    """Make the calling thread (and threads it starts later, e.g. torch's pool) yield the CPU to the rest of
    the process: on Linux every thread has its own nice value."""
    with contextlib.suppress(OSError):  # best effort: an unprivileged user may still lower its own priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def forbid_core_dumps() -> None:
    """Keep the master key out of core files: RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (also blocks ptrace by
    non-root peers and hides /proc/PID/mem)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def detach_stdio() -> None:
    """Point fds 0-2 at /dev/null: a daemon that outlived its terminal must not write into (or read from) it."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
