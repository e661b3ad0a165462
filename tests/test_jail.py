"""The jail for real (namespaces, seccomp, Landlock, cgroups) and its escape battery: every attempt from inside
must fail. Needs root (CI runs as root): marker `jail`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import StoreFixture, is_mounted

from kernel import jailcheck, netns
from mountd import options as mount_options
from sandbox import jail

pytestmark = [pytest.mark.jail,
              pytest.mark.skipif(os.geteuid() != 0, reason="building a jail's root needs root (CI runs as root)"),
              pytest.mark.skipif(not all(layer.ok for layer in jailcheck.layers()),
                                 reason="this host lacks a jail layer: see `kernel.jailcheck.layers()`")]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    # The jail's uid must reach its home; the test's tmp_path is root's 0700, so /agent is a bound subdir.
    h = tmp_path / "home"
    h.mkdir()
    h.chmod(0o777)
    (h / "hello.txt").write_text("hi\n")
    return h


def run(home: Path, argv: list[str], timeout: float = 60, **cfg: Any) -> tuple[int, str, str, list[str]]:
    j = jail.start(jail.JailConfig(mount=str(home), **cfg), argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = j.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        j.kill()
        out, err = j.proc.communicate()
    code = j.wait()
    return code, out.decode(), err.decode(), j.stopped_by


def py(home: Path, code: str, **cfg: Any) -> tuple[int, str, str, list[str]]:
    return run(home, ["python3", "-c", code], **cfg)


def test_exit_status_identity_and_environment(home: Path) -> None:
    code, out, _, _ = run(home, ["sh", "-c", "id -u; id -g; hostname; pwd; echo \"$HTTP_PROXY|$HTTPS_PROXY|"
                                             "$http_proxy|${NO_PROXY-unset}|\"; command -v python3; exit 7"])
    assert code == 7
    lines = out.splitlines()
    assert lines[:4] == [str(jail.INSIDE_UID), str(jail.INSIDE_UID), "clawfs-jail", "/agent"]
    proxy = f"http://127.0.0.1:{jail.PROXY_PORT}"
    assert lines[4] == f"{proxy}|{proxy}|{proxy}||"
    assert lines[5].endswith("/python3")


def test_home_is_writable_and_owned_by_the_jail_uid_on_the_host(home: Path) -> None:
    code, out, err, _ = run(home, ["sh", "-c", "cat hello.txt && echo new > made.txt"])
    assert (code, out) == (0, "hi\n"), err
    st = (home / "made.txt").stat()
    assert (st.st_uid, st.st_gid) == (jail.JAIL_UID, jail.JAIL_UID)
    assert st.st_uid != 0


FILES = r"""
import errno, json, os
res = {}
def attempt(name, fn):
    try:
        fn(); res[name] = "ok"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
def write(p):
    with open(p, "w") as f: f.write("x")
attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
attempt("read host file", lambda: open(HOSTFILE).read())
attempt("list host tmp", lambda: os.listdir(os.path.dirname(HOSTFILE)))
attempt("write /usr", lambda: write("/usr/x"))
attempt("write /", lambda: write("/x"))
attempt("write /etc/passwd", lambda: write("/etc/passwd"))
attempt("exec from /tmp", lambda: (write("/tmp/s"), os.chmod("/tmp/s", 0o755), os.execv("/tmp/s", ["/tmp/s"])))
attempt("mknod in /agent", lambda: os.mknod("/agent/dev", 0o600 | 0o020000, os.makedev(1, 3)))
print(json.dumps(res))
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
"""


def test_files_outside_the_home_are_out_of_reach(home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "store.claw"
    secret.write_text("ciphertext")
    secret.chmod(0o644)
    code, out, err, _ = py(home, f"HOSTFILE = {str(secret)!r}\n" + FILES)
    assert code == 0, err
    first, pids = out.splitlines()
    res = json.loads(first)
    assert all(v != "ok" for v in res.values()), res
    assert res["read /etc/shadow"] == "ENOENT"
    assert json.loads(pids) == [1, 2]  # its own pid namespace: pid 1 (the jail's init) and the command
    assert res["write /usr"] in ("EROFS", "EACCES")


SYSCALLS = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = dict(mount=165, umount2=166, pivot_root=155, unshare=272, setns=308, ptrace=101, bpf=321,
          perf_event_open=298, keyctl=250, add_key=248, init_module=175, open_by_handle_at=304,
          io_uring_setup=425, userfaultfd=323, kexec_load=246, chroot=161, mount_setattr=442, open_tree=428,
          fsopen=430, clone=56, setuid=105, process_vm_readv=310)
ARGS = dict(mount=(b"none", b"/agent", b"tmpfs", 0, None), umount2=(b"/agent", 2), pivot_root=(b"/tmp", b"/tmp"),
            unshare=(0x10000000,), setns=(0, 0), ptrace=(16, 1, 0, 0), bpf=(0, 0, 0), perf_event_open=(0, 0, -1, -1, 0),
            keyctl=(0, 0), add_key=(b"user", b"k", b"v", 1, -3), init_module=(0, 0, b""),
            open_by_handle_at=(-100, 0, 0), io_uring_setup=(1, 0), userfaultfd=(0,), kexec_load=(0, 0, 0, 0),
            chroot=(b"/tmp",), mount_setattr=(-100, b"/agent", 0, 0, 0), open_tree=(-100, b"/agent", 1),
            fsopen=(b"tmpfs", 0), clone=(0x10000000 | 17, 0, 0, 0, 0), setuid=(0,), process_vm_readv=(1, 0, 0, 0, 0, 0))
res = {}
for name, nr in NR.items():
    r = libc.syscall(nr, *ARGS[name])
    if r == 0 and name == "clone":
        os._exit(0)
    res[name] = "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
for name, fam, typ in (("raw socket", socket.AF_INET, socket.SOCK_RAW),
                       ("packet socket", socket.AF_PACKET, socket.SOCK_RAW),
                       ("raw6 socket", socket.AF_INET6, socket.SOCK_RAW)):
    try:
        socket.socket(fam, typ).close(); res[name] = "ok"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, "?")
print(json.dumps(res))
"""


