"""`clawfs serve`: one daemon for a store's whole lifecycle - unlock, mount (mountd/daemon.py), the webhook
receiver (mountd/webhooks.py), the supervised agent runtime (mountd/supervisor.py), sd_notify (mountd/notify.py)
- and its orderly end.

Start (in this order; any failure before READY ends the service with one line saying why):
1. key sources as `clawfs mount` (TPM slot first), plus systemd's `LoadCredential=`: a `passphrase`, `keyfile`
   or `recovery-key` file in $CREDENTIALS_DIRECTORY when no key option names one;
2. a stale mount left at MNT by a daemon that died ("Transport endpoint is not connected") is lazily unmounted
   (logged), then the mountpoint is checked as `clawfs mount` checks it;
3. mount and serve (daemon.serve: store, index, the egress proxy); once the loop serves, a thread of ours does
   the rest, since the loop thread must never wait on its own mount:
4. `stat` of the mount, the webhook receiver bound, the runtime started and its first liveness ping received
   (or the runtime given up on: the mount is the service's first duty, READY still comes, and the reason is in
   the status and on stderr) -> READY=1 (sd_notify, and the waiting parent of a non-foreground serve exits 0).
   WATCHDOG=1 then every half of $WATCHDOG_USEC while a `stat` of the mount answers.

Stop (SIGTERM, SIGINT, SIGHUP, `clawfs umount MNT`, `systemctl stop`): webhooks answer 503, the runtime gets
SIGTERM and finishes its turns (bounded, then killed), the receiver waits for deliveries in flight, and only
then is the FUSE loop told to end, so the runtime never sees its home vanish mid-turn; daemon.serve unmounts,
flushes and closes.  Exit 0.  A second signal while stopping is logged and changes nothing.

Signals: the FUSE loop (clawfs/fuse_ops.serve) ends at the first SIGTERM it sees, which would unmount under
the runtime.  So once the loop serves, this module puts its own handler in place of the loop's (Python runs
every handler in the main thread, which is the loop's, whichever thread the kernel picked: a signal mask could
not do it, since threads started at import time - BLAS pools - never inherit one); the handler only starts the
orderly stop in a thread.  When the runtime and the receiver are done, the loop's handler is put back and
SIGTERM raised in the loop's thread: the loop's ordinary way to end.

The runtime: `--runtime jail` (default) runs `clawfs agent run MNT` (as `python -m mountd.agent_cli run MNT`, without
the rest of the CLI), the jailed runtime, its jail at a normal CPU weight until the first ping and at the jail's
low weight from then on (sandbox/jail.settle_cpu); `--runtime host` runs
`python -m agent.liveness MNT` directly, as the mount's agent uid when there is one (no jail: for hosts without
one, and tests).  Either way the child inherits the liveness socket ($CLAWFS_LIVENESS_FD).

State for `clawfs status`: `<run dir>/<quoted mountpoint>.json` (the daemon's pid, the runtime's state, pid,
uid, restarts, last error, the webhook channels), rewritten each second while anything changes; `.pid` beside.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawfs import fuse_ops, home_files
from clawfs.errors import UserError
from clawfs.keys import Credentials
from clawfs.store import Store, StoreLock
from kernel import mounts
from kernel.process import detach_stdio
from sandbox import jail

from . import daemon, logs
from .notify import Notifier
from .options import MountOptions
from .supervisor import FAILED, RUNNING, RestartPolicy, Supervisor, spawn_command
from .webhooks import Receiver, load_channels

log = logging.getLogger("clawfs.serve")
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
CREDENTIAL_FILES = (("passphrase", "passphrase_file"), ("keyfile", "keyfile"), ("recovery-key", "recovery_key_file"))


@dataclass
class ServeConfig:
    store: str
    mountpoint: str
    opts: MountOptions
    agent: bool = True
    runtime: str = "jail"  # or "host"
    ping_timeout: float = 30.0
    start_timeout: float = 120.0
    stop_grace: float = 30.0
    policy: RestartPolicy = field(default_factory=RestartPolicy)


# -- before the mount --------------------------------------------------------------------------------------------
def systemd_credentials(opts: MountOptions, env: dict[str, str] | None = None) -> list[str]:
    """Fill key options from $CREDENTIALS_DIRECTORY (systemd's LoadCredential=) when none was given; returns
    the credential names used."""
    env = dict(os.environ) if env is None else env
    where = env.get("CREDENTIALS_DIRECTORY")
    if not where or opts.passphrase_file or opts.keyfile or opts.recovery_key_file:
        return []
    used = []
    for name, attr in CREDENTIAL_FILES:
        path = os.path.join(where, name)
        if os.path.isfile(path):
            setattr(opts, attr, path)
            used.append(name)
    return used


def recover_stale_mount(mountpoint: str) -> bool:
    """Lazily unmount what a crashed daemon left at `mountpoint` (the filesystem answers ENOTCONN); True if so.
    statfs, not stat: the kernel may answer a stat of the mount's root from its attribute cache."""
    try:
        os.stat(mountpoint)
        if not mounts.is_mountpoint(mountpoint):
            return False
        os.statvfs(mountpoint)
        return False
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            return False
    tool = ["umount", "-l", mountpoint] if os.geteuid() == 0 else ["fusermount3", "-u", "-z", mountpoint]
    proc = subprocess.run(tool, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"{mountpoint} is a dead mount (transport endpoint not connected) and `{' '.join(tool)}` "
                        f"failed: {proc.stderr.strip() or proc.returncode}")
    log.warning("%s: a stale mount of a daemon that is gone (transport endpoint not connected) was lazily "
                "unmounted", mountpoint)
    return True


def run_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/clawfs")
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "clawfs" if base else Path(f"/tmp/clawfs-{os.getuid()}")


def state_paths(mountpoint: str) -> tuple[Path, Path]:
    """(pid file, status file) of the serve daemon of `mountpoint`."""
    name = urllib.parse.quote(os.path.realpath(mountpoint), safe="")
    d = run_dir()
    return d / f"{name}.pid", d / f"{name}.json"


def read_state(mountpoint: str) -> dict[str, Any] | None:
    """The status a live serve daemon of `mountpoint` last wrote (for `clawfs status`), None if there is none."""
    pid_file, status_file = state_paths(mountpoint)
    pid = _live_pid(pid_file)
    if pid is None:
        return None
    try:
        data: dict[str, Any] = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("pid") == pid else None


def _live_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"serve" in cmdline else None


def stop_running(mountpoint: str, timeout: float) -> bool:
    """`clawfs umount` of a served mount: SIGTERM its daemon and wait until it is gone.  False if no serve
    daemon owns `mountpoint` (a plain mount: the caller unmounts it)."""
    pid_file, _ = state_paths(mountpoint)
    pid = _live_pid(pid_file)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and _zombie(pid) is False:
        if time.monotonic() > deadline:
            raise UserError(f"the clawfs serve daemon (pid {pid}) of {mountpoint} did not stop within "
                            f"{timeout:g} s; see its log")
        time.sleep(0.05)
    return True


def _zombie(pid: int) -> bool | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return None


# -- the running service -----------------------------------------------------------------------------------------
class Service:
    """Everything `clawfs serve` runs beside the FUSE loop; started by `bring_up` (a thread) once the mount is
    live, ended by `shutdown`."""

    def __init__(self, cfg: ServeConfig, master: bytes, notifier: Notifier,
                 answer: Callable[[str | None, str | None], None]) -> None:
        self.cfg = cfg
        self.home = Path(cfg.mountpoint)
        self._master = master
        self.notifier = notifier
        self._answer = answer  # (error, warning): tells the waiting parent, once
        self.receiver: Receiver | None = None
        self.supervisor: Supervisor | None = None
        self.bad_channels: dict[str, str] = {}
        self.state = "starting"
        self._stop = threading.Event()
        self._down = threading.Event()
        self._lock = threading.Lock()
        self._secrets_store: Store | None = None
        self._call_in_loop: Callable[[Callable[[], Any]], Any] | None = None
        self.pid_file, self.status_file = state_paths(cfg.mountpoint)
        self.ready_at: float | None = None
        self._loop_handlers: dict[int, Any] = {}

    # the webhooks' keys: read through a read-only connection of our own, never through FUSE (write-only there)
    def secret(self, name: str) -> bytes | None:
        with self._lock:
            if self._secrets_store is None:
                self._secrets_store = Store.open(self.cfg.store, Credentials(tpm=False), readonly=True, lock=False,
                                                 master_key=self._master)
            self._secrets_store.drop_cache()
            value = home_files.secret(self._secrets_store, name)
        return None if value is None else value.encode()

    def on_live(self, message: str | None) -> None:
        """daemon.serve's `ready`: called in the loop's thread once the mount is live (or with why it failed)."""
        if message is not None:
            self._answer(message, None)
            return
        self._call_in_loop = fuse_ops.loop_caller()
        # in the loop's (main) thread: our handler replaces the loop's, kept to be put back by _end_loop
        self._loop_handlers = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        threading.Thread(target=self.bring_up, name="clawfs-serve-start", daemon=True).start()

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("clawfs serve: %s: stopping", signal.Signals(signum).name)
        threading.Thread(target=self.request_stop, name="clawfs-serve-stop", daemon=True).start()

    def _end_loop(self) -> None:
        """In the loop's thread: the loop's own handlers back, and SIGTERM raised for it."""
        for sig, handler in self._loop_handlers.items():
            signal.signal(sig, handler)
        signal.raise_signal(signal.SIGTERM)

    def bring_up(self) -> None:
        try:
            warning = self._start()
        except Exception as e:
            log.exception("clawfs serve: start failed")
            reason = str(e) if isinstance(e, (UserError, OSError)) else repr(e)
            self._answer(f"{self.cfg.mountpoint}: {reason}", None)
            self.request_stop()
            return
        if self._stop.is_set():
            return
        self.state = "ready"
        self.ready_at = time.monotonic()
        status = self._status_line()
        self._write_status()  # before READY: whoever READY wakes may read it at once
        self.notifier.ready(status)
        log.info("clawfs serve: ready (%s)", status)
        self._answer(None, warning)
        self._keepalive()

    def _start(self) -> str | None:
        os.stat(self.home / ".clawfs" / "status")  # the mount answers
        channels, self.bad_channels = load_channels(self.home)
        for name, why in self.bad_channels.items():
            log.error("webhooks: channel %s is not served: %s", name, why)
        if channels:
            self.receiver = Receiver(self.home, channels, self.secret)
            try:
                self.receiver.start()
            except OSError as e:
                raise UserError(f"webhooks: cannot listen ({e.strerror or e})") from e
        if not self.cfg.agent:
            return None
        # the jail starts at a normal CPU weight (not starved while this daemon loads the index model) and is
        # lowered to the jail's steady weight at the runtime's first ping
        settle = jail.settle_cpu if self.cfg.runtime == "jail" else None
        self.supervisor = Supervisor(self._spawn(), ping_timeout=self.cfg.ping_timeout, policy=self.cfg.policy,
                                     stop_grace=self.cfg.stop_grace, on_alive=settle)
        self.supervisor.start()
        deadline = time.monotonic() + self.cfg.start_timeout
        while not self.supervisor.settled.wait(0.1) and time.monotonic() < deadline:
            if self._stop.is_set():  # stopped while starting: no READY
                return None
        if not self.supervisor.settled.is_set():
            raise UserError(f"the agent runtime sent no liveness ping within {self.cfg.start_timeout:g} s "
                            f"(last error: {self.supervisor.status().last_error or 'none'})")
        st = self.supervisor.status()
        if st.state == FAILED:
            return f"the mount is up but the agent runtime is down: {st.last_error}"
        return None

    def _spawn(self) -> Callable[[int], subprocess.Popen[bytes]]:
        mnt = self.cfg.mountpoint
        if self.cfg.runtime == "host":
            popen: dict[str, Any] = {"cwd": "/"}  # not the mount: a cwd there would keep it busy
            uid, gid = self.cfg.opts.agent_uid, self.cfg.opts.agent_gid
            if uid is not None and os.geteuid() == 0:
                popen.update(user=uid, group=gid if gid is not None else uid, extra_groups=[])
            return spawn_command([sys.executable, "-m", "agent.liveness", mnt], **popen)
        # `clawfs agent run MNT` through its own module: not the CLI, whose import (every command's module, the
        # FUSE daemon, the index engine) would double the start of each restart
        return spawn_command([sys.executable, "-m", "mountd.agent_cli", "run", mnt], cwd="/")

    def _status_line(self) -> str:
        parts = [f"mounted {self.cfg.store} on {self.cfg.mountpoint}"]
        if self.receiver is not None:
            parts.append(f"webhooks {', '.join(sorted(self.receiver.addresses()))}")
        if self.supervisor is not None:
            st = self.supervisor.status()
            parts.append(f"runtime {st.state}" + (f" (pid {st.pid})" if st.pid else "")
                         + (f": {st.last_error}" if st.state == FAILED else ""))
        return "; ".join(parts)

    def status(self) -> dict[str, Any]:
        rt = self.supervisor.status().to_json() if self.supervisor else {"state": "off"}
        hooks = {name: {"listen": f"{h}:{p}", "answers": (self.receiver.counts.get(name, {}) if self.receiver
                                                          else {})}
                 for name, (h, p) in (self.receiver.addresses().items() if self.receiver else [])}
        return {"pid": os.getpid(), "state": self.state, "store": self.cfg.store, "mountpoint": self.cfg.mountpoint,
                "runtime": rt, "webhooks": hooks, "webhook_errors": self.bad_channels, "updated_at": time.time()}

    def status_sections(self) -> dict[str, Any]:
        """What `.clawfs/status` adds under clawfs serve: the runtime (state, pid, uid, restarts, last error) and
        the webhooks, as the state file has them."""
        st = self.status()
        return {"runtime": st["runtime"], "webhooks": st["webhooks"]}

    def _write_status(self) -> None:
        try:
            self.status_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.status_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.status_file)
        except OSError as e:
            log.warning("cannot write %s: %s", self.status_file, e)

    def write_pid(self) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pid_file.write_text(f"{os.getpid()}\n")

    def _keepalive(self) -> None:
        """Status file each second; WATCHDOG=1 at half of WATCHDOG_USEC, while the mount answers a stat."""
        every = self.notifier.watchdog_interval
        last_dog = 0.0
        last_line = ""
        while not self._stop.wait(1.0 if every is None else min(1.0, every)):
            self._write_status()
            line = self._status_line()
            if line != last_line:
                self.notifier.status(line)
                last_line = line
            if every is not None and time.monotonic() - last_dog >= every:
                try:
                    os.stat(self.home / ".clawfs" / "status")
                except OSError as e:  # a hung or gone mount: no WATCHDOG=1, the manager acts
                    log.error("the mount does not answer (%s): no watchdog ping", e)
                    continue
                self.notifier.watchdog()
                last_dog = time.monotonic()

    def request_stop(self) -> None:
        """Stop everything but the mount, then end the FUSE loop (daemon.serve unmounts and closes)."""
        if self._stop.is_set():
            log.info("clawfs serve: already stopping")
            return
        self._stop.set()
        self.shutdown()
        if self._call_in_loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended (an outside unmount)
                self._call_in_loop(self._end_loop)

    def shutdown(self) -> None:
        """Intake first (503), then the runtime (its turns finish), then the receiver (deliveries in flight
        finish).  Idempotent."""
        if self._down.is_set():
            return
        self._stop.set()
        self.state = "stopping"
        self.notifier.stopping("stopping: webhooks refused, runtime finishing its turns")
        if self.receiver is not None:
            self.receiver.begin_stop()
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.receiver is not None:
            self.receiver.close()
        with self._lock:
            if self._secrets_store is not None:
                self._secrets_store.close()
                self._secrets_store = None
        self._down.set()
        self.state = "stopped"

    def remove_state(self) -> None:
        for p in (self.status_file, self.pid_file):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def run(cfg: ServeConfig, master: bytes, answer: Callable[[str | None, str | None], None]) -> int:
    """Serve until stopped (in this process: the daemon).  `answer(error, warning)` is called once: at READY
    (error None) or with why the service could not start."""
    answered = threading.Event()

    def answer_once(error: str | None, warning: str | None) -> None:
        if not answered.is_set():
            answered.set()
            answer(error, warning)

    service = Service(cfg, master, Notifier(), answer_once)
    service.write_pid()
    try:
        daemon.serve(cfg.store, cfg.mountpoint, cfg.opts, master, service.on_live, service.status_sections)
    finally:
        service.shutdown()  # the mount ended without us (an outside unmount): stop the rest too
        service.remove_state()
        answer_once("the mount ended before the service was ready", None)
        log.info("clawfs serve: stopped")
    return 0


