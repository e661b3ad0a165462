"""The jail: one command run with the agent's home at /agent and nothing else of the host.

Order (each step needs the one before): the launcher, a fresh `python -m sandbox.jail` started by real root,
joins the jail's cgroup; in a private mount namespace builds a tmpfs root of read-only binds (the Python
runtime and its packages, /usr), /agent (the ClawFS mount, read-write), a sized noexec /tmp and /dev of
null/zero/urandom, and pivots into it. Then it drops to an unprivileged host uid/gid (never 0) and creates
user, mount, pid, net, ipc, uts and cgroup namespaces: the new mount namespace is a copy made for a less
privileged user namespace, so every mount in it is locked (read-only stays read-only). Pid 1 of the new pid
namespace mounts its /proc, sets rlimits and no_new_privs, applies Landlock, drops every capability, loads
the seccomp allowlist and runs the command as its child.

Network: the jail's netns has no interface but lo. The launcher creates the proxy's listening socket on the
jail's 127.0.0.1 and hands it to the daemon over a Unix socket pair; the daemon serves it from outside. So
nothing of the host's network exists in the jail, there is no relay inside, and every connection on that
socket comes from this jail alone: the proxy knows the calling tool from which socket accepted it, which a
compromised runtime cannot forge. Landlock (ABI >= 4) allows TCP connect to that port only."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import util as importlib_util

from kernel import cgroups, jailcheck, landlock, namespaces, netns, privileges, rootfs
from kernel import seccomp as kseccomp

from . import seccomp_policy

INSIDE_UID = 1000  # the jail's uid and gid as seen inside; outside they are JailConfig.uid/gid
PROXY_PORT = 3128
JAIL_UID = 64010  # default host uid/gid of a jail: no account, not 0, not nobody (65534)
CPU_WEIGHT = 20  # a jail's CPU weight (cgroup v2 scale, default 100): low, the host's work comes first
# The supervised agent runtime's jail while it starts: a host process's default weight, so that its start is not
# starved by the daemon loading the index model (5x slower at 20 on 2 cores); the daemon lowers it to CPU_WEIGHT
# at the runtime's first liveness ping (settle_cpu).
START_CPU_WEIGHT = 100
CGROUP_PREFIX = "clawfs-jail-"
RUNTIME_PACKAGES = ("agent", "sandbox", "kernel")
EXIT_SETUP_FAILED = 125
LIVENESS_ENV = "CLAWFS_LIVENESS_FD"  # as mountd/supervisor.py and agent/liveness.py name it
CA_BUNDLE = "/etc/clawfs-ca-bundle.pem"  # in the jail: the system's CAs and the store CA (JailConfig.ca_pem)
log = logging.getLogger("clawfs.jail")


class JailError(Exception):
    """The jail could not be built; the message names the cause and the fix."""


@dataclass
class JailConfig:
    mount: str  # host path of the ClawFS mount, bound at /agent
    uid: int = JAIL_UID
    gid: int = JAIL_UID
    tmp_size: int = 64 << 20
    memory: int = 2 << 30
    pids: int = 256
    cpu_weight: int = CPU_WEIGHT
    proxy_port: int = PROXY_PORT
    allow_weaker: bool = False
    runtime_paths: list[str] = field(default_factory=list)
    root_dir: str = ""  # where the launcher mounts the new root (made by the parent)
    cgroup_dirs: dict[str, str] = field(default_factory=dict)
    layers: dict[str, bool] = field(default_factory=dict)  # which layers to apply (weaker jail: some off)
    env: dict[str, str] = field(default_factory=dict)
    ca_pem: str = ""  # the store CA's certificate (sandbox/tls_ca.py): trusted in the jail beside the system's
    agent_readonly: bool = False  # /agent bound read-only (a tool worker: it reads its tool, writes nothing)


def runtime_paths() -> list[str]:
    """What the jail's root holds read-only: /usr (and the usrmerge links), the Python installation, the venv,
    and the source of the packages the runtime imports (an editable install keeps them in the tree)."""
    paths = ["/usr", sys.base_prefix, sys.prefix]
    for name in RUNTIME_PACKAGES:
        spec = importlib_util.find_spec(name)
        if spec and spec.submodule_search_locations:
            paths.extend(spec.submodule_search_locations)
    seen: list[str] = []
    for p in (os.path.realpath(p) for p in paths):
        if not any(p == s or p.startswith(s + "/") for s in seen):
            seen = [s for s in seen if not s.startswith(p + "/")] + [p]
    return seen


def jail_env(cfg: JailConfig) -> dict[str, str]:
    proxy = f"http://127.0.0.1:{cfg.proxy_port}"
    path = ":".join([os.path.join(sys.prefix, "bin"), os.path.join(sys.base_prefix, "bin"), "/usr/bin", "/bin"])
    env = {"PATH": path, "HOME": "/agent", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "USER": "agent",
           # curl reads only the lower-case http_proxy; Python and httpx read either.
           "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
           "NO_PROXY": "", "no_proxy": ""}
    if cfg.ca_pem:  # OpenSSL and Python's ssl, httpx, requests, curl: each reads one of these
        env.update(SSL_CERT_FILE=CA_BUNDLE, REQUESTS_CA_BUNDLE=CA_BUNDLE, CURL_CA_BUNDLE=CA_BUNDLE)
    env.update(cfg.env)
    return env


# ---------------------------------------------------------------- inside the launcher (real root, then not)

def _build_root(cfg: JailConfig) -> None:
    root = cfg.root_dir
    namespaces.unshare(namespaces.CLONE_NEWNS)
    rootfs.make_private()
    rootfs.mount_tmpfs(root, size=1 << 20, mode=0o755)
    for path in cfg.runtime_paths:
        rootfs.bind(path, root + path, readonly=True, extra=rootfs.MS_NOSUID | rootfs.MS_NODEV)
    for link in ("bin", "sbin", "lib", "lib64"):
        host = f"/{link}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/{link}")
        elif os.path.isdir(host):
            rootfs.bind(host, f"{root}/{link}", readonly=True, extra=rootfs.MS_NOSUID | rootfs.MS_NODEV)
    os.makedirs(f"{root}/etc")
    for f in ("/etc/ld.so.cache", "/etc/ssl/certs"):
        if os.path.exists(f):
            rootfs.bind(f, root + f, readonly=True, extra=rootfs.MS_NOSUID | rootfs.MS_NODEV)
    with open(f"{root}/etc/passwd", "w") as fh:
        fh.write(f"agent:x:{INSIDE_UID}:{INSIDE_UID}:agent:/agent:/bin/sh\n")
    with open(f"{root}/etc/group", "w") as fh:
        fh.write(f"agent:x:{INSIDE_UID}:\n")
    with open(f"{root}/etc/hosts", "w") as fh:
        fh.write("127.0.0.1 localhost\n::1 localhost\n")
    if cfg.ca_pem:
        with open(f"{root}{CA_BUNDLE}", "w") as fh:
            fh.write(_system_cas() + "\n" + cfg.ca_pem)
    rootfs.bind_devices(f"{root}/dev")
    os.makedirs(f"{root}/tmp")
    rootfs.mount_tmpfs(f"{root}/tmp", size=cfg.tmp_size, mode=0o1777)
    rootfs.bind(cfg.mount, f"{root}/agent", readonly=cfg.agent_readonly, extra=rootfs.MS_NOSUID | rootfs.MS_NODEV)
    # A procfs of the host's pid namespace holds /proc's place until pid 1 mounts its own over it (a user
    # namespace may mount proc only where one is already fully visible).
    rootfs.mount_proc(f"{root}/proc")
    rootfs.remount_readonly(root)
    rootfs.pivot_into(root)


def _system_cas() -> str:
    """The host's CA bundle as OpenSSL finds it (empty if there is none: the store CA alone is then trusted)."""
    path = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _enter_namespaces(cfg: JailConfig, control: socket.socket) -> None:
    namespaces.drop_to(cfg.uid, cfg.gid)
    namespaces.unshare(namespaces.JAIL_NAMESPACES)
    namespaces.write_id_maps(INSIDE_UID, cfg.uid, INSIDE_UID, cfg.gid)
    netns.loopback_up()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", cfg.proxy_port))
    listener.listen(64)
    socket.send_fds(control, [b"proxy"], [listener.fileno()])
    listener.close()
    namespaces.set_hostname("clawfs-jail")


