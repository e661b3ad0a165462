"""The egress proxy (sandbox/proxy.py) over real sockets: the LLM endpoint on loopback allowed, names refused
before any DNS lookup, CONNECT 443 only, private and link-local answers refused, the caller known by its socket,
leaks blocked, every request audited; and through a real jail, with HTTP_PROXY as the jail sets it."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import jailcheck, netns
from sandbox import jail
from sandbox.capabilities import Endpoint, HttpCapability
from sandbox.egress import Egress, EgressConfig, SystemResolver, ToolIdentity
from sandbox.proxy import Audit, EgressProxy, LlmEndpoint, ProxyClient

SECRET = "s3cr3t-value-0123456789"


class Recording:
    """A resolver that records every lookup (a name refused before DNS must never appear) and answers .test names
    from a table."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table, self.asked = table, []  # type: ignore[var-annotated]

    def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.table[host] if host in self.table else SystemResolver().resolve(host, port)


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def llm() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def setup(llm: int) -> Iterator[tuple[EgressProxy, Recording, io.StringIO, dict[str, int]]]:
    resolver = Recording({"private.test": ["10.251.0.2"], "linklocal.test": ["169.254.77.2"],
                          "rebind.test": ["198.51.100.7", "10.251.0.2"]})
    audit = io.StringIO()
    proxy = EgressProxy(Egress(EgressConfig(resolver=resolver)), Audit(audit),
                        LlmEndpoint("http", "127.0.0.1", llm), secret_values=lambda: [SECRET])
    allowed = HttpCapability(allowlist=(Endpoint("private.test"), Endpoint("linklocal.test"),
                                        Endpoint("rebind.test")))
    ports = {}
    for name, cap in (("alpha", allowed), ("beta", None)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        ports[name] = s.getsockname()[1]
        proxy.serve(s, ProxyClient(ToolIdentity(name), cap))
    yield proxy, resolver, audit, ports
    proxy.close()


def ask(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_llm_endpoint_on_loopback_is_allowed(setup: tuple[EgressProxy, Recording, io.StringIO, dict[str, int]],
                                             llm: int) -> None:
    _, _, audit, ports = setup
    out = ask(ports["beta"], f"GET http://127.0.0.1:{llm}/v1/models HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 200")
    assert b'"/v1/models"' in out
    line = json.loads(audit.getvalue().splitlines()[-1])
    assert line["allowed"] and line["tool"] == "beta"


@pytest.mark.parametrize("raw", [b"CONNECT evil.invalid:443 HTTP/1.1\r\n\r\n",
                                 b"GET http://evil.test/x HTTP/1.1\r\n\r\n",
                                 b"CONNECT private.test:22 HTTP/1.1\r\n\r\n"])
def test_refused_before_any_dns_lookup(setup: tuple[EgressProxy, Recording, io.StringIO, dict[str, int]],
                                       raw: bytes) -> None:
    _, resolver, audit, ports = setup
    out = ask(ports["alpha"], raw)
    assert out.startswith(b"HTTP/1.1 403")
    assert resolver.asked == []
    assert json.loads(audit.getvalue().splitlines()[-1])["allowed"] is False


def test_another_tools_name_gets_nothing(setup: tuple[EgressProxy, Recording, io.StringIO, dict[str, int]]) -> None:
    _, resolver, _, ports = setup
    out = ask(ports["beta"], b"CONNECT private.test:443 HTTP/1.1\r\nX-Tool: alpha\r\n"
                             b"Proxy-Authorization: alpha\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403") and b"beta" in out
    assert resolver.asked == []


def test_exfiltration_in_url_header_or_body_is_blocked(
        setup: tuple[EgressProxy, Recording, io.StringIO, dict[str, int]], llm: int) -> None:
    _, _, audit, ports = setup
    for raw in (f"GET http://127.0.0.1:{llm}/?q={SECRET} HTTP/1.1\r\n\r\n",
                f"GET http://127.0.0.1:{llm}/ HTTP/1.1\r\nX-Data: {SECRET}\r\n\r\n",
                f"POST http://127.0.0.1:{llm}/ HTTP/1.1\r\nContent-Length: {len(SECRET) + 2}\r\n\r\nq={SECRET}",
                f"GET http://127.0.0.1:{llm}/?k=AKIAABCDEFGHIJKLMNOP HTTP/1.1\r\n\r\n"):
        out = ask(ports["alpha"], raw.encode())
        assert out.startswith(b"HTTP/1.1 403") and b"leak detected" in out
    assert SECRET not in audit.getvalue()
    assert "AKIAABCDEFGHIJKLMNOP" not in audit.getvalue()


@pytest.fixture
def test_hosts() -> Iterator[netns.VethHost]:
    if os.geteuid() != 0:
        pytest.skip("creating a test network namespace needs root (CI runs as root)")
    host = netns.VethHost(f"cfpt{os.getpid() % 10000}", f"cfp{os.getpid() % 10000}",
                          ["10.251.0.1/24", "169.254.77.1/24"], ["10.251.0.2/24", "169.254.77.2/24"])
    try:
        yield host.create()
    finally:
        host.destroy()


@pytest.mark.jail
def test_private_link_local_and_rebinding_answers_are_refused(
        setup: tuple[EgressProxy, Recording, io.StringIO, dict[str, int]], test_hosts: netns.VethHost) -> None:
    _, resolver, _, ports = setup
    listener = netns.RecordingListener(test_hosts.path, [("10.251.0.2", 443), ("169.254.77.2", 443)])
    try:
        for name in ("private.test", "linklocal.test", "rebind.test"):
            out = ask(ports["alpha"], f"CONNECT {name}:443 HTTP/1.1\r\n\r\n".encode())
            assert out.startswith(b"HTTP/1.1 403"), out
            assert b"private, local or reserved" in out
    finally:
        listener.close()
    assert resolver.asked == ["private.test", "linklocal.test", "rebind.test"]
    assert listener.connections == []


@pytest.mark.jail
@pytest.mark.skipif(os.geteuid() != 0 or not all(layer.ok for layer in jailcheck.layers()),
                    reason="a real jail needs root and every jail layer")
def test_from_inside_the_jail_through_http_proxy(tmp_path: Path, llm: int) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    audit = io.StringIO()
    proxy = EgressProxy(Egress(), Audit(audit), LlmEndpoint("http", "127.0.0.1", llm))
    code = ("import urllib.request, urllib.error\n"
            f"print(urllib.request.urlopen('http://127.0.0.1:{llm}/v1/chat').read().decode())\n"
            "try:\n    urllib.request.urlopen('http://evil.invalid/')\nexcept urllib.error.HTTPError as e:\n"
            "    print(e.code)")
    j = jail.start(jail.JailConfig(mount=str(home)), ["python3", "-c", code], stdout=subprocess.PIPE)
    assert j.proxy_socket is not None
    proxy.serve(j.proxy_socket, ProxyClient(ToolIdentity("runtime"), None))
    out, _ = j.proc.communicate(timeout=60)
    assert j.wait() == 0
    proxy.close()
    first, second = out.decode().splitlines()
    assert json.loads(first)["path"] == "/v1/chat"
    assert second == "403"
    lines = [json.loads(x) for x in audit.getvalue().splitlines()]
    assert [x["allowed"] for x in lines] == [True, False]


def test_tunnels_count_against_the_tools_rate_limit(llm: int) -> None:
    from sandbox.capabilities import RateLimit
    resolver = Recording({"private.test": ["10.251.0.2"]})
    proxy = EgressProxy(Egress(EgressConfig(resolver=resolver)), Audit(io.StringIO()))
    cap = HttpCapability(allowlist=(Endpoint("private.test"),), rate_limit=RateLimit(per_minute=2, per_hour=10))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    proxy.serve(s, ProxyClient(ToolIdentity("gamma"), cap))
    try:
        answers = [ask(s.getsockname()[1], b"CONNECT private.test:443 HTTP/1.1\r\n\r\n")[:12] for _ in range(3)]
    finally:
        proxy.close()
    # The first two reach the address check (refused: private); the third is over the rate before any lookup.
    assert answers == [b"HTTP/1.1 403", b"HTTP/1.1 403", b"HTTP/1.1 429"]
    assert resolver.asked == ["private.test", "private.test"]


def test_an_endpoint_echoing_the_injected_credential_hands_back_no_secret() -> None:
    """The jail asks for http://api.allowed.test/...; the proxy sends it over https with the tool's credential
    injected (the runtime never held it) and redacts the value from the echo before it reaches the caller."""
    from wasm.support import ALLOWED, Secrets, http_caps, serve

    from sandbox import capabilities

    value = "tok-" + SECRET
    with serve() as srv:
        http = capabilities.parse(json.dumps(http_caps(srv.port, credentials={"k": {
            "secret_name": "tok", "location": {"type": "bearer"}, "host_patterns": [ALLOWED]}}))).http
        audit = io.StringIO()
        proxy = EgressProxy(Egress(srv.config(credentials=Secrets({"tok": value}))), Audit(audit))
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        proxy.serve(s, ProxyClient(ToolIdentity("t"), http))
        try:
            out = ask(s.getsockname()[1], f"GET http://{ALLOWED}:{srv.port}/api/echo HTTP/1.1\r\n\r\n".encode())
        finally:
            proxy.close()
        assert srv.seen[-1]["headers"]["Authorization"] == f"Bearer {value}"  # type: ignore[index]
    assert out.startswith(b"HTTP/1.1 200")
    assert value.encode() not in out
    assert b"[REDACTED:tok]" in out
    assert value not in audit.getvalue()
