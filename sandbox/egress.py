"""The egress policy for tool HTTP, as a library: what a tool may reach, how, and what comes back.

Owns every decision on one outbound request of one tool; no process, no socket server.  The mount daemon's egress
proxy (sandbox/proxy.py, mountd/proxy_service.py) serves it for every jail; the tool host's in-process gateway uses
it with no credentials (`clawfs tool run`, tests).

API (all a caller needs):
- `ToolIdentity(name, binary_blake3)`: who is calling.  The host passes it with every request; a proxy must
  establish it from something the runtime cannot forge (e.g. a per-tool connection or token it handed out), never
  from a header the tool sent.
- `EgressRequest(method, url, headers, body, timeout_ms)` in, `EgressResponse(status, headers, body)` out.
- `Egress(config).send(identity, http_capability, request)`: the whole path below, or `EgressError(kind, message,
  request_sent)`, `kind` one of IronClaw 0.4.1's `http-error-kind` names.
- The steps, usable one by one: `check_target` (URL parse, https, no userinfo, path normalised, allowlist host /
  path prefix / method; done before any DNS lookup), `Resolver.resolve` + `check_address` (private, loopback,
  link-local, CGNAT, multicast, reserved, IPv4-mapped forms refused unless `EgressConfig.allow_networks` names
  them), `inject_credentials` (bearer, basic, header, query, url path, from a `CredentialSource`),
  `Redactor.redact` (a response from a host that got a credential is scanned for that value, raw and encoded, and
  the value replaced), `RateLimiter.admit` (per tool, per minute and per hour).
- The connection is made to the resolved address (pinned: no second lookup can rebind it) with the Host header
  and TLS server name of the allowlisted name, so certificates are checked against the name.  Redirects are
  followed only after the new target passes every check again (credentials decided afresh for its host).
"""

from __future__ import annotations

import base64
import binascii
import collections
import fnmatch
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from .capabilities import Credential, Endpoint, HttpCapability

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
# The addresses IronClaw's http_security.rs refuses, plus CGNAT and the IPv6 forms that embed IPv4.
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Headers a tool may not set: they would let it speak for the host (Host) or smuggle framing.
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "proxy-authorization"})


class EgressError(Exception):
    """A refused or failed request.  `kind` is an http-error-kind of near:agent@0.4.1."""

    def __init__(self, kind: str, message: str, *, request_sent: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.request_sent = request_sent
        self.code = code


@dataclass(frozen=True)
class ToolIdentity:
    """Who makes a request: the tool's name and the BLAKE3 of the binary that runs."""

    name: str
    binary_blake3: str = ""


@dataclass
class EgressRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout_ms: int | None = None


@dataclass
class EgressResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Target:
    """A checked URL: scheme, host (lower case, IDNA), port, normalised path and query."""

    scheme: str
    host: str
    port: int
    path: str
    query: str

    def url_for(self, address: str | None = None) -> str:
        host = address or self.host
        if ":" in host:
            host = f"[{host}]"
        q = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}:{self.port}{self.path}{q}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class CredentialSource(Protocol):
    """Where secret values come from.  Only the egress side holds one: the mount daemon's proxy, outside every jail."""

    def secret(self, tool: ToolIdentity, name: str) -> str | None:
        """The value of secret `name` for `tool`, or None if there is none."""


class NoCredentials:
    """A source with no secrets: requests go out without injected credentials."""

    def secret(self, tool: ToolIdentity, name: str) -> str | None:
        return None