def _confine(cfg: JailConfig) -> None:
    """Pid 1's last steps, in this order: each later one would forbid an earlier one's syscalls."""
    rootfs.mount_proc("/proc")
    privileges.apply_rlimits(privileges.Rlimits())
    privileges.set_no_new_privs()
    if cfg.layers.get("landlock", True):
        writable = ["/tmp"] if cfg.agent_readonly else ["/agent", "/tmp"]
        landlock.restrict(landlock.Policy(read_only=["/"], read_write=writable,
                                          read_write_files=[f"/dev/{d}" for d in rootfs.DEVICES],
                                          tcp_connect_ports=[cfg.proxy_port]))
    privileges.drop_all_capabilities()
    if cfg.layers.get("seccomp", True):
        kseccomp.load(seccomp_policy.allowed(), seccomp_policy.refused())


def _status(raw: int) -> int:
    return os.waitstatus_to_exitcode(raw) if os.WIFEXITED(raw) else 128 + os.WTERMSIG(raw)


def _reap_until(pid: int) -> int:
    """Wait for every child (pid 1 reaps orphans) until pid has ended; return its exit code."""
    while True:
        try:
            got, raw = os.wait()
        except ChildProcessError:
            return EXIT_SETUP_FAILED
        if got == pid:
            return _status(raw)


