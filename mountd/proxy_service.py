"""The egress proxy in the mount daemon: the one process that holds the store's key serves every jail's proxy
socket, with the owner's policy and the secret values read from the store itself.

Why here (decision).  The jail's runtime and tools see only the mount and placeholders (`clawfs-secret:NAME`);
secret files are write-only through FUSE.  The values must be swapped in somewhere outside the jail, by a
process that can read them: the daemon, which holds the key and reads the store directly (clawfs/home_files.py,
never through FUSE).  A proxy in the `clawfs jail exec` process could read nothing but the mount, i.e. no
secret, and a CLI that opened the store for them would be a second holder of the key.  So `clawfs jail exec`
(and `clawfs agent run`) only build the jail, then hand its listening proxy socket to the daemon over the
mount's control socket (mountd/control_socket.py: SCM_RIGHTS on a 0600 Unix socket, the peer's uid checked
with SO_PEERCRED) together with the tool name; the daemon serves it until the jail ends.  The socket is the
caller's identity (it exists in that one jail's network namespace), so the tool name given at hand-over, by
the owner's own command, decides whose allowlist applies, and nothing the jail sends can change it.

Live policy.  Nothing is read at hand-over but to refuse a tool that does not exist: at each request the proxy
asks for `settings/llm.toml` (the LLM endpoint and its `api_key_secret`), `settings/network.toml` (the runtime's
allowlist) or `tools/NAME/capabilities.json` (a tool's), from the store as it is now; so an owner's edit is
in force from the next request on, and the old endpoint no longer is.  Secret values for injection
(`StoreCredentials`, the proxy's CredentialSource: `secrets/NAME`) and for the exact-value leak check (every
value of `secrets/` and `users/<id>/secrets/`) are read the same way.  The store is one-threaded: every read
runs in the mount's loop thread between two FUSE requests (`fuse_ops.loop_caller`), and sees what the mount
has not committed yet.

Audit.  Every request, allowed or refused with its reason, is a JSON line of `.clawfs/audit/network.jsonl`:
sealed in the store as `files.jsonl` is (clawfs/policy.py's AuditLog, key `audit.network`), the owner's to read,
not the agent's (the policy refuses it everything under `.clawfs/audit/`).  Lines are queued and written by a
thread of their own in batches, so a request never waits for the store's write.

TLS.  The store's CA (sandbox/tls_ca.py) is kept in the store as a sealed setting (`proxy.ca`, made at the first
mount that needs it); the proxy terminates TLS with it for a CONNECT to a host with a credential binding, and
its certificate (never the key) goes to the jail's holder with the lease, for the jail's trust bundle.

`.clawfs/status` gains `proxy` (`status()`): the control socket, the jails served now, allowed/refused counts.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import queue
import socket
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clawfs import home_files, policy
from clawfs.errors import FsError, UserError
from clawfs.store import Store
from kernel import cgroups
from sandbox import capabilities, proxy, tls_ca
from sandbox.capabilities import Endpoint, HttpCapability
from sandbox.egress import Egress, EgressConfig, ToolIdentity

from . import control_socket as cs

log = logging.getLogger("clawfs.proxy")
T = TypeVar("T")
LoopCall = Callable[[Callable[[], Any]], Any]
RUNTIME = "runtime"  # the caller's name when no tool is named: the agent runtime, settings/network.toml's list
CA_SETTING = "proxy.ca"
MIN_CHECKED = 8
"""Shorter secret values are left out of the exact-value leak check (still injected): a value such as "yes" or a
4-digit PIN would refuse every request that happens to contain it."""
COALESCE_SECONDS = 0.2  # audit lines gathered per write (a crash loses at most these, as the mount's own batching)


# -- policy, parsed from the store's bytes ---------------------------------------------------------------------

def _toml(data: bytes | None, path: str) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        return tomllib.loads(data.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e}): fix the file") from None


def llm_endpoint(data: bytes | None) -> proxy.LlmEndpoint | None:
    """settings/llm.toml's [llm] base_url (and api_key_secret), if it is an http(s) URL."""
    llm = _toml(data, "settings/llm.toml").get("llm", {})
    url = llm.get("base_url") if isinstance(llm, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None
    secret = llm.get("api_key_secret")
    return proxy.LlmEndpoint.from_url(url, secret if isinstance(secret, str) and secret else None)


def network_allowlist(data: bytes | None) -> HttpCapability | None:
    """settings/network.toml's `[[allow]]` entries (host, path_prefix, methods): the runtime's allowlist."""
    path = "settings/network.toml"
    entries = _toml(data, path).get("allow", [])
    if not isinstance(entries, list):
        raise UserError(f"{path}: `allow` must be an array of tables ([[allow]] host = ...)")
    allow = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("host"), str):
            raise UserError(f"{path}: each [[allow]] needs host = \"name\"")
        allow.append(Endpoint(e["host"].lower(), e.get("path_prefix"),
                              tuple(m.upper() for m in e.get("methods", []))))
    return HttpCapability(allowlist=tuple(allow)) if allow else None


