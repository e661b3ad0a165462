"""Mounts that build a jail's new root: a private mount tree, a small tmpfs root, read-only binds of the
runtime, sized tmpfs, /proc, a /dev of null/zero/urandom only, and pivot_root into it.

The root is assembled by real root in a private mount namespace, before the jail drops to its unprivileged
uid; the user namespace created after that copies the tree as *locked* mounts (read-only, nosuid, nodev
cannot be cleared, and no mount can be lifted to show what it covers), which is the property the jail needs.
(kernel/mounts.py reads the mount table; this module changes it.)"""

from __future__ import annotations

import ctypes
import os
import stat

from . import syscall

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

DEVICES = ("null", "zero", "urandom")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    syscall.call("mount", ctypes.c_char_p(source.encode() if source else None), ctypes.c_char_p(target.encode()),
                 ctypes.c_char_p(fstype.encode() if fstype else None), ctypes.c_ulong(flags),
                 ctypes.c_char_p(data.encode() if data else None), path=target)


def make_private() -> None:
    """Stop mount events crossing between our (new) mount namespace and the host's, both ways."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_tmpfs(target: str, *, size: int, mode: int = 0o755, noexec: bool = True) -> None:
    flags = MS_NOSUID | MS_NODEV | (MS_NOEXEC if noexec else 0)
    _mount("tmpfs", target, "tmpfs", flags, f"size={size},mode={mode:o}")


def _mountpoint(source: str, target: str) -> None:
    # A bind needs a target of the same kind: a directory for a directory, a file for anything else.
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            with open(target, "w"):
                pass


def bind(source: str, target: str, *, readonly: bool, recursive: bool = False, extra: int = 0) -> None:
    """Bind source at target; read-only means a second remount (the first bind ignores MS_RDONLY). Not
    recursive by default: a remount reaches only the top mount, and a submount left writable would be a hole."""
    _mountpoint(source, target)
    _mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly or extra:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | (MS_RDONLY if readonly else 0) | extra)


def remount_readonly(target: str, flags: int = MS_NOSUID | MS_NODEV) -> None:
    """Make a mount (e.g. the tmpfs root, once filled) read-only."""
    _mount(None, target, None, MS_REMOUNT | MS_RDONLY | flags)


def mount_proc(target: str) -> None:
    """A procfs of the caller's pid namespace (call it from inside the new one)."""
    os.makedirs(target, exist_ok=True)
    _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def bind_devices(dev_dir: str) -> None:
    """/dev with null, zero and urandom only: binds of the host's nodes (no mknod in a user namespace)."""
    os.makedirs(dev_dir, exist_ok=True)
    for name in DEVICES:
        host = f"/dev/{name}"
        if not stat.S_ISCHR(os.stat(host).st_mode):
            raise OSError(f"{host} is not a character device")
        bind(host, os.path.join(dev_dir, name), readonly=False, recursive=False, extra=MS_NOSUID | MS_NOEXEC)


def pivot_into(new_root: str) -> None:
    """Make new_root (a mount point) our "/" and detach the old root entirely (pivot_root(".", ".") stacks
    the old root on top of the new one, so one lazy unmount of "." removes it)."""
    os.chdir(new_root)
    syscall.syscall("pivot_root", ctypes.c_char_p(b"."), ctypes.c_char_p(b"."), path=new_root)
    syscall.call("umount2", ctypes.c_char_p(b"."), ctypes.c_int(MNT_DETACH), path="old root")
    os.chdir("/")


def umount(target: str, *, lazy: bool = True) -> None:
    syscall.call("umount2", ctypes.c_char_p(target.encode()), ctypes.c_int(MNT_DETACH if lazy else 0),
                 path=target)
