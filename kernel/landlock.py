"""Landlock through its raw syscalls (444-446): detect the ABI, then confine this process and its children
to read-only access beneath some paths, read-write beneath others, and TCP connect to given ports only.

What a lower ABI loses (each is still refused by the other layers where they can):
  1: no REFER (files cannot be linked or renamed across directories at all, so that is refused, not open),
  <3: no TRUNCATE control, <4: no TCP bind/connect control (the jail's netns is then the only network wall),
  <5: no device ioctl control, <6: no scoping of abstract Unix sockets and signals, 7: audit logging flags."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

from . import syscall

CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # rights that apply to a non-directory
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
READ_WRITE_NO_DEV = ~(MAKE_CHAR | MAKE_BLOCK | EXECUTE)  # a writable place may not hold devices or run code


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def abi_version() -> int:
    """The Landlock ABI of the running kernel, 0 when it is absent or disabled (EOPNOTSUPP/ENOSYS)."""
    try:
        return syscall.syscall("landlock_create_ruleset", None, ctypes.c_size_t(0),
                               ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError:
        return 0


def fs_rights(abi: int) -> int:
    return FS_BY_ABI[max(k for k in FS_BY_ABI if k <= abi)]


@dataclass
class Policy:
    """What stays reachable once restrict() has run; everything else handled at this ABI is refused."""
    read_only: list[str] = field(default_factory=list)
    read_write: list[str] = field(default_factory=list)
    read_write_files: list[str] = field(default_factory=list)  # single files such as /dev/null
    tcp_connect_ports: list[int] = field(default_factory=list)
    scope: bool = True  # no signals to, and no abstract sockets of, processes outside the domain


def _add_path(ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(path):
            access &= FILE_ONLY
        rule = _PathBeneath(access, fd)
        syscall.syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0), path=path)
    finally:
        os.close(fd)


def restrict(policy: Policy, abi: int | None = None) -> int:
    """Confine the calling thread (and all it runs next) to the policy; needs no_new_privs (or CAP_SYS_ADMIN).
    Returns the ABI used. Raises OSError when Landlock is absent."""
    abi = abi_version() if abi is None else abi
    if abi < 1:
        raise OSError("Landlock is not available on this kernel (needs Linux >= 5.13 with lsm=landlock)")
    handled = fs_rights(abi)
    attr = _RulesetAttr(handled, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 and policy.scope else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = syscall.syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(size),
                              ctypes.c_uint32(0))
    try:
        for path in policy.read_only:
            _add_path(ruleset, path, READ_ONLY & handled)
        for path in policy.read_write:
            _add_path(ruleset, path, READ_WRITE_NO_DEV & handled)
        for path in policy.read_write_files:
            _add_path(ruleset, path, (READ_FILE | WRITE_FILE) & handled)
        if abi >= 4:
            for port in policy.tcp_connect_ports:
                rule = _NetPort(NET_CONNECT_TCP, port)
                syscall.syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(RULE_NET_PORT),
                                ctypes.byref(rule), ctypes.c_uint32(0))
        syscall.syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return abi
