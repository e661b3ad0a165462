"""The egress proxy: an HTTP forward proxy (and CONNECT to port 443) that serves the jail's proxy socket from
outside the jail, with every decision taken by sandbox/egress.py (allowlist, address checks and pinning,
credential injection, response redaction) and sandbox/leaks.py (what may leave).

Who is calling: each listening socket is served for one `ProxyClient` (a tool's name and capability); the jail's
socket lives in that jail's network namespace, so a connection accepted on it comes from that jail and nothing
a runtime sends (a header, a user name) can change whose list applies.

Requests:
- `CONNECT host:443`: the host must be in the caller's allowlist (checked before any DNS lookup). If the
  caller's capability binds a credential to that host and the proxy holds the store's CA (sandbox/tls_ca.py),
  the proxy answers the tunnel itself: TLS with a leaf for the host signed by that CA (trusted by the jail
  alone), then each decrypted request (HTTP/1.1 keep-alive) is handled exactly as a forwarded one (below) with
  `https://host/path` as its URL. So is CONNECT to an https LLM endpoint that has an api_key_secret (its
  placeholder is swapped inside). Otherwise every resolved address must be public (else refused); the
  connection goes to the first, pinned; bytes are tunnelled untouched.
- `METHOD http://host/path`: allowlist by host, path prefix and method, then sent by Egress upstream over
  **https** (the jail speaks plain HTTP to the proxy, which sits outside it: no per-store CA is needed for the
  proxy to inject credentials and redact responses). The request URL, headers and body pass the leak detector
  and an exact match of the store's secret values first.
- The LLM endpoint of settings/llm.toml (scheme, host and port) is allowed as is, even on loopback or a private
  address: that host and port only.  A request to it whose Authorization is `Bearer clawfs-secret:NAME`, NAME
  being the endpoint's `api_key_secret`, gets the secret's value injected by Egress (from its CredentialSource)
  and the response redacted of it; a placeholder naming any other secret is refused.
- Live policy: `llm_source` and a callable client are asked at each request (the daemon reads settings/ and
  tools/ from its store then), so an owner's edit applies from the next request on.
Every request, allowed or refused with its reason, is one JSON line of the audit log."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from . import leaks
from .capabilities import Credential, CredentialLocation, Endpoint, HttpCapability, RateLimit
from .egress import Egress, EgressConfig, EgressError, EgressRequest, ToolIdentity, check_address, host_matches
from .tls_ca import StoreCA

MAX_HEAD = 64 << 10
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-connection", "content-length", "host"}
IDLE_SECONDS = 60.0
TUNNEL_REQUESTS = 1000  # requests one terminated tunnel may carry (keep-alive) before the proxy closes it
PLACEHOLDER = "clawfs-secret:"  # agent.llm.placeholder's prefix: what stands for a secret's value


@dataclass(frozen=True)
class ProxyClient:
    """What one proxy socket's caller may reach."""
    tool: ToolIdentity
    http: HttpCapability | None


@dataclass(frozen=True)
class LlmEndpoint:
    scheme: str
    host: str
    port: int
    api_key_secret: str | None = None  # the secret whose placeholder is swapped in Authorization

    @classmethod
    def from_url(cls, url: str, api_key_secret: str | None = None) -> LlmEndpoint:
        p = urllib.parse.urlsplit(url)
        return cls(p.scheme, (p.hostname or "").lower(), p.port or (443 if p.scheme == "https" else 80),
                   api_key_secret)


ClientSource = ProxyClient | Callable[[], ProxyClient]
"""A socket's caller: fixed, or asked at each request (it may raise Refused)."""


