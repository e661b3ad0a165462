"""A jailed tool worker, and the wire both it and the agent runtime speak to the tool broker (mountd/toolbroker.py).

`python -m sandbox.toolworker NAME [HOME]` runs the calls of one installed tool, `HOME/tools/NAME` (HOME defaults
to /agent), inside a jail of its own whose proxy socket the mount's daemon serves for NAME alone (`--tool NAME`
semantics: NAME's allowlist and credentials).  Its `ToolHost` is restricted to NAME (`only`: a tool-invoke of
another tool goes back to the broker, which runs it in that tool's worker, since here its HTTP would leave under
NAME's lease) and sends every request to
$HTTP_PROXY through `ProxyGateway`; so the process that runs a tool's code never holds a secret value and can
reach only what the daemon allows NAME.  The channel to the broker is the socket whose number is in
$CLAWFS_TOOLWORKER_FD (a socketpair end: nothing in the jail can dial the worker, nor the worker anything but the
broker).  Calls run one at a time; the worker ends when the broker closes the channel.

Wire (both hops: runtime <-> broker, broker <-> worker): frames of a 4-byte big-endian length and a JSON object.
- request `{"id": N, "op": "call", "tool": NAME, "params": TEXT, "context": TEXT|null}`;
- reply `{"id": N, "ok": true, "output": TEXT, "logs": [[LEVEL, TEXT]...], "ms": F, "fuel": N|null}` or
  `{"id": N, "ok": false, "kind": KIND, "reason": TEXT, "detail": {...}, "logs": [...]}` (a ToolError's fields);
- the worker's first frame, once it has loaded (compiled) its tool: `{"ready": true, "blake3": HEX}`, or
  `{"ready": false, "kind": ..., "reason": ...}`;
- mid-call, a worker's tool-invoke of another tool: `{"op": "invoke", "alias": A, "target": T, "params": TEXT,
  "depth": N}` to the broker, answered with a reply frame (the broker sets `depth` in the call frames it relays).
`BrokerClient` is the runtime's end: calls from several turns at once, answers matched by id.

Store-free, imports nothing of clawfs, agent or mountd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Any

from .errors import ToolError
from .toolhost import Invoker, Outcome, ProxyGateway, ToolHost

WORKER_ENV = "CLAWFS_TOOLWORKER_FD"  # the worker's channel to the broker
BROKER_ENV = "CLAWFS_TOOLS_FD"  # the runtime's channel to the broker
MAX_FRAME = 32 << 20
log = logging.getLogger("clawfs.toolworker")


# -- frames ---------------------------------------------------------------------------------------------------------

def send_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    if len(data) > MAX_FRAME:
        raise ValueError(f"a frame of {len(data)} bytes is over {MAX_FRAME}")
    sock.sendall(struct.pack(">I", len(data)) + data)


def _exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame; None when the peer has closed (or sent something that is not a frame)."""
    head = _exactly(sock, 4)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head)
    if length > MAX_FRAME:
        return None
    data = _exactly(sock, length)
    if data is None:
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def outcome_frame(call_id: object, out: Outcome) -> dict[str, Any]:
    return {"id": call_id, "ok": True, "output": out.output, "logs": [list(x) for x in out.logs], "ms": out.ms,
            "fuel": out.fuel}


def error_frame(call_id: object, e: ToolError) -> dict[str, Any]:
    return {"id": call_id, "ok": False, "kind": e.kind, "reason": e.reason, "detail": e.detail,
            "logs": [list(x) for x in e.logs]}


def from_frame(frame: dict[str, Any]) -> Outcome:
    """The Outcome a reply frame carries, or its ToolError raised."""
    logs = [(str(x[0]), str(x[1])) for x in frame.get("logs") or [] if isinstance(x, list) and len(x) == 2]
    if frame.get("ok") is True and isinstance(frame.get("output"), str):
        fuel = frame.get("fuel")
        return Outcome(frame["output"], logs, float(frame.get("ms") or 0.0), fuel if isinstance(fuel, int) else None)
    detail = frame.get("detail") if isinstance(frame.get("detail"), dict) else {}
    err = ToolError(str(frame.get("kind") or "worker"), str(frame.get("reason") or "no answer from the tool's worker"),
                    **{str(k): str(v) for k, v in (detail or {}).items()})
    err.logs = logs
    raise err


# -- the runtime's end ------------------------------------------------------------------------------------------------

