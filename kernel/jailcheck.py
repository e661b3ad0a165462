"""What the host allows a jail: user namespaces for an unprivileged uid, seccomp, Landlock, cgroups. Each
missing layer comes with its exact cause and the fix."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import cgroups, landlock, seccomp


@dataclass(frozen=True)
class Layer:
    name: str
    ok: bool
    detail: str  # in force: what; missing: the cause and the fix


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def userns() -> Layer:
    if _read_int("/proc/sys/user/max_user_namespaces") == 0:
        return Layer("userns", False, "user.max_user_namespaces is 0: sysctl -w user.max_user_namespaces=15000")
    if _read_int("/proc/sys/kernel/unprivileged_userns_clone") == 0:
        return Layer("userns", False, "kernel.unprivileged_userns_clone is 0 (the jail creates its user namespace "
                                      "as an unprivileged uid): sysctl -w kernel.unprivileged_userns_clone=1")
    if _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1:
        return Layer("userns", False, "AppArmor restricts unprivileged user namespaces: sysctl -w "
                                      "kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile "
                                      "for python3 with 'userns,'")
    if os.geteuid() != 0:
        return Layer("userns", False, "building the jail's root needs root (the jail itself then runs as an "
                                      "unprivileged uid): run clawfs as root")
    return Layer("userns", True, "user, mount, pid, net, ipc, uts and cgroup namespaces")


def seccomp_layer() -> Layer:
    if not os.path.exists("/proc/sys/kernel/seccomp/actions_avail") or not seccomp.available():
        return Layer("seccomp", False, "no seccomp filter support: a kernel with CONFIG_SECCOMP_FILTER and "
                                       "libseccomp2 installed (apt-get install libseccomp2)")
    return Layer("seccomp", True, "allowlist, default EPERM")


def landlock_layer() -> Layer:
    abi = landlock.abi_version()
    if abi < 1:
        return Layer("landlock", False, "Landlock is off: boot with lsm=...,landlock (Linux >= 5.13)")
    net = "TCP connect to the proxy port only" if abi >= 4 else "no TCP rules below ABI 4 (the netns still isolates)"
    return Layer("landlock", True, f"ABI {abi}: files read-only but /agent and /tmp; {net}")


def cgroups_layer() -> Layer:
    layout = cgroups.detect()
    if layout.version == 0:
        return Layer("cgroups", False, layout.why_not)
    return Layer("cgroups", True, f"cgroup v{layout.version}: memory, pids, cpu")


def layers() -> list[Layer]:
    return [userns(), seccomp_layer(), landlock_layer(), cgroups_layer()]