class Audit:
    """JSON lines, one per request, to a stream or a function taking each line; thread-safe."""

    def __init__(self, stream: IO[str] | Callable[[str], None]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.counts = {"allowed": 0, "refused": 0}

    def log(self, **entry: object) -> None:
        entry["ts"] = round(time.time(), 3)
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self.counts["allowed" if entry.get("allowed") else "refused"] += 1
            if callable(self._stream):
                self._stream(line)
            else:
                self._stream.write(line + "\n")
                self._stream.flush()


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class _Head:
    method: str
    target: str
    headers: dict[str, str]
    rest: bytes
    version: str = "HTTP/1.1"


def _read_head(conn: socket.socket) -> _Head | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEAD:
            raise Refused(431, "request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise Refused(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise Refused(400, "malformed header")
        headers[name.strip()] = value.strip()
    return _Head(parts[0].upper(), parts[1], headers, rest, parts[2].upper())


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _read_body(conn: socket.socket, head: _Head, limit: int) -> bytes | None:
    if _header(head.headers, "transfer-encoding"):
        raise Refused(411, "chunked request bodies are not supported: send Content-Length")
    length = _length(head)
    if length < 0:
        raise Refused(400, "malformed Content-Length")
    if length > limit:
        raise Refused(413, f"request body over {limit} bytes")
    body = head.rest
    while len(body) < length:
        chunk = conn.recv(min(65536, length - len(body)))
        if not chunk:
            raise Refused(400, "request body cut short")
        body += chunk
    return body[:length] if length else None


def _reply(conn: socket.socket, status: int, reason: str, headers: dict[str, str] | None = None,
           body: bytes = b"", keep_alive: bool = False) -> None:
    lines = [f"HTTP/1.1 {status} {reason}"]
    for k, v in (headers or {}).items():
        if k.lower() not in HOP_BY_HOP:
            lines.append(f"{k}: {v}")
    lines += [f"Content-Length: {len(body)}", "Connection: keep-alive" if keep_alive else "Connection: close", "", ""]
    conn.sendall("\r\n".join(lines).encode("latin-1") + body)


@dataclass
class EgressProxy:
    egress: Egress
    audit: Audit
    llm: LlmEndpoint | None = None
    secret_values: Callable[[], list[str]] = field(default=list)
    ca: StoreCA | None = None  # the store's CA: with it, CONNECT to a host with a credential binding is terminated
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _llm_egress: Egress | None = None
    llm_source: Callable[[], LlmEndpoint | None] | None = None  # asked at each request when set (live settings)
    _llm_for: LlmEndpoint | None = None
    _llm_lock: threading.Lock = field(default_factory=threading.Lock)
    _request: threading.local = field(default_factory=threading.local)  # each connection has a thread of its own

    def serve(self, listener: socket.socket, client: ClientSource) -> threading.Thread:
        """Serve one proxy socket (one jail, one tool) in a thread of its own until close()."""
        listener.settimeout(0.2)
        t = threading.Thread(target=self._accept_loop, args=(listener, client), daemon=True, name="egress-proxy")
        t.start()
        self._threads.append(t)
        return t

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        if self._llm_egress:
            self._llm_egress.close()

    def _accept_loop(self, listener: socket.socket, client: ClientSource) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, client), daemon=True).start()

    def _handle(self, conn: socket.socket, source: ClientSource) -> None:
        conn.settimeout(IDLE_SECONDS)
        entry: dict[str, object] = {}
        try:
            head = _read_head(conn)
            if head is None:
                return
            entry.update(method=head.method, target=self._safe(head.target))
            client = source() if callable(source) else source
            entry["tool"] = client.tool.name
            self._request.llm = self.llm_source() if self.llm_source else self.llm
            if head.method == "CONNECT":
                self._connect(conn, client, head, entry)
            else:
                self._forward(conn, client, head, entry)
        except Refused as r:
            self.audit.log(**entry, allowed=False, status=r.status, reason=r.reason)
            with contextlib.suppress(OSError):
                _reply(conn, r.status, "Refused", {"Content-Type": "text/plain"},
                       f"clawfs proxy: {r.reason}\n".encode())
        except OSError as e:
            self.audit.log(**entry, allowed=False, status=502, reason=f"connection: {e}")
        finally:
            conn.close()

    # -- CONNECT ---------------------------------------------------------------------------------------------------

    def _current_llm(self) -> LlmEndpoint | None:
        """The LLM endpoint for this connection's request (read once at its start)."""
        llm: LlmEndpoint | None = getattr(self._request, "llm", self.llm)
        return llm

    def _is_llm(self, scheme: str | None, host: str, port: int) -> bool:
        llm = self._current_llm()
        return (llm is not None and host.lower() == llm.host and port == llm.port
                and (scheme is None or scheme == llm.scheme))

    def _connect(self, conn: socket.socket, client: ProxyClient, head: _Head, entry: dict[str, object]) -> None:
        host, _, port_text = head.target.rpartition(":")
        host = host.strip("[]").lower()
        if not host or not port_text.isdigit():
            raise Refused(400, "CONNECT needs host:port")
        port = int(port_text)
        llm = self._is_llm(None, host, port)
        endpoint = self._current_llm()
        if llm and self.ca is not None and endpoint and endpoint.scheme == "https" and endpoint.api_key_secret:
            self._terminate(conn, client, host, port, self.ca, entry, True)  # its api key is injected inside
            return
        if not llm:
            if port != 443:
                raise Refused(403, f"CONNECT to port {port} refused: 443 only")
            allow = client.http.allowlist if client.http else ()
            if not any(host_matches(e.host, host) for e in allow):
                raise Refused(403, f"{host} is not in {client.tool.name}'s allowlist")  # before any DNS lookup
            assert client.http is not None
            if self.ca is not None and _has_binding(client.http, host):
                self._terminate(conn, client, host, port, self.ca, entry, False)  # Egress.send admits each request
                return
            try:  # a tunnel counts against the tool's rate limit as a forwarded request does (in Egress.send)
                self.egress.rates.admit(client.tool, client.http.rate_limit.per_minute,
                                        client.http.rate_limit.per_hour)
            except EgressError as e:
                raise Refused(429, e.message) from None
        address = self._pinned(host, port, llm)
        upstream = socket.create_connection((address, port), timeout=30)
        entry.update(address=address)
        self.audit.log(**entry, allowed=True, status=200, reason="tunnel")
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _splice(conn, upstream)

    def _pinned(self, host: str, port: int, llm: bool) -> str:
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:
            try:
                addresses = self.egress.config.resolver.resolve(host, port)
            except EgressError as e:
                raise Refused(502, e.message) from None
        if not addresses:
            raise Refused(502, f"{host} has no address")
        if not llm:
            for a in addresses:
                try:
                    check_address(a, self.egress.config.allow_networks)
                except EgressError as e:
                    raise Refused(403, f"{host}: {e.message}") from None
        return addresses[0]

    # -- plain HTTP, sent upstream by Egress ---------------------------------------------------------------------------

    def _safe(self, text: str) -> str:
        """Text for the audit log: stored secret values and leak-pattern matches masked."""
        for value in self.secret_values():
            if value:
                text = text.replace(value, "[REDACTED secret]")
        findings = leaks.scan(text)
        for f in reversed([f for f in findings if f.action != "warn"]):
            text = text[:f.start] + f"[REDACTED {f.pattern}]" + text[f.end:]
        return text

    def _leak_check(self, head: _Head, body: bytes | None) -> None:
        text = "\n".join([head.target, *(f"{k}: {v}" for k, v in head.headers.items())])
        if body:
            text += "\n" + body.decode("utf-8", "replace")
        found = leaks.blocked(leaks.scan(text))
        if found:
            raise Refused(403, f"leak detected: {leaks.describe(found)}")
        for value in self.secret_values():
            if value and value in text:
                raise Refused(403, "leak detected: a stored secret's value")

    def _forward(self, conn: socket.socket, client: ProxyClient, head: _Head, entry: dict[str, object]) -> None:
        parts = urllib.parse.urlsplit(head.target)
        if parts.scheme != "http" or not parts.hostname:
            raise Refused(400, "a proxy request needs an absolute http:// URL (use CONNECT for https)")
        llm = self._is_llm("http", parts.hostname, parts.port or 80)
        url = head.target if llm else urllib.parse.urlunsplit(
            ("https", parts.hostname if parts.port in (None, 80) else parts.netloc, parts.path, parts.query, ""))
        self._send(conn, client, head, entry, url, parts.hostname if llm else None)

    def _send(self, conn: socket.socket, client: ProxyClient, head: _Head, entry: dict[str, object], url: str,
              llm_host: str | None, keep_alive: bool = False) -> None:
        """Read the body, check for leaks, send `url` upstream through Egress and reply with its (redacted)
        answer: the forward path's and the terminated tunnel's common part."""
        limit = client.http.max_request_bytes if client.http else 1 << 20
        body = _read_body(conn, head, 64 << 20 if llm_host else limit)
        self._leak_check(head, body)
        headers = {k: v for k, v in head.headers.items() if k.lower() not in HOP_BY_HOP}
        http: HttpCapability | None
        if llm_host:
            egress, http = self._llm(), _only(llm_host, _placeholder_secret(headers, self._current_llm()))
        else:
            egress, http = self.egress, client.http
        try:
            resp = egress.send(client.tool, http, EgressRequest(head.method, url, headers, body))
        except EgressError as e:
            status = 429 if e.code == "rate_limited" else 403 if e.kind in ("network-denied", "input") else 502
            raise Refused(status, e.message) from None
        self.audit.log(**entry, allowed=True, status=resp.status, bytes_out=len(body or b""),
                       bytes_in=len(resp.body))
        # Egress hands back the body decoded (httpx undoes gzip/br, so redaction sees the text): say so.
        headers_in = {k: v for k, v in resp.headers.items() if k.lower() != "content-encoding"}
        _reply(conn, resp.status, "OK", headers_in, resp.body, keep_alive)

    def _terminate(self, conn: socket.socket, client: ProxyClient, host: str, port: int, ca: StoreCA,
                   entry: dict[str, object], llm: bool) -> None:
        """Answer CONNECT ourselves: TLS towards the jail with a leaf for `host`, then the requests read from the
        decrypted stream, each sent as `https://host[:port]<path>` (the CONNECT's host and port, whatever Host
        header or SNI the client gives) by the forward path's `_send`. HTTP/1.1 keep-alive is honoured, up to
        TUNNEL_REQUESTS per tunnel; a refusal ends the tunnel. One audit line per request, or one for a failed
        handshake (a client that does not trust the store CA)."""
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            tls = ca.server_context(host).wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:  # the client did not trust the CA, or hung up
            self.audit.log(**entry, allowed=False, status=502, reason=f"TLS towards the client: {e}")
            return
        netloc = f"[{host}]" if ":" in host else host
        origin = f"https://{netloc}" if port == 443 else f"https://{netloc}:{port}"
        try:
            for n in range(TUNNEL_REQUESTS):
                inner: dict[str, object] = {"tool": client.tool.name, "via": "CONNECT (terminated)"}
                try:
                    head = _read_head(tls)
                    if head is None:
                        return
                    inner.update(method=head.method, target=self._safe(origin + head.target))
                    if head.method == "CONNECT" or not head.target.startswith("/"):
                        raise Refused(400, "inside a tunnel a request needs an origin-form target (/path)")
                    # A pipelined request behind this one would be lost with the body's tail: close after it.
                    keep = (n + 1 < TUNNEL_REQUESTS and head.version == "HTTP/1.1"
                            and (_header(head.headers, "connection") or "").lower() != "close"
                            and len(head.rest) <= _length(head))
                    self._send(tls, client, head, inner, origin + head.target, host if llm else None, keep)
                    if not keep:
                        return
                except Refused as r:
                    self.audit.log(**inner, allowed=False, status=r.status, reason=r.reason)
                    with contextlib.suppress(OSError):
                        _reply(tls, r.status, "Refused", {"Content-Type": "text/plain"},
                               f"clawfs proxy: {r.reason}\n".encode())
                    return
                except OSError as e:
                    self.audit.log(**inner, allowed=False, status=502, reason=f"connection: {e}")
                    return
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def _llm(self) -> Egress:
        """An Egress for the LLM endpoint alone: http allowed, its own addresses even if private, the proxy's
        credentials (for the api key); made again when the endpoint changed (an owner's edit)."""
        llm = self._current_llm()
        assert llm is not None
        with self._llm_lock:
            if self._llm_egress is None or self._llm_for != llm:
                if self._llm_egress is not None:
                    self._llm_egress.close()
                config = self.egress.config
                try:
                    nets = [ipaddress.ip_network(a) for a in config.resolver.resolve(llm.host, llm.port)]
                except EgressError as e:
                    raise Refused(502, e.message) from None
                self._llm_egress = Egress(EgressConfig(credentials=config.credentials, resolver=config.resolver,
                                                       allow_networks=tuple(nets), require_https=False,
                                                       verify=config.verify))
                self._llm_for = llm
            return self._llm_egress


