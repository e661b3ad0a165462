"""Supervising the agent runtime from the mount daemon: start it, watch its liveness pings, restart it with
exponential backoff when it dies or hangs, give up after too many failures, and say all of it in a status the
daemon shows in `.clawfs/status` and `clawfs status`.

Liveness: the daemon makes an AF_UNIX datagram socket pair and the child inherits one end (its number in
$CLAWFS_LIVENESS_FD, agent/liveness.py writes to it); the child sends a datagram at start and every few seconds
from its main loop.  The daemon's end has SO_PASSCRED, so the kernel stamps every ping with the sender's pid and
uid as the daemon's namespaces see them: the pid a host `kill` takes and the uid a host `ps` shows, even when the
runtime is pid 2 of a jail's pid namespace and uid 1000 of its user namespace.  No ping for `ping_timeout`
seconds: the child (its process group and the pinging pid) is killed and restarted.

Policy (RestartPolicy, a pure function of an injected clock): the first failure is restarted at once, the next
ones after 1 s doubling to 5 min (the backoff is for a runtime that keeps failing: one crash after a healthy run
costs no wait); back to an immediate restart once a run lasted 10 minutes; 5 failures within 10 minutes and the
runtime stays down (`failed`, with the reason) until the daemon restarts.  Any exit the daemon did not ask for is
a failure, status 0 included: the runtime is meant to run as long as the mount.

`on_alive(pid)` is called at the first ping of every run, with the pinger's pid (the daemon lowers the jail's
CPU weight to its steady value there: sandbox/jail.settle_cpu).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernel.syscall import libc

log = logging.getLogger("clawfs.supervisor")

LIVENESS_ENV = "CLAWFS_LIVENESS_FD"
RUNNING, RESTARTING, FAILED, STOPPED = "running", "restarting", "failed", "stopped"
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid

Spawn = Callable[[int], "subprocess.Popen[bytes]"]
"""Start the child with this fd open in it (pass_fds, and $CLAWFS_LIVENESS_FD naming it) in a session of its
own (start_new_session: its process group is killed with it)."""


@dataclass
class RestartPolicy:
    first: float = 1.0
    cap: float = 300.0
    healthy_reset: float = 600.0
    window: float = 600.0
    max_failures: int = 5

    def __post_init__(self) -> None:
        self._next = 0.0  # the first restart is immediate; `first` is the backoff's first step, from the second on
        self._failures: deque[float] = deque()

    def on_failure(self, now: float, started_at: float) -> float | None:
        """A run that started at `started_at` failed at `now`: seconds to wait before the next start, or None
        when the runtime must stay down."""
        if now - started_at >= self.healthy_reset:
            self._next = 0.0
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.window:
            self._failures.popleft()
        if len(self._failures) >= self.max_failures:
            return None
        delay, self._next = self._next, min(self.cap, self._next * 2 or self.first)
        return delay


@dataclass
class Status:
    state: str = STOPPED
    restarts: int = 0
    last_error: str | None = None
    pid: int | None = None
    uid: int | None = None
    since: float = 0.0  # wall-clock time of the last state change
    next_start: float | None = None  # wall-clock time of the next start while restarting

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Supervisor:
    """One child, started by `spawn`, kept alive from a thread of its own until `stop()`."""

    def __init__(self, spawn: Spawn, *, ping_timeout: float = 30.0, policy: RestartPolicy | None = None,
                 stop_grace: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, on_alive: Callable[[int], object] | None = None) -> None:
        self._spawn = spawn
        self._on_alive = on_alive
        self.ping_timeout = ping_timeout
        self.policy = policy or RestartPolicy()
        self.stop_grace = stop_grace
        self._clock, self._wall = clock, wall
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._status = Status(since=wall())
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self.pinged = threading.Event()  # set at the first ping of every run, cleared when a run ends
        self.settled = threading.Event()  # set when the first run pinged, or the runtime gave up (failed)

    def status(self) -> Status:
        with self._lock:
            return Status(**self._status.__dict__)

    def _set(self, **changes: Any) -> None:
        with self._lock:
            if "state" in changes and changes["state"] != self._status.state:
                changes.setdefault("since", self._wall())
            for k, v in changes.items():
                setattr(self._status, k, v)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="clawfs-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the child to finish (SIGTERM: the runtime completes its turns), kill it after `stop_grace`
        seconds, and wait for the supervising thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # -- the supervising thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = self._clock()
                reason = self._one_run()
                if self._stop.is_set():
                    break
                delay = self.policy.on_failure(self._clock(), started)
                if delay is None:
                    why = (f"{reason}; {self.policy.max_failures} failures within "
                           f"{self.policy.window / 60:g} minutes: not restarted (restart the service after fixing it)")
                    log.error("agent runtime: %s", why)
                    self._set(state=FAILED, last_error=why, pid=None, uid=None, next_start=None)
                    self.settled.set()
                    self._stop.wait()  # stays down, the mount stays up
                    return
                log.warning("agent runtime: %s; restarting in %g s", reason, delay)
                self._set(state=RESTARTING, last_error=reason, pid=None, uid=None,
                          next_start=self._wall() + delay)
                self._stop.wait(delay)
                if not self._stop.is_set():
                    with self._lock:
                        self._status.restarts += 1
        except Exception as e:  # the daemon must keep serving the mount whatever happens here
            log.exception("agent runtime supervisor failed")
            self._set(state=FAILED, last_error=f"the supervisor failed: {e!r}", pid=None, uid=None)
            self.settled.set()
            return
        self._set(state=STOPPED, pid=None, uid=None, next_start=None)

    def _one_run(self) -> str:
        """Start the child and watch it until it exits, hangs or we are stopping; returns why it ended."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        try:
            try:
                child = self._spawn(theirs.fileno())
            except OSError as e:
                return f"cannot start: {e}"
            finally:
                theirs.close()  # only the child holds its end now: its death ends the socket's writers
            self._child = child
            # `running` only from its first ping on (with the pinger's pid and uid); until then the state stays
            # what it was (stopped at the start, restarting after a failure) with the child's pid
            self._set(pid=child.pid, uid=None, next_start=None)
            log.info("agent runtime started (pid %d)", child.pid)
            last_line: list[str] = []
            reader = None
            if child.stderr is not None:
                reader = threading.Thread(target=_drain, args=(child.stderr, last_line), daemon=True,
                                          name="clawfs-runtime-stderr")
                reader.start()
            reason = self._watch(child, ours)
            if reader is not None:
                reader.join(timeout=2.0)  # its last words, e.g. the settings file that is broken
            # its last words say why it exited by itself (e.g. a broken settings file); not after a signal
            return f"{reason}: {last_line[0]}" if last_line and reason.startswith("exited") else reason
        finally:
            ours.close()
            self.pinged.clear()
            self._child = None

    def _watch(self, child: subprocess.Popen[bytes], ours: socket.socket) -> str:
        last = self._clock()
        sender: int | None = None
        while True:
            if self._stop.is_set():
                self._terminate(child, sender)
                return "stopped"
            code = child.poll()
            if code is not None:
                return _exit_reason(code)
            left = self.ping_timeout - (self._clock() - last)
            if left <= 0:
                self._kill(child, sender)
                return f"no liveness ping in {self.ping_timeout:g} s: killed"
            ready, _, _ = select.select([ours], [], [], min(left, 0.1))
            if ready:
                creds = _recv_ping(ours)
                if creds is not None:
                    last = self._clock()
                    sender = creds[0]
                    if not self.pinged.is_set():
                        self._set(state=RUNNING, pid=creds[0], uid=creds[1])
                        log.info("agent runtime is alive (pid %d, uid %d as the host sees them)", creds[0], creds[1])
                        if self._on_alive is not None:  # before `settled`: READY comes after it
                            try:
                                self._on_alive(creds[0])
                            except Exception:  # a hook's failure must not end the supervision
                                log.exception("agent runtime: the first-ping hook failed")
                        self.pinged.set()
                        self.settled.set()

    def _terminate(self, child: subprocess.Popen[bytes], sender: int | None) -> None:
        _signal(child.pid, sender, signal.SIGTERM)
        try:
            child.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            log.warning("agent runtime did not stop within %g s of SIGTERM: killed", self.stop_grace)
            self._kill(child, sender)

    def _kill(self, child: subprocess.Popen[bytes], sender: int | None) -> None:
        _signal(child.pid, sender, signal.SIGKILL)
        child.wait()