class BrokerClient:
    """The agent runtime's side of the broker socket: `call` from any thread; a reader thread hands each answer to
    the caller waiting for its id.  A broker that has gone away is a ToolError("worker") for every call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._closed = False
        threading.Thread(target=self._read, name="tool-broker-client", daemon=True).start()

    @classmethod
    def from_env(cls) -> BrokerClient | None:
        """The client of $CLAWFS_TOOLS_FD's socket: one per process (a second socket object on the same descriptor
        would race the first one's reader, and closing either would close both)."""
        global _FROM_ENV
        with _FROM_ENV_LOCK:
            if _FROM_ENV is None:
                value = os.environ.get(BROKER_ENV, "")
                if not value.isdigit():
                    return None
                try:
                    sock = socket.socket(fileno=int(value))
                except OSError:
                    return None
                _FROM_ENV = cls(sock)
            return _FROM_ENV

    def _read(self) -> None:
        while True:
            try:
                frame = recv_frame(self.sock)
            except OSError:
                frame = None
            if frame is None:
                with self._lock:
                    self._closed = True
                    waiting = list(self._waiting.values())
                for event, _ in waiting:
                    event.set()
                return
            with self._lock:
                slot = self._waiting.get(frame.get("id", -1))
            if slot is not None:
                slot[1].append(frame)
                slot[0].set()

    def call(self, name: str, params: str, context: str | None = None) -> Outcome:
        event, box = threading.Event(), list[dict[str, Any]]()
        with self._lock:
            if self._closed:
                raise ToolError("worker", "the tool broker has gone away (was `clawfs agent run` stopped?)")
            self._next += 1
            call_id = self._next
            self._waiting[call_id] = (event, box)
        try:
            with self._send_lock:
                send_frame(self.sock, {"id": call_id, "op": "call", "tool": name, "params": params,
                                       "context": context})
            event.wait()  # the broker bounds every call by the tool's wall time, and answers a dead worker
        except OSError as e:
            raise ToolError("worker", f"the tool broker cannot be reached: {e}") from None
        finally:
            with self._lock:
                self._waiting.pop(call_id, None)
        if not box:
            raise ToolError("worker", "the tool broker has gone away (was `clawfs agent run` stopped?)")
        return from_frame(box[0])


_FROM_ENV: BrokerClient | None = None
_FROM_ENV_LOCK = threading.Lock()


# -- the worker -------------------------------------------------------------------------------------------------------

def serve(sock: socket.socket, host: ToolHost, name: str) -> None:
    """Load NAME (compiling it now, not at the first call), say ready, then answer calls until the channel closes."""
    try:
        tool = host.tool(name)  # compiled here, and kept warm in this process
    except ToolError as e:
        send_frame(sock, {"ready": False, "kind": e.kind, "reason": e.reason})
        return
    send_frame(sock, {"ready": True, "blake3": tool.loaded.blake3})
    while True:
        frame = recv_frame(sock)
        if frame is None:
            return
        call_id = frame.get("id")
        params, context = frame.get("params"), frame.get("context")
        if frame.get("op") != "call" or frame.get("tool") != name or not isinstance(params, str) \
                or not (context is None or isinstance(context, str)):
            reply = error_frame(call_id, ToolError("invalid", f"this worker answers calls of {name!r} only"))
        else:
            depth = frame.get("depth")
            try:
                reply = outcome_frame(call_id, host.run(name, params, context,
                                                        _depth=depth if isinstance(depth, int) else 0))
            except ToolError as e:
                reply = error_frame(call_id, e)
        send_frame(sock, reply)


def invoker(sock: socket.socket) -> Invoker:
    """A tool-invoke of another tool, asked of the broker on the channel mid-call (the broker checks the alias
    against this tool's capabilities itself and runs the target in the target's own worker)."""
    def invoke(alias: str, target: str, params: str, depth: int) -> Outcome:
        send_frame(sock, {"op": "invoke", "alias": alias, "target": target, "params": params, "depth": depth})
        reply = recv_frame(sock)
        if reply is None:
            raise ToolError("worker", "the broker went away during a tool-invoke")
        return from_frame(reply)
    return invoke


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"clawfs tool worker {argv[0] if argv else '?'}: %(message)s")
    if not argv:
        print("usage: python -m sandbox.toolworker NAME [HOME]", file=sys.stderr)
        return 2
    name, home = argv[0], Path(argv[1] if len(argv) > 1 else "/agent")
    fd = os.environ.get(WORKER_ENV, "")
    proxy = os.environ.get("HTTP_PROXY", "")
    if not fd.isdigit() or not proxy:
        print(f"clawfs tool worker: ${WORKER_ENV} and $HTTP_PROXY must be set (the broker starts workers)",
              file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(fd))
    cache = os.environ.get("CLAWFS_WASM_CACHE")
    host = ToolHost(home, gateway=ProxyGateway(proxy), cache_dir=Path(cache) if cache else None, only=name,
                    invoker=invoker(sock))
    with contextlib.suppress(OSError):  # the broker went away: nothing to answer
        serve(sock, host, name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
