"""A seccomp-BPF filter loaded through libseccomp (pyseccomp): an allowlist whose default answer is an errno.

The policy itself (which syscalls, which argument checks) is data in sandbox/seccomp_policy.py; this module
only turns it into a filter. Loading it sets no_new_privs (libseccomp's default) and applies to every thread
started afterwards and to every program the process executes."""

from __future__ import annotations

import errno
from dataclasses import dataclass

import pyseccomp


@dataclass(frozen=True)
class ArgCheck:
    """(argument[index] & mask) == value"""
    index: int
    mask: int
    value: int


@dataclass(frozen=True)
class Allow:
    """Allow a syscall always (no conditions), or when every check of any one group holds."""
    syscall: str
    when: tuple[tuple[ArgCheck, ...], ...] = ()


@dataclass(frozen=True)
class Refuse:
    """Answer a syscall with an errno even though the default would too: documents why, and lets clone3 say
    ENOSYS so libc falls back to clone, whose flags a filter can read."""
    syscall: str
    errno: int
    why: str


def available() -> bool:
    """True when this kernel takes seccomp filters (libseccomp reports its API level >= 1)."""
    try:
        return bool(pyseccomp.get_api() >= 1)
    except (OSError, AttributeError):
        return False


def build(allow: list[Allow], refuse: list[Refuse], default_errno: int = errno.EPERM) -> \
        tuple[pyseccomp.SyscallFilter, list[str]]:
    """The filter, and the names this libseccomp does not know (skipped: they cannot be called anyway)."""
    f = pyseccomp.SyscallFilter(pyseccomp.ERRNO(default_errno))
    unknown: list[str] = []
    for rule in allow:
        try:
            if not rule.when:
                f.add_rule(pyseccomp.ALLOW, rule.syscall)
            for group in rule.when:
                args = [pyseccomp.Arg(c.index, pyseccomp.MASKED_EQ, c.mask, c.value) for c in group]
                f.add_rule(pyseccomp.ALLOW, rule.syscall, *args)
        except (OSError, ValueError, RuntimeError):
            unknown.append(rule.syscall)
    for r in refuse:
        if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, r.syscall) < 0:
            unknown.append(r.syscall)
        elif r.errno != default_errno:  # libseccomp refuses a rule that repeats the default action
            f.add_rule(pyseccomp.ERRNO(r.errno), r.syscall)
    return f, unknown


def load(allow: list[Allow], refuse: list[Refuse], default_errno: int = errno.EPERM) -> list[str]:
    """Install the filter on the calling process; returns the syscall names skipped as unknown."""
    f, unknown = build(allow, refuse, default_errno)
    f.load()
    return unknown
