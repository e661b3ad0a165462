"""The daemon's webhook receiver: the one way into an agent home from the network that the daemon, not the jailed
runtime, answers (the runtime never listens, so no secret that verifies a sender enters the jail).

Owns: reading `channels/<name>/channel.toml` files of `type = "webhook"`, serving their addresses (stdlib
`http.server`, one thread per request), checking each request (a shared-secret header or bearer token, and/or an
HMAC-SHA256 signature, IronClaw's `webhook.*` field names), capping the body (413), rate-limiting (429), and
delivering the body as one Maildir message into `channels/<name>/inbox/` (agent/maildir.py's writer: tmp/,
fsync, rename into new/).  202 is sent only after that rename; 401 (logged, nothing delivered) for a missing or
bad credential; 503 once the daemon is stopping or when the home refuses the write.

channel.toml (policy: the agent may read it, only the owner changes it, clawfs/policy.py):

    type = "webhook"
    listen = "127.0.0.1:8089"       # host:port; [::1]:8089 for IPv6; port 0: any free port (tests)
    path = "/"                      # the URL path served (several channels may share one address)
    max_body_bytes = 1048576        # larger bodies: 413
    thread = "webhook"              # X-Clawfs-Thread of the delivered messages
    [rate_limit]
    requests_per_minute = 100       # IronClaw's emit_rate_limit defaults
    requests_per_hour = 5000
    [webhook]                       # IronClaw's names; at least one of secret_name / hmac_secret_name
    secret_name = "hook_token"      # a file under secrets/, read by the daemon, never the runtime
    secret_header = "Authorization" # "Authorization": `Bearer <secret>`; any other header: the secret itself
    hmac_secret_name = "hook_key"
    hmac_signature_header = "X-Hub-Signature-256"
    hmac_timestamp_header = "X-Slack-Request-Timestamp"  # present: Slack's v0 scheme, HMAC of "v0:<ts>:<body>"
    hmac_prefix = "sha256="         # default "sha256=", or "v0=" in the timestamped scheme

`signature_key_secret_name` (Discord's Ed25519) is refused at load: not implemented, and a channel that silently
skipped its check would accept anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent import maildir

log = logging.getLogger("clawfs.webhooks")

SecretReader = Callable[[str], bytes | None]
"""name under secrets/ -> its value, or None when there is no such secret (the daemon reads it from the store)."""

DEFAULT_MAX_BODY = 1 << 20
TIMESTAMP_SKEW = 300.0  # seconds a signed timestamp may differ from now (Slack's rule against replays)
REQUEST_TIMEOUT = 10.0  # seconds a client has to send its request: a slow sender cannot hold a thread forever
KIND = "webhook"


class ConfigError(Exception):
    """A webhook channel.toml that cannot be served; the message names the file and what to fix."""


@dataclass(frozen=True)
class Auth:
    secret_name: str | None = None
    secret_header: str = "Authorization"
    hmac_secret_name: str | None = None
    hmac_signature_header: str | None = None
    hmac_timestamp_header: str | None = None
    hmac_prefix: str | None = None


@dataclass(frozen=True)
class Channel:
    name: str
    host: str
    port: int
    path: str = "/"
    max_body_bytes: int = DEFAULT_MAX_BODY
    per_minute: int = 100
    per_hour: int = 5000
    thread: str = "webhook"
    auth: Auth = field(default_factory=Auth)


def _str(table: dict[str, Any], key: str, where: Path, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: {key} must be a non-empty string, not {value!r}")
    return value


def _int(table: dict[str, Any], key: str, where: Path, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: {key} must be a positive integer, not {value!r}")
    return value


def _address(listen: str, where: Path) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where}: listen must be HOST:PORT (e.g. 127.0.0.1:8089 or [::1]:8089), not {listen!r}")
    return host, int(port)


def parse_channel(name: str, data: dict[str, Any], where: Path) -> Channel:
    listen = _str(data, "listen", where)
    if listen is None:
        raise ConfigError(f"{where}: a webhook channel needs listen = \"HOST:PORT\"")
    host, port = _address(listen, where)
    path = _str(data, "path", where, "/") or "/"
    if not path.startswith("/"):
        raise ConfigError(f"{where}: path must start with /, not {path!r}")
    hook = data.get("webhook", {})
    rate = data.get("rate_limit", {})
    if not isinstance(hook, dict) or not isinstance(rate, dict):
        raise ConfigError(f"{where}: [webhook] and [rate_limit] must be tables")
    if "signature_key_secret_name" in hook:
        raise ConfigError(f"{where}: signature_key_secret_name (Ed25519) is not supported; use secret_name or "
                          "hmac_secret_name")
    auth = Auth(secret_name=_str(hook, "secret_name", where),
                secret_header=_str(hook, "secret_header", where, "Authorization") or "Authorization",
                hmac_secret_name=_str(hook, "hmac_secret_name", where),
                hmac_signature_header=_str(hook, "hmac_signature_header", where),
                hmac_timestamp_header=_str(hook, "hmac_timestamp_header", where),
                hmac_prefix=_str(hook, "hmac_prefix", where))
    if auth.secret_name is None and auth.hmac_secret_name is None:
        raise ConfigError(f"{where}: [webhook] needs secret_name (a token) or hmac_secret_name (a signature key): "
                          "an unauthenticated webhook would let anyone talk to the agent")
    if auth.hmac_secret_name is not None and auth.hmac_signature_header is None:
        raise ConfigError(f"{where}: hmac_secret_name needs hmac_signature_header (e.g. X-Hub-Signature-256)")
    return Channel(name, host, port, path, _int(data, "max_body_bytes", where, DEFAULT_MAX_BODY),
                   _int(rate, "requests_per_minute", where, 100), _int(rate, "requests_per_hour", where, 5000),
                   maildir.safe_thread(_str(data, "thread", where, "webhook") or "webhook"), auth)


def load_channels(home: Path) -> tuple[list[Channel], dict[str, str]]:
    """Every `channels/<name>/channel.toml` of type webhook: (the usable ones, {name: why not} for the rest).
    Files of another type are not the receiver's and are skipped silently."""
    found: list[Channel] = []
    bad: dict[str, str] = {}
    root = home / "channels"
    if not root.is_dir():
        return found, bad
    taken: dict[tuple[str, int, str], str] = {}
    for ch_dir in sorted(root.iterdir()):
        where = ch_dir / "channel.toml"
        try:
            data = tomllib.loads(where.read_text())
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            bad[ch_dir.name] = f"{where} cannot be read as TOML: {e}"
            continue
        if data.get("type") != KIND:
            continue
        try:
            ch = parse_channel(ch_dir.name, data, where)
        except ConfigError as e:
            bad[ch_dir.name] = str(e)
            continue
        key = (ch.host, ch.port, ch.path)
        if key in taken:
            bad[ch.name] = f"{where}: {ch.host}:{ch.port}{ch.path} is already channel {taken[key]}'s"
            continue
        taken[key] = ch.name
        found.append(ch)
    return found, bad