def _signal(pid: int, sender: int | None, sig: int) -> None:
    """The child's process group (its session, start_new_session) and the process that pinged, which in a jail
    is a descendant in other namespaces and possibly another group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    if sender is not None and sender != pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(sender, sig)


def _recv_ping(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of a ping's sender, as this process's namespaces see them; None for a datagram without."""
    try:
        _, anc, _, _ = sock.recvmsg(64, socket.CMSG_SPACE(_UCRED.size))
    except (BlockingIOError, InterruptedError):
        return None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            pid, uid, _gid = _UCRED.unpack(data[:_UCRED.size])
            return pid, uid
    return None


def _drain(stream: Any, last: list[str]) -> None:
    """The child's stderr into the daemon's log, keeping its last line that is not an INFO or DEBUG log line
    (what it said when it failed) for the status's last_error."""
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                log.info("runtime: %s", line)
                if " INFO " not in line and " DEBUG " not in line:
                    last[:] = [line[-300:]]


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    if 128 < code <= 128 + 64:  # the jail's pid 1 reports a command killed by signal N as 128 + N, as shells do
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(code - 128).name} (exit status {code})"
    return f"exited with status {code}"


PR_SET_PDEATHSIG = 1


def spawn_command(argv: list[str], env: dict[str, str] | None = None, **popen: Any) -> Spawn:
    """A Spawn running `argv` with the liveness fd inherited and named in the environment.  The child gets
    SIGKILL when the thread that started it (the supervisor's) ends, so a daemon killed with -9 leaves no
    runtime behind on its dead mount; set after any uid change (which would clear it), just before exec."""
    prctl = libc().prctl  # resolved before the fork: nothing but the call itself runs in the child

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def spawn(fd: int) -> subprocess.Popen[bytes]:
        child_env = dict(os.environ if env is None else env)
        child_env[LIVENESS_ENV] = str(fd)
        popen.setdefault("stderr", subprocess.PIPE)  # drained into the daemon's log (_drain)
        return subprocess.Popen(argv, env=child_env, pass_fds=(fd,), start_new_session=True,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, **popen)

    return spawn