def _pid1(cfg: JailConfig, argv: list[str]) -> int:
    _confine(cfg)
    env = jail_env(cfg)
    child = os.fork()
    if child == 0:
        try:
            os.chdir("/agent")
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            print(f"clawfs jail: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
            os._exit(127)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
    return _reap_until(child)


def launcher_main(cfg: JailConfig, argv: list[str], control: socket.socket) -> int:
    try:
        privileges.forbid_core_dumps()
        if cfg.cgroup_dirs:
            cgroups.JailCgroup(0, cfg.cgroup_dirs).join()
        _build_root(cfg)
        _enter_namespaces(cfg, control)
    except OSError as e:
        control.sendall(json.dumps({"error": f"{e}"}).encode())
        return EXIT_SETUP_FAILED
    control.close()
    pid = os.fork()
    if pid == 0:
        try:
            code = _pid1(cfg, argv)
        except OSError as e:
            print(f"clawfs jail: confining failed: {e}", file=sys.stderr)
            code = EXIT_SETUP_FAILED
        os._exit(code)
    # The launcher stays outside the new pid namespace only to pass on the exit status (and SIGTERM/SIGINT, which
    # pid 1 hands to the command): it gives up its capabilities in the jail's user namespace too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    privileges.set_no_new_privs()
    privileges.drop_all_capabilities()
    return _reap_until(pid)


# ---------------------------------------------------------------- in the daemon / CLI (outside)

def weaker_layers(allow_weaker: bool) -> tuple[dict[str, bool], list[jailcheck.Layer]]:
    """Which layers the host allows; raises JailError on a missing one unless allow_weaker."""
    found = jailcheck.layers()
    missing = [layer for layer in found if not layer.ok]
    if missing and not allow_weaker:
        first = missing[0]
        raise JailError(f"jail layer {first.name} unavailable: {first.detail} (or --allow-weaker-jail)")
    for layer in missing:
        log.warning("jail layer %s missing (--allow-weaker-jail): %s", layer.name, layer.detail)
    if any(layer.name == "userns" and not layer.ok for layer in found):
        raise JailError(f"no jail without namespaces: {next(x.detail for x in found if x.name == 'userns')}")
    return {layer.name: layer.ok for layer in found}, missing


def status() -> dict[str, dict[str, object]]:
    """Each layer: in force here or why not (the `jail` part of `clawfs status --json`)."""
    return {layer.name: {"ok": layer.ok, "detail": layer.detail} for layer in jailcheck.layers()}


@dataclass
class Jail:
    """A running jail: the launcher process, the proxy's listening socket (in the jail's netns) and the
    cgroup; wait() returns the command's exit status and which limit stopped it, if any."""
    proc: subprocess.Popen[bytes]
    proxy_socket: socket.socket | None
    cgroup: cgroups.JailCgroup | None
    root_dir: str
    started: float
    ready_seconds: float = 0.0
    stopped_by: list[str] = field(default_factory=list)

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self.close()
        return code

    def kill(self) -> None:
        if self.cgroup:
            self.cgroup.kill_all()
        self.proc.kill()

    def close(self) -> None:
        if self.cgroup:
            self.cgroup.kill_all()
            self.stopped_by = self.cgroup.stopped_by()
            self.cgroup.remove()
            self.cgroup = None
        if self.proxy_socket:
            self.proxy_socket.close()
            self.proxy_socket = None
        if self.root_dir:
            os.rmdir(self.root_dir)
            self.root_dir = ""


def inherited_fds() -> dict[str, int]:
    """The liveness socket this process was given by `clawfs serve`'s supervisor, if any: a datagram socket
    whose only use is pings to the daemon (it counts them, nothing more), so it may enter the jail."""
    value = os.environ.get(LIVENESS_ENV, "")
    if not value.isdigit():
        return {}
    try:
        os.fstat(int(value))
    except OSError:
        return {}
    return {LIVENESS_ENV: int(value)}


def start(cfg: JailConfig, argv: list[str], *, stdin: int | None = None, stdout: int | None = None,
          stderr: int | None = None, fds: dict[str, int] | None = None, new_session: bool = False) -> Jail:
    """Start argv in a new jail; returns once the jail's network is up (the proxy socket is handed over).
    `fds`: the descriptors the command gets, each under the environment variable naming it (e.g. the tool
    broker's socket for the runtime, a worker's channel for a tool); None = the liveness socket of this process,
    if it has one (`inherited_fds`).  Nothing else crosses: a tool worker's jail is given `{}` or its own.
    `new_session`: the launcher in a session of its own, so a signal to the caller's process group (a terminal's
    ^C, `clawfs serve` stopping the runtime's holder) does not reach it; the caller ends it."""
    t0 = time.perf_counter()
    layers, _ = weaker_layers(cfg.allow_weaker)
    cfg.layers = layers
    cfg.runtime_paths = cfg.runtime_paths or runtime_paths()
    name = f"{CGROUP_PREFIX}{os.getpid()}-{time.monotonic_ns() % 10**9}"
    cfg.root_dir = f"/run/{name}"
    os.mkdir(cfg.root_dir, 0o755)
    cg = cgroups.create(name, cgroups.Limits(cfg.memory, cfg.pids, cfg.cpu_weight)) if layers["cgroups"] else None
    cfg.cgroup_dirs = cg.dirs if cg else {}
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    passed = inherited_fds() if fds is None else fds
    for env_name, fd in passed.items():  # e.g. the supervising daemon's ping socket (mountd/supervisor.py)
        cfg.env.setdefault(env_name, str(fd))
    proc = subprocess.Popen([sys.executable, "-I", "-m", "sandbox.jail", json.dumps(asdict(cfg)),
                             str(theirs.fileno()), "--", *argv], pass_fds=[theirs.fileno(), *passed.values()],
                            stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=new_session)
    theirs.close()
    jail = Jail(proc, None, cg, cfg.root_dir, t0)
    try:
        msg, got, _, _ = socket.recv_fds(ours, 4096, 1)
    except OSError as e:
        jail.kill()
        jail.wait()
        raise JailError(f"jail launcher: {e}") from None
    finally:
        ours.close()
    if not got:
        jail.proc.wait()
        jail.close()
        reason = json.loads(msg or b"{}").get("error", "the launcher ended before the jail was ready")
        raise JailError(f"jail setup failed: {reason}")
    jail.proxy_socket = socket.socket(fileno=got[0])
    jail.ready_seconds = time.perf_counter() - t0
    return jail


def settle_cpu(pid: int, weight: int = CPU_WEIGHT) -> bool:
    """The jail holding host pid `pid` down to `weight` once its start is over (a jail started with
    START_CPU_WEIGHT); False if `pid` is in no jail's cgroup."""
    group = cgroups.group_of(pid, CGROUP_PREFIX)
    if group is None:
        return False
    group.set_cpu_weight(weight)
    return True


def run(cfg: JailConfig, argv: list[str], timeout: float | None = None) -> int:
    jail = start(cfg, argv)
    try:
        return jail.wait(timeout)
    finally:
        jail.close()


def _main() -> int:
    cfg = JailConfig(**json.loads(sys.argv[1]))
    control = socket.socket(fileno=int(sys.argv[2]))
    argv = sys.argv[sys.argv.index("--") + 1:]
    return launcher_main(cfg, argv, control)


if __name__ == "__main__":
    sys.exit(_main())