def tool_capability(data: bytes | None, tool: str) -> HttpCapability | None:
    path = f"tools/{tool}/capabilities.json"
    if data is None:
        raise UserError(f"no tool {tool!r} in the home's tools/ ({path} is missing; see `clawfs tool list`)")
    try:
        return capabilities.parse(data, path).http
    except capabilities.CapabilitiesError as e:
        raise UserError(f"{path}: {e}") from None


def _valid_tool(tool: str) -> bool:
    return bool(tool) and "/" not in tool and tool not in (".", "..") and "\0" not in tool


# -- the service ------------------------------------------------------------------------------------------------

class StoreCredentials:
    """The proxy's CredentialSource: `secrets/NAME` of the home, read from the store in the loop."""

    def __init__(self, service: ProxyService) -> None:
        self._service = service

    def secret(self, tool: ToolIdentity, name: str) -> str | None:
        value: str | None = self._service.in_loop(lambda: home_files.secret(self._service.store, name))
        return value


@dataclass
class _Jail:
    id: int
    tool: str
    px: proxy.EgressProxy
    listener: socket.socket
    conn: socket.socket
    cgroup: dict[str, Any] | None = None
    root_dir: str = ""
    since: float = field(default_factory=time.time)


class ProxyService:
    """One per mount daemon: the control socket, the jails' proxies, the network audit."""

    def __init__(self, store: Store, mountpoint: str, *, agent_uid: int | None, agent_gid: int | None,
                 readonly: bool = False) -> None:
        self.store, self.mountpoint = store, mountpoint
        self._call: LoopCall = _no_loop
        self.error: str | None = "not started"
        self.agent_uid, self.agent_gid = agent_uid, agent_gid
        self.audit = policy.AuditLog(store, readonly=readonly, key=policy.NETWORK_AUDIT_KEY)
        self.egress = Egress(EgressConfig(credentials=StoreCredentials(self)))
        self.path = cs.control_path(mountpoint)
        self.counts = {"allowed": 0, "refused": 0}
        self._jails: dict[int, _Jail] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._lines: queue.Queue[str] = queue.Queue()
        self._write_lock = threading.Lock()  # only flush() takes lines off the queue, one caller at a time
        self._pending = threading.Event()
        self._unwritten: list[str] = []
        self._closing = threading.Event()
        self.readonly = readonly
        self.ca: tls_ca.StoreCA | None = None
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._request = threading.local()  # the proxy serves each connection in a thread of its own

    # -- life -------------------------------------------------------------------------------------------------

    def start(self, call: LoopCall) -> None:
        """Listen on the control socket; `call` runs a function in the mount's loop (fuse_ops.loop_caller).
        A socket that cannot be made leaves the mount up without a proxy (the reason in the log and status)."""
        self._call = call
        try:
            self.ca = self._store_ca()
        except (tls_ca.CAError, FsError) as e:  # the proxy still runs; CONNECTs are tunnelled, never terminated
            log.error("the store's CA cannot be used (%s): no TLS termination on this mount", e)
        try:
            self._listen()
        except (OSError, UserError) as e:
            self.error = f"no control socket at {self.path}: {e}"
            log.warning("egress proxy off for this mount: %s", self.error)
            return
        self.error = None
        for target, name in ((self._accept_loop, "clawfs-control"), (self._write_loop, "clawfs-audit")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("egress proxy: control socket %s", self.path)

    def _store_ca(self) -> tls_ca.StoreCA:
        """The store's CA: read from the store, or made and kept there (in the loop: start runs there)."""
        pem = self.store.setting(CA_SETTING)
        if isinstance(pem, str):
            return tls_ca.from_bytes(pem.encode())
        ca = tls_ca.generate()
        if not self.readonly:
            with self.store.transaction():
                self.store.set_setting(CA_SETTING, tls_ca.to_bytes(ca).decode())
        return ca

    def _listen(self) -> None:
        cs.make_dir(os.path.dirname(self.path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a socket left by a daemon that died (the mountpoint was free: check_mountpoint)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)
        try:
            s.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(16)
        self._listener = s

    def close(self) -> None:
        """Stop serving (the loop may have ended already: what is left of the audit is written here, directly,
        since no request runs any more)."""
        self._closing.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        with self._lock:
            jails = list(self._jails.values())
        for j in jails:
            with contextlib.suppress(OSError):
                j.conn.shutdown(socket.SHUT_RDWR)
            self._stop_jail(j)
        for t in self._threads:
            t.join(timeout=5)
        self.egress.close()
        with self._write_lock:
            rest, self._unwritten = self._unwritten + self._drain(), []
            if rest:
                self.audit.append(rest)

    def in_loop(self, fn: Callable[[], T]) -> T:
        """Run fn where the store lives; a store error refuses the request with its reason."""
        try:
            result: T = self._call(fn)
            return result
        except RuntimeError as e:
            raise proxy.Refused(503, f"the mount is going away: {e}") from None
        except UserError as e:
            raise proxy.Refused(403, str(e)) from None
        except FsError as e:
            raise proxy.Refused(403, f"cannot read the policy: {e}") from None

    def status(self) -> dict[str, Any]:
        """The `proxy` part of `.clawfs/status` (called in the loop: memory only, never the store)."""
        with self._lock:
            jails = [{"id": j.id, "tool": j.tool, "since": round(j.since, 3), **j.px.audit.counts}
                     for j in self._jails.values()]
            out: dict[str, Any] = {"control_socket": self.path, "jails": jails, **self.counts}
        if self.error:
            out["error"] = self.error
        return out

    # -- policy, read live ------------------------------------------------------------------------------------

    def _read_llm(self) -> proxy.LlmEndpoint | None:
        return llm_endpoint(home_files.read(self.store, "settings/llm.toml"))

    def _llm(self) -> proxy.LlmEndpoint | None:
        """The endpoint read with this request's client (`_client`, which the proxy asks just before, in the same
        thread: one hop into the loop for both), else read now."""
        pending: tuple[proxy.LlmEndpoint | None] | None = getattr(self._request, "llm", None)
        self._request.llm = None
        if pending is not None:
            return pending[0]
        return self.in_loop(self._read_llm)

    def _secret_values(self) -> list[str]:
        values: list[str] = self.in_loop(lambda: home_files.secret_values(self.store))
        return [v for v in values if len(v) >= MIN_CHECKED]

    def _capability(self, tool: str) -> HttpCapability | None:
        if tool == RUNTIME:
            return network_allowlist(home_files.read(self.store, "settings/network.toml"))
        data = home_files.read(self.store, f"tools/{tool}/capabilities.json")
        if data is None and "tool.wasm" in home_files.listdir(self.store, f"tools/{tool}"):
            return None  # installed without a capabilities file: no capability at all, as the tool host reads it
        return tool_capability(data, tool)

    def _client(self, tool: str) -> proxy.ProxyClient:
        http, llm = self.in_loop(lambda: (self._capability(tool), self._read_llm()))
        self._request.llm = (llm,)
        return proxy.ProxyClient(ToolIdentity(tool), http)

    # -- the audit --------------------------------------------------------------------------------------------

    def _record(self, line: str) -> None:
        allowed = json.loads(line).get("allowed") is True
        with self._lock:
            self.counts["allowed" if allowed else "refused"] += 1
        self._lines.put(line)
        self._pending.set()

    def _drain(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                return out

    def _write_loop(self) -> None:
        """Write what is queued, then let lines gather for COALESCE_SECONDS: each write rewrites the current
        generation of the audit in the loop, so one per request would slow every request down."""
        while not self._closing.is_set():
            if not self._pending.wait(0.5):
                continue
            self._pending.clear()
            if not self.flush():
                return
            self._closing.wait(COALESCE_SECONDS)

    def flush(self) -> bool:
        """Write every queued line now (in order: one writer at a time); False once the loop has ended (the lines
        are kept for close())."""
        with self._write_lock:
            batch = self._unwritten + self._drain()
            self._unwritten = []
            if not batch:
                return True
            try:
                self._call(functools.partial(self.audit.append, batch))
            except RuntimeError:
                self._unwritten = batch
                return False
            return True

    # -- the control socket -----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._converse, args=(conn,), name="clawfs-lease", daemon=True).start()

    def _converse(self, conn: socket.socket) -> None:
        held: list[_Jail] = []  # the jail served for this conversation, once there is one
        clean = False
        try:
            if cs.peer_uid(conn) != os.getuid():  # the 0600 mode keeps others out; the kernel's word settles it
                cs.send(conn, {"error": f"only uid {os.getuid()} (the mount's owner) may use this socket"})
                return
            clean = self._lease(conn, held)
        except (OSError, ValueError, UserError) as e:
            log.warning("control socket: %s", e)
            with contextlib.suppress(OSError):
                cs.send(conn, {"error": str(e)})
        finally:
            for jail in held:
                if not clean and not self._closing.is_set():
                    log.warning("the holder of jail %d went away without ending it: killing the jail", jail.id)
                    _kill(jail)
                self._stop_jail(jail)
            conn.close()

    def _lease(self, conn: socket.socket, held: list[_Jail]) -> bool:
        """One conversation (mountd/control_socket.py); True when it ended as agreed (nothing to kill)."""
        msg, _ = cs.receive(conn)
        if msg is None:
            return True
        if msg.get("op") != "serve":
            raise ValueError(f"expected op serve, got {msg.get('op')!r}")
        tool = msg.get("tool") or RUNTIME
        if not isinstance(tool, str) or not _valid_tool(tool):
            raise UserError(f"{tool!r} is not a tool name")
        try:
            self._client(tool)  # refuse now what would refuse every request: a tool that is not installed
        except proxy.Refused as r:
            raise UserError(r.reason) from None
        cs.send(conn, {"ok": True, "agent_uid": self.agent_uid, "agent_gid": self.agent_gid,
                       "ca_pem": self.ca.cert_pem.decode() if self.ca else ""})
        msg, fds = cs.receive(conn, max_fds=1)
        if msg is None:
            return True  # the jail could not be built: nothing to serve
        if msg.get("op") != "socket" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise ValueError("expected op socket with one descriptor")
        listener = socket.socket(fileno=fds[0])
        # The LLM endpoint is on the runtime's list only: a tool's lease (its worker's jail) is refused it.
        px = proxy.EgressProxy(self.egress, proxy.Audit(self._record), secret_values=self._secret_values,
                               llm_source=self._llm if tool == RUNTIME else _no_llm, ca=self.ca)
        cgroup = msg.get("cgroup") if isinstance(msg.get("cgroup"), dict) else None
        root_dir = msg.get("root_dir") if isinstance(msg.get("root_dir"), str) else ""
        with self._lock:
            jail = _Jail(next(self._ids), tool, px, listener, conn, cgroup, root_dir or "")
            self._jails[jail.id] = jail
        held.append(jail)
        px.serve(listener, lambda: self._client(tool))
        cs.send(conn, {"ok": True, "id": jail.id})
        log.info("egress proxy: serving jail %d (%s)", jail.id, tool)
        msg, _ = cs.receive(conn)
        if msg is None or msg.get("op") != "end":
            return False
        self._stop_jail(jail)
        self.flush()  # the holder reads .clawfs/audit/network.jsonl next: every line of this jail is in it
        cs.send(conn, dict(px.audit.counts))
        return True

    def _stop_jail(self, jail: _Jail) -> None:
        with self._lock:
            if self._jails.pop(jail.id, None) is None:
                return
        jail.px.close()
        jail.listener.close()
        log.info("egress proxy: jail %d ended (%s)", jail.id, jail.px.audit.counts)


def _no_llm() -> proxy.LlmEndpoint | None:
    """A tool's lease: the LLM endpoint is on the runtime's list (settings/llm.toml), not on any tool's."""
    return None


def _no_loop(fn: Callable[[], Any]) -> Any:
    raise RuntimeError("the mount is not serving yet")


def _kill(jail: _Jail) -> None:
    """Kill what is left of a jail whose holder died (its cgroup; a jail without one cannot be found here)."""
    c = jail.cgroup
    dirs = c.get("dirs") if c else None
    if not c or not isinstance(dirs, dict) or not all(
            isinstance(d, str) and "/clawfs-jail-" in d and d.startswith("/sys/fs/cgroup/") for d in dirs.values()):
        log.warning("jail %d has no cgroup to kill: its processes may outlive its holder", jail.id)
        return
    group = cgroups.JailCgroup(int(c.get("version", 1)), {str(k): str(v) for k, v in dirs.items()})
    group.kill_all()
    group.remove()
    if jail.root_dir.startswith("/run/clawfs-jail-"):
        with contextlib.suppress(OSError):
            os.rmdir(jail.root_dir)
