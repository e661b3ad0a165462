"""Process hardening for a daemon that holds key material: no core dumps, not ptrace-attachable by peers."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource

PR_SET_DUMPABLE = 4


def forbid_core_dumps() -> None:
    """Keep the master key out of core files: RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (also blocks ptrace by
    non-root peers and hides /proc/PID/mem)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