LLM_RATE = RateLimit(per_minute=6000, per_hour=100_000)  # a tool's defaults would throttle a busy agent's turns


def _placeholder_secret(headers: dict[str, str], llm: LlmEndpoint | None) -> str | None:
    """The secret to inject for the LLM: its api_key_secret, when Authorization carries exactly its placeholder.
    A placeholder of any other secret is refused (the runtime may not steer another secret to this host)."""
    auth = _header(headers, "authorization")
    if auth is None or PLACEHOLDER not in auth:
        return None
    if llm is not None and llm.api_key_secret and auth == f"Bearer {PLACEHOLDER}{llm.api_key_secret}":
        return llm.api_key_secret
    raise Refused(403, "the Authorization placeholder is not settings/llm.toml's api_key_secret")


def _only(host: str, secret: str | None = None) -> HttpCapability:
    """The LLM endpoint's capability: its host, and its api key (Egress injects it, and redacts the answer)."""
    creds = (Credential("llm", secret, CredentialLocation("bearer"), (host,)),) if secret else ()
    return HttpCapability(allowlist=(Endpoint(host),), rate_limit=LLM_RATE, max_request_bytes=64 << 20,
                          max_response_bytes=64 << 20, timeout_secs=600, credentials=creds)


def _length(head: _Head) -> int:
    """The request's Content-Length (-1 if malformed: _read_body refuses it)."""
    text = _header(head.headers, "content-length") or "0"
    return int(text) if text.isdigit() else -1


def _has_binding(http: HttpCapability, host: str) -> bool:
    """Whether any of the capability's credentials is bound to `host` (its path patterns are the request's
    business: inject_credentials decides per request)."""
    return any(host_matches(p, host) for c in http.credentials for p in c.host_patterns)


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes or both stay idle for IDLE_SECONDS."""
    try:
        socks = [a, b]
        while True:
            ready, _, _ = select.select(socks, [], [], IDLE_SECONDS)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    finally:
        b.close()
