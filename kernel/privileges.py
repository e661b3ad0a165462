"""Giving up privilege for good: every capability (effective, permitted, inheritable, bounding and ambient),
locked securebits, no_new_privs, no core dumps, and resource limits."""

from __future__ import annotations

import ctypes
import resource
from dataclasses import dataclass

from . import syscall

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP, SECBIT_KEEP_CAPS_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE, each with its
# lock: uid 0 regains nothing on exec, and nothing can undo it.
SECUREBITS_LOCKED = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _prctl(option: int, arg2: int = 0) -> int:
    return syscall.call("prctl", ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                        ctypes.c_ulong(0), ctypes.c_ulong(0))


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def drop_all_capabilities() -> None:
    """Empty the bounding and ambient sets (needs CAP_SETPCAP, so first), lock securebits, then clear
    effective, permitted and inheritable."""
    _prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED)
    for cap in range(last_cap() + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    syscall.call("capset", ctypes.byref(header), data)


def effective_capabilities(pid: str = "self") -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process as integers (from /proc/PID/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                out[key] = int(value.strip(), 16)
    return out


def set_no_new_privs() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def no_new_privs() -> bool:
    return _prctl(PR_GET_NO_NEW_PRIVS) == 1


def forbid_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@dataclass(frozen=True)
class Rlimits:
    """Per-process limits beneath the cgroup's: open files, file size, stack; core dumps always off."""
    nofile: int = 1024
    fsize: int = 1 << 30
    stack: int = 8 << 20


def _lower(which: int, value: int) -> None:
    # Only ever lower: raising a hard limit needs CAP_SYS_RESOURCE in the initial user namespace.
    _, hard = resource.getrlimit(which)
    cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (cap, cap))


def apply_rlimits(limits: Rlimits) -> None:
    forbid_core_dumps()
    _lower(resource.RLIMIT_NOFILE, limits.nofile)
    _lower(resource.RLIMIT_FSIZE, limits.fsize)
    _lower(resource.RLIMIT_STACK, limits.stack)
