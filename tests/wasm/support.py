"""Test support for the WASM tool host: local HTTPS/HTTP servers on 127.0.0.1, a stub resolver, a credential
source, the synthetic tools (this folder's .wat files) and IronClaw's prebuilt tools (../shared/ironclaw-tools)."""

from __future__ import annotations

import base64
import http.server
import ipaddress
import json
import shutil
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from sandbox.egress import EgressConfig, ToolIdentity

HERE = Path(__file__).parent
IRONCLAW_TOOLS = Path(__file__).resolve().parents[3] / "shared" / "ironclaw-tools"
IRONCLAW_SKIP = f"IronClaw's prebuilt tools are not at {IRONCLAW_TOOLS} (the shared fixtures folder)"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
ALLOWED = "api.allowed.test"  # resolves (stub) to 127.0.0.1, where the test server listens
SECRET = "s3cr3t-value-for-tests-0123456789"


def wat(name: str) -> str:
    return (HERE / f"{name}.wat").read_text()


def install(home: Path, name: str, source: str | bytes, capabilities: dict[str, object] | None = None) -> Path:
    """tools/<name>/{tool.wasm, capabilities.json} in `home` (a WAT text is stored as is: wasmtime takes both)."""
    d = home / "tools" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "tool.wasm").write_bytes(source.encode() if isinstance(source, str) else source)
    if capabilities is not None:
        (d / "capabilities.json").write_text(json.dumps(capabilities))
    return d


def install_file(home: Path, name: str, wasm: Path, capabilities: Path | None = None) -> Path:
    d = home / "tools" / name
    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wasm, d / "tool.wasm")
    if capabilities is not None:
        shutil.copyfile(capabilities, d / "capabilities.json")
    return d


@dataclass
class StubResolver:
    """Names to addresses, and every name asked (to show what was refused before any lookup)."""

    table: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return list(self.table.get(host, []))


@dataclass
class Secrets:
    values: dict[str, str]
    asked: list[tuple[str, str]] = field(default_factory=list)

    def secret(self, tool: ToolIdentity, name: str) -> str | None:
        self.asked.append((tool.name, name))
        return self.values.get(name)


class Handler(http.server.BaseHTTPRequestHandler):
    """Paths: /ok (JSON), /echo (the request's Authorization and query echoed, raw and base64), /redirect-ok,
    /redirect-out (to a name outside the allowlist), /big (2 MiB), /leak (a token-shaped value), /slow (waits
    for the server's `release` event)."""

    seen: list[dict[str, object]]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "headers": dict(self.headers)})  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        if path == "/api/ok":
            self._send(200, b'{"ok": true}')
        elif path == "/api/echo":
            auth = self.headers.get("Authorization", "") + self.headers.get("X-Key", "") + self.path
            body = json.dumps({"auth": auth, "b64": base64.b64encode(auth.encode()).decode()}).encode()
            self._send(200, body)
        elif path == "/api/redirect-ok":
            self._send(302, b"", {"Location": "/api/ok"})
        elif path == "/api/redirect-out":
            self._send(302, b"", {"Location": "https://elsewhere.invalid/x"})
        elif path == "/api/big":
            self._send(200, b"x" * (2 * 1024 * 1024))
        elif path == "/api/slow":  # answers only once the test releases it (or after 10 s)
            self.server.release.wait(10)  # type: ignore[attr-defined]
            self._send(200, b'{"slow": true}')
        elif path == "/api/search.messages":  # Slack's answer, for IronClaw's own Slack tool
            self._send(200, json.dumps({"ok": True, "messages": {"total": 1, "matches": [
                {"text": "deadline is friday", "user": "U1", "ts": "1.0", "channel": {"id": "C1", "name": "general"},
                 "permalink": "https://example.test/p"}]}}).encode())
        elif path == "/api/leak":
            self._send(200, b'{"token": "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"}')
        else:
            self._send(404, b"{}")

    do_POST = do_GET

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Server:
    port: int
    seen: list[dict[str, object]]
    ca: trustme.CA | None
    address: str = "127.0.0.1"

    def config(self, **kw: object) -> EgressConfig:
        """An egress config that reaches this server as https://api.allowed.test:<port>/ (stub DNS, loopback
        allowed explicitly, the test CA trusted)."""
        verify: ssl.SSLContext | bool = True
        if self.ca is not None:
            verify = ssl.create_default_context()
            self.ca.configure_trust(verify)
        base: dict[str, object] = {"resolver": StubResolver({ALLOWED: ["127.0.0.1"]}), "allow_networks": LOOPBACK,
                                   "verify": verify, "require_https": self.ca is not None}
        base.update(kw)
        return EgressConfig(**base)  # type: ignore[arg-type]

    def url(self, path: str) -> str:
        scheme = "https" if self.ca is not None else "http"
        return f"{scheme}://{ALLOWED}:{self.port}{path}"


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (a refused or timed-out request) is expected here


@contextmanager
def serve(tls: bool = True, names: tuple[str, ...] = (ALLOWED,), address: tuple[str, int] = ("127.0.0.1", 0)
          ) -> Iterator[Server]:
    """A threaded HTTP(S) server on `address` (loopback) with a certificate for `names` from a throwaway CA."""
    httpd = QuietServer(address, Handler)
    httpd.seen = []  # type: ignore[attr-defined]
    httpd.release = threading.Event()  # type: ignore[attr-defined]
    ca = None
    if tls:
        ca = trustme.CA()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(httpd.server_address[1], httpd.seen, ca, httpd.server_address[0])  # type: ignore[attr-defined]
    finally:
        httpd.release.set()  # type: ignore[attr-defined]
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def http_caps(port: int, **http: object) -> dict[str, object]:
    """A capabilities file that allows GET/POST to api.allowed.test under /api/."""
    block: dict[str, object] = {"allowlist": [{"host": ALLOWED, "path_prefix": "/api/", "methods": ["GET", "POST"]}]}
    block.update(http)
    return {"http": block}
