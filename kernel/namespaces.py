"""Linux namespaces: unshare, setns, the user namespace's uid/gid maps, dropping to an unprivileged host uid.

The jail drops to a host uid and gid that are never 0 *before* it creates its user namespace: a user namespace
made by real root and mapped to 0 can still remount its read-only binds writable (measured on this machine).
An unprivileged process may map only its own uid and gid, one each, after writing "deny" to setgroups; that
is all the jail needs."""

from __future__ import annotations

import ctypes
import os
import socket

from . import syscall

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# Every namespace flag: what the seccomp policy refuses in clone/unshare/setns.
ALL_NAMESPACES = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
                  | CLONE_NEWNET | CLONE_NEWTIME)
JAIL_NAMESPACES = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
                   | CLONE_NEWCGROUP)


def unshare(flags: int) -> None:
    syscall.call("unshare", ctypes.c_int(flags))


def setns(fd: int, nstype: int = 0) -> None:
    syscall.syscall("setns", ctypes.c_int(fd), ctypes.c_int(nstype))


def drop_to(uid: int, gid: int) -> None:
    """Become host uid/gid for good (real, effective and saved), with no supplementary groups. Refuses 0:
    the jail's host identity must not be root's."""
    if uid == 0 or gid == 0:
        raise ValueError("the jail's host uid and gid must not be 0")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # Changing euid made us non-dumpable, which makes /proc/self/{uid,gid}_map root's: take it back so we can
    # write our own maps (RLIMIT_CORE 0 still keeps core dumps off).
    syscall.call("prctl", ctypes.c_int(4), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                 ctypes.c_ulong(0))


def write_id_maps(inside_uid: int, host_uid: int, inside_gid: int, host_gid: int, pid: str = "self") -> None:
    """Map one uid and one gid of a new user namespace (ours, by default) onto host ids."""
    base = f"/proc/{pid}"
    with open(f"{base}/setgroups", "w") as f:
        f.write("deny")
    with open(f"{base}/uid_map", "w") as f:
        f.write(f"{inside_uid} {host_uid} 1\n")
    with open(f"{base}/gid_map", "w") as f:
        f.write(f"{inside_gid} {host_gid} 1\n")


def set_hostname(name: str) -> None:
    raw = name.encode()
    syscall.call("sethostname", ctypes.c_char_p(raw), ctypes.c_size_t(len(raw)))


def hostname() -> str:
    return socket.gethostname()


def current_ids(pid: str = "self") -> dict[str, str]:
    """The namespace inode links of a process (/proc/PID/ns/*), to tell namespaces apart."""
    out = {}
    for name in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup"):
        try:
            out[name] = os.readlink(f"/proc/{pid}/ns/{name}")
        except OSError:
            continue
    return out
