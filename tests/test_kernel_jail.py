"""kernel/ jail primitives one by one: each in a forked child so the test process keeps its privileges.
Landlock, seccomp, capabilities and namespaces for real; cgroups where this host has them."""

from __future__ import annotations

import errno
import os
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from kernel import cgroups, landlock, namespaces, privileges, seccomp
from sandbox import seccomp_policy

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def in_child(fn: Callable[[], int]) -> int:
    """Run fn in a forked child; its return value (0-255) is the child's exit code, an exception exits 99."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_landlock_abi_and_rights() -> None:
    abi = landlock.abi_version()
    if abi < 1:
        pytest.skip("Landlock is off on this kernel")
    assert landlock.fs_rights(1) == (1 << 13) - 1
    assert landlock.fs_rights(abi) & landlock.REFER if abi >= 2 else True


def test_landlock_confines_reads_writes_and_tcp(tmp_path: Path) -> None:
    if landlock.abi_version() < 4:
        pytest.skip("needs Landlock ABI >= 4 for the TCP rule")
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "f").write_text("x")
    allowed, refused = socket.socket(), socket.socket()
    for s in (allowed, refused):
        s.bind(("127.0.0.1", 0))
        s.listen(1)

    def child() -> int:
        privileges.set_no_new_privs()
        # The interpreter's own files stay readable: Python imports lazily (the idna codec on first connect).
        landlock.restrict(landlock.Policy(read_only=[str(ro), "/usr", "/proc", sys.base_prefix, sys.prefix],
                                          read_write=[str(rw)], tcp_connect_ports=[allowed.getsockname()[1]]))
        (rw / "new").write_text("ok")
        assert (ro / "f").read_text() == "x"
        for bad in (lambda: (ro / "g").write_text("no"), lambda: Path("/etc/hostname").read_text()):
            try:
                bad()
                return 1
            except PermissionError:
                pass
        socket.create_connection(allowed.getsockname(), timeout=5).close()
        try:
            socket.create_connection(refused.getsockname(), timeout=5).close()
            return 2
        except PermissionError:
            return 0

    assert in_child(child) == 0
    assert (rw / "new").read_text() == "ok"


def test_seccomp_policy_names_are_all_known() -> None:
    _, unknown = seccomp.build(seccomp_policy.allowed(), seccomp_policy.refused())
    assert unknown == []
    refused = {r.syscall for r in seccomp_policy.refused()}
    assert {"mount", "umount2", "pivot_root", "ptrace", "bpf", "perf_event_open", "kexec_load", "keyctl", "add_key",
            "unshare", "setns", "init_module", "open_by_handle_at", "io_uring_setup", "userfaultfd"} <= refused
    assert not refused & set(seccomp_policy.PLAIN)


def test_seccomp_refuses_with_eperm_and_still_runs_python() -> None:
    def child() -> int:
        seccomp.load(seccomp_policy.allowed(), seccomp_policy.refused())
        try:
            namespaces.unshare(namespaces.CLONE_NEWUSER)
            return 1
        except OSError as e:
            if e.errno != errno.EPERM:
                return 2
        try:
            socket.socket(socket.AF_INET, socket.SOCK_RAW)
            return 3
        except PermissionError:
            pass
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        pid = os.fork()  # clone without namespace flags is allowed
        if pid == 0:
            os._exit(0)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert in_child(child) == 0


@root_only
def test_drop_to_refuses_root_and_capabilities_drop() -> None:
    with pytest.raises(ValueError):
        namespaces.drop_to(0, 0)

    def child() -> int:
        privileges.drop_all_capabilities()
        privileges.set_no_new_privs()
        caps = privileges.effective_capabilities()
        if any(caps[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")):
            return 1
        return 0 if privileges.no_new_privs() else 2

    assert in_child(child) == 0


@root_only
def test_unprivileged_user_namespace_maps_one_uid() -> None:
    def child() -> int:
        namespaces.drop_to(64011, 64011)
        namespaces.unshare(namespaces.CLONE_NEWUSER | namespaces.CLONE_NEWUTS)
        namespaces.write_id_maps(1000, 64011, 1000, 64011)
        namespaces.set_hostname("inside")
        return 0 if (os.getuid(), os.getgid(), namespaces.hostname()) == (1000, 1000, "inside") else 1

    before = namespaces.hostname()
    assert in_child(child) == 0
    assert namespaces.hostname() == before


@root_only
def test_cgroup_limits_and_which_one_stopped() -> None:
    layout = cgroups.detect()
    if layout.version == 0:
        pytest.skip(f"no usable cgroups: {layout.why_not}")
    cg = cgroups.create(f"clawfs-test-{os.getpid()}", cgroups.Limits(memory=64 << 20, pids=8))
    try:
        def child() -> int:
            cg.join()
            made = []
            try:
                for _ in range(20):
                    pid = os.fork()
                    if pid == 0:
                        os.read(os.open("/dev/zero", os.O_RDONLY), 1)
                        os._exit(0)
                    made.append(pid)
            except BlockingIOError:
                pass
            for pid in made:
                os.waitpid(pid, 0)
            return len(made)

        assert in_child(child) < 8
        assert cg.stopped_by() == ["pids"]
    finally:
        cg.kill_all()
        cg.remove()
    assert not any(os.path.exists(d) for d in cg.dirs.values())