def test_refused_syscalls(home: Path) -> None:
    code, out, err, _ = py(home, SYSCALLS)
    assert code == 0, err
    res = json.loads(out)
    assert all(v != "ok" for v in res.values()), res
    # The seccomp policy answers its refused list with EPERM (clone3 aside, which is not tried here).
    assert {k for k, v in res.items() if v != "EPERM"} == set(), res


def test_unshare_command_and_threads_still_work(home: Path) -> None:
    code, out, _, _ = run(home, ["sh", "-c", "unshare -U true; echo $?; python3 -c 'import threading as t; "
                                             "x=t.Thread(target=print, args=(\"thread\",)); x.start(); x.join()'"])
    assert code == 0
    assert out.split() == ["1", "thread"]


CONNECT = r"""
import json, socket
res = {}
for host, port in TARGETS:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port)); res[f"{host}:{port}"] = "connected"
    except OSError as e:
        res[f"{host}:{port}"] = type(e).__name__ + ":" + str(e.errno)
    s.close()
print(json.dumps(res))
"""


@pytest.fixture
def test_hosts() -> Iterator[netns.VethHost]:
    host = netns.VethHost(f"cfjt{os.getpid() % 10000}", f"cfj{os.getpid() % 10000}",
                          ["10.251.0.1/24", "169.254.77.1/24"], ["10.251.0.2/24", "169.254.77.2/24"])
    try:
        yield host.create()
    finally:
        host.destroy()


def test_network_reaches_nothing_of_the_host(home: Path, test_hosts: netns.VethHost) -> None:
    loop4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    loop4.bind(("127.0.0.1", 0))
    loop4.listen(4)
    loop6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    loop6.bind(("::1", 0))
    loop6.listen(4)
    anyaddr = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    anyaddr.bind(("0.0.0.0", 0))
    anyaddr.listen(4)
    remote = netns.RecordingListener(test_hosts.path, [("10.251.0.2", 8080), ("169.254.77.2", 80)])
    targets = [("127.0.0.1", loop4.getsockname()[1]), ("::1", loop6.getsockname()[1]),
               ("10.251.0.1", anyaddr.getsockname()[1]), ("10.251.0.2", 8080), ("169.254.77.2", 80)]
    try:
        code, out, err, _ = py(home, f"TARGETS = {targets!r}\n" + CONNECT)
    finally:
        remote.close()
    assert code == 0, err
    res = json.loads(out)
    assert all(not v.startswith("connected") for v in res.values()), res
    assert remote.connections == []
    for s in (loop4, loop6, anyaddr):
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.accept()
        s.close()


def test_only_the_proxy_port_is_reachable(home: Path) -> None:
    j = jail.start(jail.JailConfig(mount=str(home)),
                   ["python3", "-c", "import socket; s=socket.create_connection(('127.0.0.1', "
                                     f"{jail.PROXY_PORT})); s.sendall(b'ping'); print(s.recv(4).decode())"],
                   stdout=subprocess.PIPE)
    assert j.proxy_socket is not None
    j.proxy_socket.settimeout(30)
    conn, _ = j.proxy_socket.accept()
    assert conn.recv(4) == b"ping"
    conn.sendall(b"pong")
    conn.close()
    out, _ = j.proc.communicate(timeout=30)
    assert j.wait() == 0
    assert out == b"pong\n"


def test_fork_bomb_stops_at_the_pids_limit(home: Path) -> None:
    bomb = ("import os, time\nmade = 0\nfor _ in range(2000):\n    try:\n        pid = os.fork()\n"
            "    except BlockingIOError:\n        break\n    if pid == 0:\n        time.sleep(30); os._exit(0)\n"
            "    made += 1\nprint(made)")
    code, out, err, stopped = py(home, bomb, pids=48)
    assert code == 0, err
    assert 0 < int(out) < 48
    assert "pids" in stopped