class RateLimit:
    """Requests a channel accepts per minute and per hour (sliding windows, as IronClaw's emit_rate_limit);
    every request counts, good or bad, so a flood of forged requests is cut off before its MACs are computed."""

    def __init__(self, per_minute: int, per_hour: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = ((60.0, per_minute), (3600.0, per_hour))
        self._seen: deque[float] = deque()
        self._clock = clock
        self._lock = threading.Lock()

    def allow(self) -> float | None:
        """None when this request may pass (and counts it), else the seconds until one may."""
        with self._lock:
            now = self._clock()
            while self._seen and self._seen[0] <= now - 3600.0:
                self._seen.popleft()
            for window, limit in self._limits:
                inside = [t for t in self._seen if t > now - window]
                if len(inside) >= limit:
                    return max(0.0, inside[-limit] + window - now)
            self._seen.append(now)
            return None


def _bearer_ok(auth: Auth, headers: Any, key: bytes) -> str | None:
    got = headers.get(auth.secret_header)
    if got is None:
        return f"no {auth.secret_header} header"
    want = b"Bearer " + key if auth.secret_header.lower() == "authorization" else key
    try:
        given = got.strip().encode("ascii")
    except UnicodeEncodeError:
        return f"{auth.secret_header} is not ASCII"
    return None if hmac.compare_digest(given, want) else f"wrong {auth.secret_header}"


def _hmac_ok(auth: Auth, headers: Any, body: bytes, key: bytes, now: float) -> str | None:
    assert auth.hmac_signature_header is not None
    got = headers.get(auth.hmac_signature_header)
    if got is None:
        return f"no {auth.hmac_signature_header} header"
    if auth.hmac_timestamp_header:  # Slack's scheme: the timestamp is signed with the body, and must be recent
        stamp = headers.get(auth.hmac_timestamp_header)
        if stamp is None or not stamp.strip().isdigit():
            return f"no usable {auth.hmac_timestamp_header} header"
        if abs(now - int(stamp)) > TIMESTAMP_SKEW:
            return f"{auth.hmac_timestamp_header} is more than {TIMESTAMP_SKEW:g} s away from now (a replay?)"
        signed = b"v0:" + stamp.strip().encode() + b":" + body
        prefix = auth.hmac_prefix if auth.hmac_prefix is not None else "v0="
    else:
        signed = body
        prefix = auth.hmac_prefix if auth.hmac_prefix is not None else "sha256="
    want = (prefix + hmac.new(key, signed, hashlib.sha256).hexdigest()).encode()
    try:
        given = got.strip().encode("ascii")
    except UnicodeEncodeError:
        return f"{auth.hmac_signature_header} is not ASCII"
    return None if hmac.compare_digest(given, want) else "bad signature"


def sign(key: bytes, body: bytes, *, timestamp: int | None = None, prefix: str | None = None) -> str:
    """The signature a sender puts in the signature header (GitHub's scheme, or Slack's with a timestamp)."""
    signed = body if timestamp is None else b"v0:" + str(timestamp).encode() + b":" + body
    default = "sha256=" if timestamp is None else "v0="
    return (prefix if prefix is not None else default) + hmac.new(key, signed, hashlib.sha256).hexdigest()


def _secret_value(raw: bytes) -> bytes:
    """A secret as written by `echo value > secrets/name`: one trailing newline is not part of it."""
    return raw[:-1] if raw.endswith(b"\n") else raw


class Receiver:
    """Serves every webhook channel of a home until `close()`; `begin_stop()` first turns new requests away
    with 503 (intake stopped) while the ones already being delivered finish."""

    def __init__(self, home: Path, channels: list[Channel], secrets: SecretReader,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.home = home
        self._secrets = secrets
        self._wall = wall
        self._stopping = threading.Event()
        self._routes: dict[tuple[str, int], dict[str, Channel]] = {}
        self._limits = {ch.name: RateLimit(ch.per_minute, ch.per_hour, clock) for ch in channels}
        for ch in channels:
            self._routes.setdefault((ch.host, ch.port), {})[ch.path] = ch
        self._servers: list[tuple[ThreadingHTTPServer, dict[str, Channel]]] = []
        self._threads: list[threading.Thread] = []
        self.counts: dict[str, dict[str, int]] = {ch.name: {} for ch in channels}
        self._count_lock = threading.Lock()
        self._flood_logged: dict[str, float] = {}

    def start(self) -> None:
        """Bind every address (an address in use fails here, before the service says READY)."""
        try:
            for (host, port), routes in self._routes.items():
                server = _server(host, port, self, routes)
                self._servers.append((server, routes))
                t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                     name=f"webhooks-{host}:{port}", daemon=True)
                t.start()
                self._threads.append(t)
                log.info("webhooks: serving %s on %s:%d", ", ".join(c.name for c in routes.values()),
                         host, server.server_address[1])
        except OSError:
            self.close()
            raise

    def addresses(self) -> dict[str, tuple[str, int]]:
        """channel name -> the address actually bound (port 0 in channel.toml: the one the kernel chose)."""
        out = {}
        for server, routes in self._servers:
            host, port = server.server_address[:2]
            for ch in routes.values():
                out[ch.name] = (str(host), int(port))
        return out

    def begin_stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        """Stop listening and wait for requests in flight (each bounded by REQUEST_TIMEOUT and one delivery)."""
        self._stopping.set()
        for server, _ in self._servers:
            server.shutdown()
            server.server_close()  # joins the request threads (block_on_close)
        self._servers.clear()

    def _count(self, channel: str, status: int) -> None:
        with self._count_lock:
            c = self.counts.setdefault(channel, {})
            c[str(status)] = c.get(str(status), 0) + 1

    # -- one request ------------------------------------------------------------------------------------------
    def handle(self, req: BaseHTTPRequestHandler, ch: Channel) -> tuple[int, dict[str, str], bytes]:
        peer = req.client_address[0]
        if self._stopping.is_set():
            return 503, {"Retry-After": "30"}, b"stopping\n"
        wait = self._limits[ch.name].allow()
        if wait is not None:
            now = time.monotonic()
            if now - self._flood_logged.get(ch.name, float("-inf")) >= 10.0:  # a flood is one line per 10 s
                self._flood_logged[ch.name] = now
                log.warning("webhooks: %s: rate limit reached, %s refused (429)", ch.name, peer)
            return 429, {"Retry-After": str(max(1, int(wait + 0.999)))}, b"rate limit\n"
        if req.headers.get("Transfer-Encoding"):
            return 411, {}, b"send Content-Length (no chunked bodies)\n"
        try:
            length = int(req.headers.get("Content-Length") or "")
        except ValueError:
            return 411, {}, b"Content-Length required\n"
        if length < 0:
            return 400, {}, b"bad Content-Length\n"
        if length > ch.max_body_bytes:
            log.warning("webhooks: %s: body of %d bytes from %s refused (413, limit %d)", ch.name, length, peer,
                        ch.max_body_bytes)
            return 413, {}, f"body over {ch.max_body_bytes} bytes\n".encode()
        body = req.rfile.read(length)
        if len(body) != length:
            return 400, {}, b"short body\n"
        why = self._check(ch, req.headers, body)
        if why is not None:
            log.warning("webhooks: %s: request from %s refused (401): %s; nothing delivered", ch.name, peer, why)
            return 401, {"WWW-Authenticate": "Bearer"}, b"unauthorized\n"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, {}, b"the body must be UTF-8 text\n"
        msg = maildir.make_message(text, sender=f"webhook@{ch.name}", thread=ch.thread,
                                   extra={maildir.KIND_HEADER: KIND,
                                          "Content-Description": req.headers.get("Content-Type", "text/plain")})
        try:
            maildir.deliver(self.home / "channels" / ch.name / "inbox", msg.as_bytes())
        except OSError as e:  # a full disk, the mount going away: the sender keeps it and retries
            log.error("webhooks: %s: cannot deliver into the inbox (%s); answered 503", ch.name, e)
            return 503, {"Retry-After": "30"}, b"cannot deliver now\n"
        msgid = str(msg["Message-ID"])
        log.info("webhooks: %s: delivered %s (%d bytes) from %s", ch.name, msgid, length, peer)
        return 202, {"Content-Type": "application/json"}, json.dumps({"message_id": msgid}).encode() + b"\n"

    def _check(self, ch: Channel, headers: Any, body: bytes) -> str | None:
        """None when the request carries every credential the channel asks for, else why not."""
        for name, check in ((ch.auth.secret_name, "token"), (ch.auth.hmac_secret_name, "hmac")):
            if name is None:
                continue
            raw = self._secrets(name)
            if raw is None:
                return f"the secret {name} does not exist in secrets/ (the owner must write it)"
            key = _secret_value(raw)
            why = (_bearer_ok(ch.auth, headers, key) if check == "token"
                   else _hmac_ok(ch.auth, headers, body, key, self._wall()))
            if why is not None:
                return why
        return None


def _server(host: str, port: int, receiver: Receiver, routes: dict[str, Channel]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = REQUEST_TIMEOUT
        server_version = "clawfs-webhooks"
        sys_version = ""

        def do_POST(self) -> None:
            ch = routes.get(self.path.split("?", 1)[0])
            if ch is None:
                self._answer(404, {}, b"no such webhook\n")
                return
            try:
                status, headers, body = receiver.handle(self, ch)
            except Exception:
                log.exception("webhooks: %s: request failed", ch.name)
                status, headers, body = 500, {}, b"internal error\n"
            receiver._count(ch.name, status)
            if status in (411, 413) or status >= 500:
                self.close_connection = True  # an unread body must not be parsed as the next request
            self._answer(status, headers, body)

        def do_GET(self) -> None:
            self._answer(405, {"Allow": "POST"}, b"POST only\n")

        do_PUT = do_DELETE = do_PATCH = do_GET

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhooks: %s " + format, self.client_address[0], *args)

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = False  # close() joins requests in flight: a 202 is never cut off by the unmount
        block_on_close = True

    return Server((host, port), Handler)