class Resolver(Protocol):
    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of `host`, as text."""


class SystemResolver:
    def resolve(self, host: str, port: int) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise EgressError("network-denied", f"cannot resolve {host}: {e.strerror}") from None
        return list(dict.fromkeys(str(i[4][0]) for i in infos))


# -- the allowlist (before any DNS lookup) ------------------------------------------------------------------------

def host_matches(pattern: str, host: str) -> bool:
    """`*.example.com` matches subdomains only (as IronClaw); anything else matches exactly, case-insensitively."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _normalise_path(raw: str) -> str:
    """The path with `.`/`..` segments refused: encoded or not, a traversal could escape a path prefix."""
    path = raw or "/"
    decoded = urllib.parse.unquote(path)
    for form in (path, decoded, decoded.replace("\\", "/")):
        if any(seg in (".", "..") for seg in form.split("/")):
            raise EgressError("input", f"path {raw!r} contains a . or .. segment")
    if "%2f" in path.lower() or "%5c" in path.lower():
        raise EgressError("input", f"path {raw!r} contains an encoded slash")
    return path


def parse_target(url: str, *, require_https: bool = True) -> Target:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise EgressError("input", f"malformed URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or (require_https and scheme != "https"):
        raise EgressError("network-denied", f"scheme {scheme or '(none)'!r} refused: only https is allowed"
                          if require_https else f"scheme {scheme!r} refused")
    if "@" in parts.netloc:
        raise EgressError("input", "URLs with user information (user@host) are refused")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EgressError("input", "URL has no host")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise EgressError("input", f"host {host!r} is not a valid name") from None
    return Target(scheme, host, port or (443 if scheme == "https" else 80), _normalise_path(parts.path), parts.query)


def endpoint_allows(e: Endpoint, target: Target, method: str) -> bool:
    return (host_matches(e.host, target.host)
            and (e.path_prefix is None or target.path.startswith(e.path_prefix))
            and (not e.methods or method in e.methods))


def check_target(http: HttpCapability | None, method: str, url: str, *, require_https: bool = True) -> Target:
    """The checked target of (method, url), or EgressError naming why it is not allowed.  No DNS here."""
    if http is None or not http.allowlist:
        raise EgressError("network-denied", "this tool has no HTTP capability")
    target = parse_target(url, require_https=require_https)
    method = method.upper()
    if not any(endpoint_allows(e, target, method) for e in http.allowlist):
        raise EgressError("network-denied", f"{method} {target.host}{target.path} is not in the tool's allowlist")
    return target


# -- addresses (after DNS) ----------------------------------------------------------------------------------------

def check_address(address: str, allow_networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
                  ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address if a tool may connect to it: public unicast, or inside an explicitly allowed network."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    embedded = ip.ipv4_mapped or ip.sixtofour if isinstance(ip, ipaddress.IPv6Address) else None
    if isinstance(ip, ipaddress.IPv6Address) and ip.teredo:
        embedded = ip.teredo[1]
    for candidate in (ip, embedded):
        if candidate is not None and any(candidate in n for n in allow_networks):
            return ip
    for candidate in (ip, embedded):
        if candidate is None:
            continue
        if (not candidate.is_global or candidate.is_multicast or candidate.is_private or candidate.is_loopback
                or candidate.is_link_local or candidate.is_reserved or candidate.is_unspecified
                or (isinstance(candidate, ipaddress.IPv4Address) and candidate in CGNAT)):
            raise EgressError("network-denied", f"address {address} is private, local or reserved")
    return ip


# -- credentials --------------------------------------------------------------------------------------------------

def credential_applies(c: Credential, target: Target) -> bool:
    hosts_ok = any(host_matches(p, target.host) for p in c.host_patterns) if c.host_patterns else False
    paths_ok = not c.path_patterns or any(fnmatch.fnmatchcase(target.path, p) or target.path.startswith(p)
                                          for p in c.path_patterns)
    return hosts_ok and paths_ok


def inject_credentials(http: HttpCapability, target: Target, headers: dict[str, str], source: CredentialSource,
                       tool: ToolIdentity) -> tuple[Target, dict[str, str], list[tuple[str, str]]]:
    """(target, headers) with every applicable credential injected, and the (secret name, value) pairs used.

    A credential without a value is skipped if `optional`, else the request is refused (auth-required)."""
    used: list[tuple[str, str]] = []
    headers = dict(headers)
    for c in http.credentials:
        if not credential_applies(c, target):
            continue
        value = source.secret(tool, c.secret_name)
        if value is None:
            if c.optional:
                continue
            raise EgressError("auth-required", f"secret {c.secret_name!r} is not available to this tool",
                              code="missing_credential")
        loc = c.location
        if loc.type == "bearer":
            headers["Authorization"] = f"Bearer {value}"
        elif loc.type == "basic":
            token = base64.b64encode(f"{loc.username}:{value}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
            used.append((c.secret_name, f"{loc.username}:{value}"))
        elif loc.type == "header":
            headers[loc.name or ""] = f"{loc.prefix or ''}{value}"
        elif loc.type == "query_param":
            pairs = urllib.parse.parse_qsl(target.query, keep_blank_values=True)
            pairs = [(k, v) for k, v in pairs if k != loc.name] + [(loc.name or "", value)]
            target = Target(target.scheme, target.host, target.port, target.path, urllib.parse.urlencode(pairs))
        elif loc.type == "url_path":
            placeholder = loc.placeholder or ""
            quoted = urllib.parse.quote(placeholder, safe="")
            path = target.path.replace(placeholder, value).replace(quoted, urllib.parse.quote(value, safe=""))
            target = Target(target.scheme, target.host, target.port, path, target.query)
        used.append((c.secret_name, value))
    return target, headers, used


def _base64_cores(raw: bytes) -> set[str]:
    """The base64 text of `raw` wherever it sits in a longer encoded string: for each of the three alignments,
    the characters that depend on `raw`'s bytes alone (the partial groups at either end are left out)."""
    cores = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for pad in range(3):
            text = encode(b"\0" * pad + raw).decode()
            core = text[4 if pad else 0:(pad + len(raw)) // 3 * 4]
            if len(core) >= 8:
                cores.add(core)
    return cores


def encoded_forms(value: str) -> set[str]:
    """The forms a secret commonly takes in a response: raw, URL-encoded, base64 (both alphabets, at any
    alignment inside a longer encoded text), hex."""
    raw = value.encode()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
             base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
             binascii.hexlify(raw).decode(), *_base64_cores(raw)}
    return {f for f in forms if len(f) >= 4}


class Redactor:
    """Replaces the injected values (and their encodings) in a response the tool will see."""

    def __init__(self, used: Iterable[tuple[str, str]]) -> None:
        self.forms = sorted(((f, name) for name, v in used for f in encoded_forms(v)), key=lambda p: -len(p[0]))

    def redact(self, text: bytes) -> tuple[bytes, list[str]]:
        """(text with every form replaced by `[REDACTED:<secret name>]`, the names found)."""
        found: list[str] = []
        for form, name in self.forms:
            needle = form.encode()
            if needle in text:
                text = text.replace(needle, f"[REDACTED:{name}]".encode())
                found.append(name)
        return text, sorted(set(found))


# -- rate limits ----------------------------------------------------------------------------------------------------

class RateLimiter:
    """Sliding windows per tool: at most `per_minute` requests in 60 s and `per_hour` in 3600 s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def admit(self, tool: ToolIdentity, per_minute: int, per_hour: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._times[tool.name]
            while q and q[0] <= now - 3600:
                q.popleft()
            last_minute = sum(1 for t in q if t > now - 60)
            if last_minute >= per_minute or len(q) >= per_hour:
                window = "minute" if last_minute >= per_minute else "hour"
                raise EgressError("client", f"rate limit: more than {per_minute if window == 'minute' else per_hour}"
                                  f" requests per {window}", code="rate_limited")
            q.append(now)


# -- the whole path -------------------------------------------------------------------------------------------------

@dataclass
class EgressConfig:
    """How this machine's egress behaves.  `allow_networks` opens private ranges explicitly (tests use loopback);
    `verify` is passed to the TLS layer (a CA bundle path or an SSLContext for a private CA)."""

    credentials: CredentialSource = field(default_factory=NoCredentials)
    resolver: Resolver = field(default_factory=SystemResolver)
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    require_https: bool = True
    verify: ssl.SSLContext | str | bool = True
    default_timeout_ms: int = 30_000


class Egress:
    """Sends a tool's request through every check.  Thread-safe; one per process (it keeps the rate windows)."""

    def __init__(self, config: EgressConfig | None = None) -> None:
        self.config = config or EgressConfig()
        self.rates = RateLimiter()
        # No keep-alive: connections are keyed by the pinned address, so a kept connection could carry a request
        # for another name (with a certificate checked for the first) to the same address.  No proxy from the
        # environment either: the request must leave from here, to the checked address.
        self._client = httpx.Client(verify=self.config.verify, follow_redirects=False, trust_env=False,
                                    limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self._client.close()

    def resolve_pinned(self, target: Target) -> str:
        """The first allowed address of the target's host; any refused address refuses the name (as IronClaw)."""
        try:
            ipaddress.ip_address(target.host)
            addresses = [target.host]
        except ValueError:
            addresses = self.config.resolver.resolve(target.host, target.port)
        if not addresses:
            raise EgressError("network-denied", f"{target.host} has no address")
        for a in addresses:
            check_address(a, self.config.allow_networks)
        return addresses[0]

    def send(self, tool: ToolIdentity, http: HttpCapability | None, req: EgressRequest) -> EgressResponse:
        method = req.method.upper()
        target = check_target(http, method, req.url, require_https=self.config.require_https)
        assert http is not None  # check_target refused otherwise
        if req.body is not None and len(req.body) > http.max_request_bytes:
            raise EgressError("input", f"request body of {len(req.body)} bytes is over the tool's limit of "
                              f"{http.max_request_bytes}", code="request_too_large")
        bad = sorted(k for k in req.headers if k.lower() in FORBIDDEN_HEADERS)
        if bad:
            raise EgressError("input", f"header {bad[0]!r} may not be set by a tool")
        self.rates.admit(tool, http.rate_limit.per_minute, http.rate_limit.per_hour)
        timeout_s = min(req.timeout_ms or self.config.default_timeout_ms, http.timeout_secs * 1000) / 1000
        body = req.body
        for _hop in range(MAX_REDIRECTS + 1):
            resp, location = self._one_hop(tool, http, method, target, req.headers, body, timeout_s)
            if location is None:
                return resp
            target = check_target(http, method, urllib.parse.urljoin(target.url_for(), location),
                                  require_https=self.config.require_https)
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
        raise EgressError("operation-failed", f"more than {MAX_REDIRECTS} redirects", request_sent=True)

    def _one_hop(self, tool: ToolIdentity, http: HttpCapability, method: str, target: Target,
                 headers: dict[str, str], body: bytes | None, timeout_s: float
                 ) -> tuple[EgressResponse, str | None]:
        address = self.resolve_pinned(target)
        target, sent_headers, used = inject_credentials(http, target, headers, self.config.credentials, tool)
        sent_headers["Host"] = target.host_header
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            with self._client.stream(method, target.url_for(address), headers=sent_headers, content=body,
                                     timeout=timeout_s, extensions=extensions) as r:
                data = bytearray()
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > http.max_response_bytes:
                        raise EgressError("output-too-large", f"response over the tool's limit of "
                                          f"{http.max_response_bytes} bytes", request_sent=True)
                status, resp_headers = r.status_code, dict(r.headers)
        except httpx.TimeoutException:
            raise EgressError("operation-failed", f"timed out after {timeout_s:g} s", request_sent=True,
                              code="timeout") from None
        except httpx.HTTPError as e:
            raise EgressError("operation-failed", f"{type(e).__name__}: {e}", request_sent=True) from None
        payload = bytes(data)
        if used:
            redactor = Redactor(used)
            payload, _ = redactor.redact(payload)
            resp_headers = {k: redactor.redact(v.encode())[0].decode("utf-8", "replace")
                            for k, v in resp_headers.items()}
        location = resp_headers.get("location") if status in REDIRECTS else None
        return EgressResponse(status, resp_headers, payload), location
