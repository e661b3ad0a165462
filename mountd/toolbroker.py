"""The tool broker: runs the agent's WASM tools each in a jail of its own, for the jailed runtime.

Where: in the `clawfs agent run` holder (mountd/agent_cli.py), the process that already sits outside the
runtime's jail and leases its proxy socket to the mount's daemon.  The runtime gets one end of a socket pair
($CLAWFS_TOOLS_FD in its jail); on it it can only say "call tool NAME with PARAMS" (sandbox/toolworker.py's
frames).  The broker picks the worker by NAME, and the worker loads `tools/NAME` itself, so whatever the runtime
sends it gets NAME's code run under NAME's lease: NAME's allowlist and credentials, nothing more.

Workers: `python -m sandbox.toolworker NAME` in a jail built as `clawfs jail exec --tool NAME` builds it (same
root, seccomp, Landlock, netns with only lo, the mount's agent uid; but /agent read-only, 1 GiB and 64 pids), its
proxy socket leased to the daemon for NAME (the daemon refuses a tool that is not installed), its only other
descriptor a socket pair to this broker.  Started at the first call of NAME, kept warm (the component stays
compiled in it), one call at a time each; a worker that dies or wedges is dropped (its jail killed, its lease
ended) and the call answered with a ToolError of kind `worker` (or `timeout`); the next call of NAME starts a new
one.  A worker has START_SECONDS to say it is ready; a call waits at most the tool's wall time (`limits.toml`,
IronClaw's 60 s by default; the worker enforces it) plus CALL_SLACK, after which the worker is taken as wedged.

A tool-invoke of another tool comes back here mid-call (sandbox/toolworker.py's `invoke` frame): the alias is
checked against the calling tool's own capabilities.json, read here; the depth is counted here (at most
MAX_INVOKE_DEPTH, as in process); a tool already in the chain is refused (its worker is busy with the outer
call); the target runs in its own worker, under its own lease.

Nothing crosses between workers or from the runtime to a worker but the frames relayed here: each worker's
channel is an anonymous socket pair held by this process, each jail has a network namespace of its own, so no
process of one jail can dial another's.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clawfs.errors import UserError
from sandbox import capabilities as caps_mod
from sandbox import jail
from sandbox.errors import ToolError
from sandbox.toolhost import CAPS_NAME, LIMITS_NAME, MAX_INVOKE_DEPTH, TOOL_NAME, load_limits
from sandbox.toolworker import WORKER_ENV, error_frame, recv_frame, send_frame

from .control_socket import JailLease

log = logging.getLogger("clawfs.toolbroker")
START_SECONDS = 60.0  # a worker's jail, Python and the component's compile (IronClaw's big tools: ~1.5 s)
CALL_SLACK = 10.0  # over the tool's own wall time: the worker enforces that; past this it is wedged
WORKER_MEMORY = 1 << 30
WORKER_PIDS = 64
MAX_IN_FLIGHT = 64  # calls the runtime may have open at once (a thread each here); more are refused at once


@dataclass
class Worker:
    name: str
    lease: JailLease
    jail: jail.Jail
    sock: socket.socket
    blake3: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    since: float = field(default_factory=time.time)


class Broker:
    """One per `clawfs agent run`: `runtime_end` goes into the runtime's jail; `start()` serves it."""

    def __init__(self, mnt: str, *, uid: int | None = None, allow_weaker: bool = False) -> None:
        self.home = Path(mnt).resolve()
        self.uid, self.allow_weaker = uid, allow_weaker
        self.runtime_end, self._ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._workers: dict[str, Worker] = {}
        self._starting: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        self.counts = {"calls": 0, "started": 0, "died": 0}

    # -- the runtime's side ----------------------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._serve, name="tool-broker", daemon=True).start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                frame = recv_frame(self._ours)
            except OSError:
                frame = None
            if frame is None:
                return  # the runtime has gone (or sent something that is not a frame): no more calls
            if not self._slots.acquire(blocking=False):
                self._send(error_frame(frame.get("id"), ToolError(
                    "worker", f"more than {MAX_IN_FLIGHT} tool calls in flight: try again when some have ended")))
                continue
            threading.Thread(target=self._answer, args=(frame,), name="tool-call", daemon=True).start()

    def _answer(self, frame: dict[str, Any]) -> None:
        try:
            self._send(self.call(frame))
        finally:
            self._slots.release()

    def _send(self, reply: dict[str, Any]) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            send_frame(self._ours, reply)

    def call(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Relay one call frame to its tool's worker; always an answer frame (a ToolError's when it failed)."""
        call_id, name = frame.get("id"), frame.get("tool")
        try:
            if frame.get("op") != "call" or not isinstance(name, str) or not TOOL_NAME.match(name):
                raise ToolError("not-found", f"{name!r} is not a tool name")
            with self._lock:
                self.counts["calls"] += 1
            return self._run(name, frame.get("params"), frame.get("context"), call_id, 0, (name,))
        except ToolError as e:
            return error_frame(call_id, e)

    def _run(self, name: str, params: object, context: object, call_id: object, depth: int,
             chain: tuple[str, ...]) -> dict[str, Any]:
        """NAME's worker runs one call at `depth` (0 from the runtime; the broker's count, never the caller's)."""
        worker = self._worker(name)
        frame = {"id": call_id, "op": "call", "tool": name, "params": params, "context": context, "depth": depth}
        return self._relay(worker, frame, depth, chain)

    def _relay(self, worker: Worker, frame: dict[str, Any], depth: int, chain: tuple[str, ...]) -> dict[str, Any]:
        try:
            wall = load_limits(self.home / "tools" / worker.name / LIMITS_NAME).timeout_s
        except ToolError:
            wall = 60.0  # the worker refuses the call with the file's error itself
        # Bounded: two chains of tool-invokes crossing (A->B while B->A) must not wait on each other for ever.
        if not worker.lock.acquire(timeout=wall + CALL_SLACK):
            raise ToolError("timeout", f"the worker of {worker.name!r} stayed busy for {wall + CALL_SLACK:g} s")
        try:
            try:
                worker.sock.settimeout(wall + CALL_SLACK)
                send_frame(worker.sock, frame)
                reply = recv_frame(worker.sock)
                while reply is not None and reply.get("op") == "invoke":  # the tool invokes another, mid-call
                    send_frame(worker.sock, self._invoke(worker.name, reply, depth, chain))
                    reply = recv_frame(worker.sock)
            except TimeoutError:
                self._drop(worker, kill=True)
                raise ToolError("timeout", f"the worker of {worker.name!r} did not answer within "
                                f"{wall + CALL_SLACK:g} s: it was stopped") from None
            except OSError as e:
                reply = None
                log.warning("tool %s: worker channel: %s", worker.name, e)
            if reply is None:
                self._drop(worker, kill=True)
                raise ToolError("worker", f"the worker of {worker.name!r} died during the call "
                                f"({self._stopped_by(worker)}); the next call starts a new one")
            worker.calls += 1
        finally:
            worker.lock.release()
        reply["id"] = frame.get("id")
        return reply

    def _invoke(self, caller: str, req: dict[str, Any], depth: int, chain: tuple[str, ...]) -> dict[str, Any]:
        """A worker's tool-invoke: the alias checked against the caller's own capabilities.json (read here, not
        taken from the worker), the depth counted here, a tool already in the chain refused (its worker is busy
        with the outer call), then the target run in its own worker."""
        alias, target = req.get("alias"), req.get("target")
        claimed = req.get("depth")  # the worker's own nesting (a self-invoke runs inside it): a floor, never less
        depth = max(depth + 1, claimed if isinstance(claimed, int) else 0) - 1
        try:
            try:
                caps = caps_mod.load(self.home / "tools" / caller / CAPS_NAME)
            except caps_mod.CapabilitiesError as e:
                raise ToolError("capabilities", str(e)) from None
            if not isinstance(alias, str) or caps.aliases.get(alias) != target or not isinstance(target, str):
                raise ToolError("capabilities", f"alias {alias!r} does not name {target!r} in {caller}'s "
                                "tool_invoke.aliases")
            if depth + 1 >= MAX_INVOKE_DEPTH:
                raise ToolError("capabilities", f"tool-invoke nested more than {MAX_INVOKE_DEPTH} deep")
            if target in chain:
                raise ToolError("capabilities", f"tool-invoke of {target!r} from within its own call "
                                f"({' -> '.join(chain)}): its worker is busy with it")
            return self._run(target, req.get("params"), None, None, depth + 1, (*chain, target))
        except ToolError as e:
            return error_frame(None, e)

    @staticmethod
    def _stopped_by(worker: Worker) -> str:
        code = worker.jail.proc.poll()
        limits = worker.jail.stopped_by
        if limits:
            return f"stopped by the {', '.join(limits)} limit"
        return f"exit status {code}" if code is not None else "its channel closed"

    # -- workers ---------------------------------------------------------------------------------------------------

    def _worker(self, name: str) -> Worker:
        with self._lock:
            if self._closed.is_set():
                raise ToolError("worker", "the tool broker is stopping")
            starting = self._starting.setdefault(name, threading.Lock())
        with starting:  # one start per tool at a time; the others wait for it
            with self._lock:
                w = self._workers.get(name)
            if w is not None and w.jail.proc.poll() is None:
                return w
            if w is not None:
                self._drop(w, kill=True)
            w = self._spawn(name)
            with self._lock:
                self._workers[name] = w
                self.counts["started"] += 1
            return w

    def _spawn(self, name: str) -> Worker:
        try:
            lease = JailLease.open(str(self.home), name)  # the daemon refuses a tool that is not installed
        except UserError as e:
            raise ToolError("not-found", str(e)) from None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            uid = self.uid if self.uid is not None else lease.agent_uid if lease.agent_uid is not None \
                else jail.JAIL_UID
            gid = lease.agent_gid if self.uid is None and lease.agent_gid is not None else uid
            cfg = jail.JailConfig(mount=str(self.home), uid=uid, gid=gid, allow_weaker=self.allow_weaker,
                                  ca_pem=lease.ca_pem, memory=WORKER_MEMORY, pids=WORKER_PIDS, agent_readonly=True)
            try:
                # A session of its own: a signal to the holder's group (^C, `clawfs serve` stopping it) must not
                # kill a worker under a turn that is finishing; close() ends it, the daemon if the holder dies.
                j = jail.start(cfg, ["python3", "-m", "sandbox.toolworker", name], fds={WORKER_ENV: theirs.fileno()},
                               stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(), new_session=True)
            except jail.JailError as e:
                raise ToolError("worker", f"the jail of {name!r}'s worker cannot be built: {e}") from None
        except BaseException:
            ours.close()
            lease.close()
            raise
        finally:
            theirs.close()
        worker = Worker(name, lease, j, ours)
        try:
            assert j.proxy_socket is not None
            lease.hand_over(j.proxy_socket, asdict(j.cgroup) if j.cgroup else None, j.root_dir)
            j.proxy_socket.close()  # the daemon serves its own copy, for `name` alone
            j.proxy_socket = None
            ours.settimeout(START_SECONDS)
            ready = recv_frame(ours)
        except (UserError, OSError) as e:
            self._stop(worker, kill=True)
            raise ToolError("worker", f"the worker of {name!r} did not start: {e}") from None
        if not ready or ready.get("ready") is not True:
            self._stop(worker, kill=True)
            if ready:
                raise ToolError(str(ready.get("kind") or "worker"), str(ready.get("reason") or "did not load"))
            raise ToolError("worker", f"the worker of {name!r} ended before it was ready "
                            f"({self._stopped_by(worker)})")
        worker.blake3 = str(ready.get("blake3") or "")
        log.info("tool %s: worker started in %.0f ms (jail ready in %.0f ms)", name,
                 (time.perf_counter() - j.started) * 1000, j.ready_seconds * 1000)
        return worker

    def _drop(self, worker: Worker, *, kill: bool) -> None:
        with self._lock:
            if self._workers.get(worker.name) is worker:
                del self._workers[worker.name]
                self.counts["died"] += 1
        self._stop(worker, kill=kill)

    @staticmethod
    def _stop(worker: Worker, *, kill: bool) -> None:
        """End a worker: its channel closed (it exits), else killed; its jail removed; its lease ended."""
        with contextlib.suppress(OSError):
            worker.sock.shutdown(socket.SHUT_RDWR)
        worker.sock.close()
        if kill:
            worker.jail.kill()
        try:
            worker.jail.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.jail.kill()
            worker.jail.wait()
        try:
            worker.lease.end()
        except UserError as e:
            log.warning("tool %s: ending its proxy lease: %s", worker.name, e)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counts, "workers": {w.name: {"calls": w.calls, "since": round(w.since, 3),
                                                        "blake3": w.blake3} for w in self._workers.values()}}

    def close(self) -> None:
        """Stop every worker (after the runtime has ended: no call is in flight)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._ours.shutdown(socket.SHUT_RDWR)
        self._ours.close()
        self.runtime_end.close()
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            self._stop(w, kill=False)