def serve(cfg: ServeConfig, creds: Credentials, *, foreground: bool, verbose: bool = False) -> int:
    """`clawfs serve`: unlock here (prompts, TPM), then serve in the foreground or in a daemon that this process
    waits for until READY."""
    cfg.store = os.path.realpath(cfg.store)
    if not os.path.exists(cfg.store):
        raise UserError(f"{cfg.store}: no such store (create one with `clawfs mkfs {cfg.store}`)")
    recover_stale_mount(cfg.mountpoint)
    cfg.mountpoint = daemon.check_mountpoint(cfg.mountpoint)
    if os.path.isfile(cfg.store):
        StoreLock(cfg.store).release()  # the store locked by another mount: refused here, before any prompt
    master = Store.unlock_master(cfg.store, creds)

    if foreground:
        logs.to_stderr(verbose or cfg.opts.debug)
        logging.getLogger("clawfs").setLevel(logging.DEBUG if verbose or cfg.opts.debug else logging.INFO)
        outcome: list[tuple[str | None, str | None]] = []

        def tell(error: str | None, warning: str | None) -> None:
            outcome.append((error, warning))
            if warning:
                log.warning("%s", warning)

        run(cfg, master, tell)
        code = 0
        if outcome and outcome[0][0] is not None:
            print(f"clawfs: {outcome[0][0]}", file=sys.stderr)
            code = 1
        # As the forked daemon does: no interpreter teardown.  The store is closed; what may still run is the
        # indexer's model load in native threads, and C++ aborts ("terminate called without an active
        # exception", SIGABRT) when static destructors meet a running std::thread.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            said = r.read().decode(errors="replace")
        if said.startswith("ok"):
            if warning := said.removeprefix("ok").strip():
                print(f"clawfs: warning: {warning}", file=sys.stderr)
            return 0
        os.waitpid(pid, 0)
        raise UserError(said.removeprefix("err:").strip() or "the serve daemon died before it was ready")
    os.close(rfd)
    os.setsid()
    logs.for_daemon(cfg.opts.log_file, verbose or cfg.opts.debug)

    def tell_parent(error: str | None, warning: str | None) -> None:
        with contextlib.suppress(OSError):
            os.write(wfd, b"err:" + error.encode() if error else b"ok " + (warning or "").encode())
            os.close(wfd)
        detach_stdio()

    code = 1
    try:
        code = run(cfg, master, tell_parent)
    except BaseException:
        log.exception("clawfs serve failed")
    finally:
        os._exit(code)



__all__ = ["RUNNING", "ServeConfig", "read_state", "serve", "stop_running", "systemd_credentials"]
