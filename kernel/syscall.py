"""One handle on libc for the jail's primitives: raw syscalls by number (x86_64) and errno-checked calls.

Python 3.11 has no os.unshare/os.setns/pivot_root and no Landlock or mount_setattr bindings, so the kernel/
modules that need them go through here; nothing else in ClawFS calls libc directly for these."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
from typing import Any

# x86_64 numbers of the syscalls glibc 2.36 has no wrapper for (or whose wrapper we do not trust to exist).
SYSCALLS_X86_64 = {
    "pivot_root": 155,
    "setns": 308,
    "open_tree": 428,
    "move_mount": 429,
    "mount_setattr": 442,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}


class UnsupportedArch(OSError):
    """The jail's raw syscall numbers are known for x86_64 only."""


@functools.cache
def libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    return ctypes.CDLL(name, use_errno=True)


def check(ret: int, what: str, path: str | None = None) -> int:
    """Raise OSError(errno) for a -1 return, naming the call."""
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def number(name: str) -> int:
    if platform.machine() != "x86_64":
        raise UnsupportedArch(0, f"syscall {name}: numbers known for x86_64 only, not {platform.machine()}")
    return SYSCALLS_X86_64[name]


def syscall(name: str, *args: Any, path: str | None = None) -> int:
    """A raw syscall by name; arguments are ctypes values (c_int, c_char_p, pointers)."""
    fn = libc().syscall
    fn.restype = ctypes.c_long
    return check(int(fn(ctypes.c_long(number(name)), *args)), name, path)


def call(fname: str, *args: Any, path: str | None = None) -> int:
    """A libc function returning int, -1 on error."""
    fn = getattr(libc(), fname)
    fn.restype = ctypes.c_int
    return check(int(fn(*args)), fname, path)