def test_memory_bomb_is_killed_by_the_memory_limit(home: Path) -> None:
    code, _, _, stopped = py(home, "x = []\nfor _ in range(64):\n    x.append(bytearray(16 << 20))", memory=96 << 20)
    assert code == 128 + 9
    assert stopped == ["memory"]


def test_tmp_filler_meets_the_tmpfs_size(home: Path) -> None:
    code, out, _, _ = py(home, "import errno\nn = 0\ntry:\n    with open('/tmp/fill', 'wb') as f:\n"
                               "        for _ in range(64):\n            f.write(b'x' * (1 << 20)); f.flush(); n += 1\n"
                               "except OSError as e:\n    print(errno.errorcode[e.errno], n)", tmp_size=8 << 20)
    assert code == 0
    word, n = out.split()
    assert word == "ENOSPC" and int(n) <= 8


def test_host_checks_name_cause_and_fix() -> None:
    found = {layer.name: layer for layer in jailcheck.layers()}
    assert set(found) == {"userns", "seccomp", "landlock", "cgroups"}
    assert all(layer.ok for layer in found.values())
    assert "ABI" in found["landlock"].detail


def test_missing_mount_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(jail.JailError, match="jail setup failed"):
        jail.run(jail.JailConfig(mount=str(tmp_path / "absent")), ["true"])
    assert sys.executable


@pytest.mark.fuse
@pytest.mark.skipif("agent_uid" not in getattr(mount_options, "ID_KEYS", ()),
                    reason="needs the mount option agent_uid (clawfs/policy.py) so the jail's uid reaches the mount")
def test_a_live_clawfs_mount_at_agent(store: StoreFixture) -> None:
    """The real thing beneath /agent: a ClawFS mount with allow_other and agent_uid = the jail's uid. The jail
    reads and writes the home, never a secret's value; a third local uid reaches nothing; the mount answers the
    host while a CPU loop spins in the jail."""
    mnt = store.tmp / "mnt"
    store.mount(mnt, f"allow_other,agent_uid={jail.JAIL_UID},agent_gid={jail.JAIL_UID}")
    try:
        (mnt / "notes").mkdir()
        (mnt / "notes" / "a.md").write_text("from the owner\n")
        (mnt / "secrets").mkdir(exist_ok=True)
        (mnt / "secrets" / "api_key").write_text("sk-the-value-itself")
        code, out, err, _ = run(mnt, ["sh", "-c", "cat /agent/notes/a.md && echo jailed > /agent/notes/b.md && "
                                                  "ls /agent/notes; cat /agent/secrets/api_key; echo $?"])
        assert code == 0, err
        assert out.split() == ["from", "the", "owner", "a.md", "b.md", "1"]
        assert "sk-the-value-itself" not in out + err
        assert (mnt / "notes" / "b.md").read_text() == "jailed\n"
        # A third uid, started inside the mount (subprocess changes directory before it drops to the uid, so
        # the 0700 test directories above the mount are not what refuses it).
        for argv in (["ls", "."], ["cat", "notes/a.md"]):
            third = subprocess.run(argv, cwd=mnt, capture_output=True, text=True, timeout=30,
                                   user=65534, group=65534, extra_groups=[])
            assert third.returncode != 0 and "Permission denied" in third.stderr, (argv, third)
        j = jail.start(jail.JailConfig(mount=str(mnt)), ["python3", "-c", "while True: pass"])
        try:
            for i in range(20):  # bounded: the mount answers the host while the jail spins
                (mnt / "notes" / f"h{i}").write_text("x")
                assert (mnt / "notes" / f"h{i}").read_text() == "x"
        finally:
            j.kill()
            j.wait()
    finally:
        if is_mounted(mnt):
            store.umount(mnt)
    store.assert_clean()


def test_a_missing_layer_refuses_with_cause_and_fix_unless_weaker(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    real = jailcheck.layers()
    fake = [jailcheck.Layer(x.name, False, "Landlock is off: boot with lsm=...,landlock") if x.name == "landlock"
            else x for x in real]
    monkeypatch.setattr(jailcheck, "layers", lambda: fake)
    with pytest.raises(jail.JailError, match=r"landlock unavailable: Landlock is off: boot with .*--allow-weaker"):
        jail.run(jail.JailConfig(mount=str(home)), ["true"])
    # Weaker: it runs without that layer and logs the missing one.
    code, out, _, _ = run(home, ["sh", "-c", "ls -d /proc/self/ns >/dev/null && echo ran"], allow_weaker=True)
    assert (code, out) == (0, "ran\n")
    assert any("jail layer landlock missing" in r.getMessage() for r in caplog.records)
