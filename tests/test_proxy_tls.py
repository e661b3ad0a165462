"""TLS termination in the egress proxy (sandbox/tls_ca.py, sandbox/proxy.py): the per-store CA and its leaves;
over real sockets on loopback, CONNECT to a host with a credential binding answered by the proxy (credential
injected upstream, the echo redacted, allowlist and leak check as for a forwarded request), a host without one
tunnelled to the upstream's own certificate, a client that does not trust the store CA refused by its own TLS;
and from inside a real jail, curl, urllib and httpx trusting the store CA only through the bundle the jail is given.

The upstream listens on a random 127.x.y.z at port 443 (CONNECT reaches 443 only), so those tests need root or
a low unprivileged-port sysctl."""

from __future__ import annotations

import datetime
import gzip
import http.server
import io
import json
import os
import random
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from wasm.support import ALLOWED, LOOPBACK, Secrets, Server, StubResolver, serve

from kernel import jailcheck
from sandbox import capabilities, jail, tls_ca
from sandbox.egress import Egress, EgressConfig, ToolIdentity
from sandbox.proxy import Audit, EgressProxy, LlmEndpoint, ProxyClient

PLAIN = "plain.allowed.test"  # allowlisted, no credential bound: tunnelled
VALUE = "tok-s3cr3t-value-0123456789"


# -- the CA ---------------------------------------------------------------------------------------------------------

def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> Mapping[str, object]:
    """A real TLS handshake over a socket pair; the client's view of the peer certificate, or the client's
    error raised."""
    a, b = socket.socketpair()
    errors: list[Exception] = []

    def server() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True):
                pass
        except (ssl.SSLError, OSError) as e:
            errors.append(e)

    t = threading.Thread(target=server)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=name) as c:
            peer = c.getpeercert()
    finally:
        b.close()
        t.join(10)
    assert peer is not None
    return peer


def trusting(pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks the host name, trusts `pem` alone
    ctx.load_verify_locations(cadata=pem.decode())
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default: the CA must be a proper one
    return ctx


def test_a_leaf_verifies_against_the_ca_for_its_host_only() -> None:
    ca = tls_ca.generate()
    peer = handshake(ca.server_context("api.example.test"), trusting(ca.cert_pem), "api.example.test")
    assert peer["subjectAltName"] == (("DNS", "api.example.test"),)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(ca.server_context("api.example.test"), trusting(ca.cert_pem), "other.example.test")
    leaf, _ = ca.issue("api.example.test")
    leaf.verify_directly_issued_by(ca.cert)
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert life <= datetime.timedelta(hours=tls_ca.LEAF_HOURS) + tls_ca.BACKDATE
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_the_store_ca_is_not_trusted_by_the_system_store() -> None:
    ca = tls_ca.generate()
    with pytest.raises(ssl.SSLCertVerificationError, match=r"unable to get local issuer certificate|self-signed"):
        handshake(ca.server_context("api.example.test"), ssl.create_default_context(), "api.example.test")
    system = ssl.create_default_context()
    assert ca.cert_pem.decode() not in json.dumps(system.get_ca_certs(binary_form=False))


def test_serialised_ca_signs_leaves_the_original_certificate_verifies() -> None:
    ca = tls_ca.generate()
    again = tls_ca.from_bytes(tls_ca.to_bytes(ca))
    assert again.cert == ca.cert
    handshake(again.server_context("api.example.test"), trusting(ca.cert_pem), "api.example.test")
    with pytest.raises(tls_ca.CAError):
        tls_ca.from_bytes(b"not a pem")
    other = tls_ca.generate()
    with pytest.raises(tls_ca.CAError, match="does not match"):  # one CA's certificate with another's key
        tls_ca.from_bytes(ca.cert_pem + tls_ca.to_bytes(other).split(b"-----END CERTIFICATE-----\n")[1])


def test_leaves_are_cached_per_host_and_names_checked() -> None:
    ca = tls_ca.generate()
    assert ca.server_context("a.test") is ca.server_context("A.test.")
    assert ca.server_context("a.test") is not ca.server_context("b.test")
    for bad in ("", "a b.test", "*.test", "ünï.test"):
        with pytest.raises(tls_ca.CAError):
            ca.issue(bad)


def test_a_leaf_near_its_end_is_made_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tls_ca.generate()
    first = ca.server_context("a.test")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=tls_ca.LEAF_HOURS * 0.8)
    monkeypatch.setattr(tls_ca, "_now", lambda: later)
    second = ca.server_context("a.test")
    assert second is not first and ca.server_context("a.test") is second


# -- the proxy over loopback ----------------------------------------------------------------------------------------

@dataclass
class Setup:
    srv: Server
    ca: tls_ca.StoreCA
    audit: io.StringIO
    port: int  # the proxy's


@contextmanager
def upstream() -> Iterator[Server]:
    """The test HTTPS server (certificate for both names from its own throwaway CA) on 127.x.y.z:443."""
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    try:
        with serve(names=(ALLOWED, PLAIN), address=(address, 443)) as srv:
            yield srv
    except PermissionError:
        pytest.skip("binding port 443 on loopback needs root (CI runs as root)")


def make_proxy(srv: Server, ca: tls_ca.StoreCA | None) -> tuple[EgressProxy, io.StringIO, int]:
    http = capabilities.parse(json.dumps({"http": {
        "allowlist": [{"host": ALLOWED, "path_prefix": "/api/", "methods": ["GET", "POST"]},
                      {"host": PLAIN, "path_prefix": "/api/"}],
        "credentials": {"k": {"secret_name": "tok", "location": {"type": "bearer"}, "host_patterns": [ALLOWED]}},
    }})).http
    config = srv.config(resolver=StubResolver({ALLOWED: [srv.address], PLAIN: [srv.address]}),
                        credentials=Secrets({"tok": VALUE}))
    assert isinstance(config, EgressConfig) and config.allow_networks == LOOPBACK
    audit = io.StringIO()
    proxy = EgressProxy(Egress(config), Audit(audit), secret_values=lambda: [VALUE], ca=ca)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    proxy.serve(s, ProxyClient(ToolIdentity("t"), http))
    return proxy, audit, s.getsockname()[1]


@pytest.fixture
def setup() -> Iterator[Setup]:
    with upstream() as srv:
        ca = tls_ca.generate()
        proxy, audit, port = make_proxy(srv, ca)
        try:
            yield Setup(srv, ca, audit, port)
        finally:
            proxy.close()


def through(port: int, host: str, ctx: ssl.SSLContext, request: bytes) -> tuple[Mapping[str, object], bytes]:
    """CONNECT host:443 through the proxy, TLS with `ctx` inside, one request: (peer certificate, answer)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = raw.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    with ctx.wrap_socket(raw, server_hostname=host) as tls:
        peer = tls.getpeercert()
        tls.sendall(request)
        out = b""
        while chunk := tls.recv(65536):
            out += chunk
    assert peer is not None
    return peer, out


def issuer(peer: Mapping[str, object]) -> str:
    return ",".join(f"{k}={v}" for rdn in peer["issuer"] for k, v in rdn)  # type: ignore[attr-defined]


def get(path: str, host: str = ALLOWED, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()


def test_a_bound_host_is_terminated_credential_injected_and_echo_redacted(setup: Setup) -> None:
    peer, out = through(setup.port, ALLOWED, trusting(setup.ca.cert_pem), get("/api/echo"))
    assert issuer(peer) == "organizationName=ClawFS,commonName=ClawFS store CA"
    assert setup.srv.seen[-1]["headers"]["Authorization"] == f"Bearer {VALUE}"  # type: ignore[index]
    assert out.startswith(b"HTTP/1.1 200")
    assert VALUE.encode() not in out and b"[REDACTED:tok]" in out
    line = json.loads(setup.audit.getvalue().splitlines()[-1])
    assert line["allowed"] and line["via"] == "CONNECT (terminated)"
    assert line["target"] == f"https://{ALLOWED}/api/echo"
    assert VALUE not in setup.audit.getvalue()


def test_httpx_through_the_proxy_trusting_the_store_ca(setup: Setup) -> None:
    ctx = ssl.create_default_context(cadata=setup.ca.cert_pem.decode())
    with httpx.Client(proxy=f"http://127.0.0.1:{setup.port}", verify=ctx, trust_env=False) as client:
        r = client.get(f"https://{ALLOWED}/api/echo")
    assert r.status_code == 200
    assert "[REDACTED:tok]" in r.json()["auth"] and VALUE not in r.text
    assert setup.srv.seen[-1]["headers"]["Authorization"] == f"Bearer {VALUE}"  # type: ignore[index]


def test_inside_the_tunnel_allowlist_and_leak_check_hold(setup: Setup) -> None:
    ctx = trusting(setup.ca.cert_pem)
    _, out = through(setup.port, ALLOWED, ctx, get("/private/x"))
    assert out.startswith(b"HTTP/1.1 403") and b"allowlist" in out
    _, out = through(setup.port, ALLOWED, ctx, get("/api/ok", extra=f"X-Data: {VALUE}\r\n"))
    assert out.startswith(b"HTTP/1.1 403") and b"leak detected" in out
    _, out = through(setup.port, ALLOWED, ctx, b"DELETE /api/ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403")
    assert setup.srv.seen == []
    lines = [json.loads(x) for x in setup.audit.getvalue().splitlines()]
    assert [x["allowed"] for x in lines] == [False, False, False]
    assert VALUE not in setup.audit.getvalue()


def test_a_host_without_binding_is_tunnelled_to_the_upstreams_own_certificate(setup: Setup) -> None:
    assert setup.srv.ca is not None
    ctx = ssl.create_default_context()
    setup.srv.ca.configure_trust(ctx)  # the upstream's CA only: the store CA would fail here
    peer, out = through(setup.port, PLAIN, ctx, get("/api/echo", PLAIN))
    assert "trustme" in issuer(peer)
    assert out.startswith(b"HTTP/1.0 200") or out.startswith(b"HTTP/1.1 200")
    assert "Authorization" not in setup.srv.seen[-1]["headers"]  # type: ignore[operator]
    assert json.loads(setup.audit.getvalue().splitlines()[-1])["reason"] == "tunnel"


def test_a_client_not_trusting_the_store_ca_fails_verification(setup: Setup) -> None:
    assert setup.srv.ca is not None
    ctx = ssl.create_default_context()
    setup.srv.ca.configure_trust(ctx)  # trusts the real upstream, not the store CA
    with pytest.raises(ssl.SSLCertVerificationError):
        through(setup.port, ALLOWED, ctx, get("/api/echo"))
    assert setup.srv.seen == []  # nothing went upstream
    deadline = time.monotonic() + 10  # the proxy's side of the handshake ends a moment after the client's
    while not setup.audit.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    line = json.loads(setup.audit.getvalue().splitlines()[-1])
    assert line["allowed"] is False and "TLS towards the client" in line["reason"]


def test_without_the_store_ca_a_bound_host_is_tunnelled_untouched() -> None:
    with upstream() as srv:
        proxy, audit, port = make_proxy(srv, None)
        assert srv.ca is not None
        ctx = ssl.create_default_context()
        srv.ca.configure_trust(ctx)
        try:
            peer, out = through(port, ALLOWED, ctx, get("/api/echo"))
        finally:
            proxy.close()
        assert "trustme" in issuer(peer) and b" 200 " in out[:16]
        assert json.loads(audit.getvalue().splitlines()[-1])["reason"] == "tunnel"
        assert "Authorization" not in srv.seen[-1]["headers"]  # type: ignore[operator]


def read_response(tls: ssl.SSLSocket) -> bytes:
    """One HTTP/1.1 response with a Content-Length, read without waiting for the connection to close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += tls.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_terminated_tunnel_carries_keep_alive_requests_until_connection_close(setup: Setup) -> None:
    raw = socket.create_connection(("127.0.0.1", setup.port), timeout=30)
    raw.sendall(f"CONNECT {ALLOWED}:443 HTTP/1.1\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    with trusting(setup.ca.cert_pem).wrap_socket(raw, server_hostname=ALLOWED) as tls:
        answers = []
        for path in ("/api/echo", "/api/ok"):
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {ALLOWED}\r\n\r\n".encode())
            answers.append(read_response(tls))
        tls.sendall(f"GET /api/echo HTTP/1.1\r\nHost: {ALLOWED}\r\nConnection: close\r\n\r\n".encode())
        last = b""
        while chunk := tls.recv(65536):  # the proxy closes after the request that asked for it
            last += chunk
    assert [a[:12] for a in answers] == [b"HTTP/1.1 200"] * 2 and last.startswith(b"HTTP/1.1 200")
    assert b"Connection: keep-alive" in answers[0] and b"Connection: close" in last
    assert [s["path"] for s in setup.srv.seen] == ["/api/echo", "/api/ok", "/api/echo"]
    assert all(s["headers"]["Authorization"] == f"Bearer {VALUE}" for s in setup.srv.seen)  # type: ignore[index]
    assert VALUE.encode() not in answers[0] + last
    lines = [json.loads(x) for x in setup.audit.getvalue().splitlines()]
    assert [x["target"] for x in lines] == [f"https://{ALLOWED}/api/echo", f"https://{ALLOWED}/api/ok",
                                            f"https://{ALLOWED}/api/echo"]


def test_an_https_llm_endpoint_is_terminated_and_its_api_key_placeholder_swapped() -> None:
    """The runtime (no tool capability) CONNECTs to the https LLM endpoint of settings/llm.toml with the
    placeholder of its api_key_secret; the proxy injects the value and redacts it from the echo."""
    with upstream() as srv:
        config = srv.config(resolver=StubResolver({ALLOWED: [srv.address]}), credentials=Secrets({"llm_key": VALUE}))
        audit = io.StringIO()
        proxy = EgressProxy(Egress(config), Audit(audit), LlmEndpoint("https", ALLOWED, 443, "llm_key"),
                            secret_values=lambda: [VALUE], ca=tls_ca.generate())
        assert proxy.ca is not None
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        proxy.serve(s, ProxyClient(ToolIdentity("runtime"), None))
        try:
            _, out = through(s.getsockname()[1], ALLOWED, trusting(proxy.ca.cert_pem),
                             get("/api/echo", extra="Authorization: Bearer clawfs-secret:llm_key\r\n"))
            _, other = through(s.getsockname()[1], ALLOWED, trusting(proxy.ca.cert_pem),
                               get("/api/echo", extra="Authorization: Bearer clawfs-secret:another\r\n"))
        finally:
            proxy.close()
        auths = [x["headers"]["Authorization"] for x in srv.seen]  # type: ignore[index]
    assert auths == [f"Bearer {VALUE}"]  # the placeholder of another secret never left
    assert out.startswith(b"HTTP/1.1 200") and b"[REDACTED:llm_key]" in out and VALUE.encode() not in out
    assert other.startswith(b"HTTP/1.1 403")
    assert VALUE not in audit.getvalue()


def test_a_bound_host_answering_a_private_address_is_refused_inside_the_tunnel() -> None:
    """Termination does not skip the address check: Egress refuses the private answer before any connection
    (10.251.0.2: nothing listens there; a name not in the allowlist is refused before any lookup)."""
    resolver = StubResolver({ALLOWED: ["10.251.0.2"]})
    audit = io.StringIO()
    ca = tls_ca.generate()
    proxy = EgressProxy(Egress(EgressConfig(resolver=resolver, credentials=Secrets({"tok": VALUE}))),
                        Audit(audit), ca=ca)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    proxy.serve(s, ProxyClient(ToolIdentity("t"), proxy_client_http()))
    try:
        _, out = through(s.getsockname()[1], ALLOWED, trusting(ca.cert_pem), get("/api/echo"))
        refused = socket.create_connection(s.getsockname(), timeout=30)
        refused.sendall(b"CONNECT elsewhere.invalid:443 HTTP/1.1\r\n\r\n")
        answer = refused.recv(4096)
        refused.close()
    finally:
        proxy.close()
    assert out.startswith(b"HTTP/1.1 403") and b"private, local or reserved" in out
    assert answer.startswith(b"HTTP/1.1 403")
    assert resolver.asked == [ALLOWED]


class Gzip(http.server.BaseHTTPRequestHandler):
    """Echoes the Authorization it got, gzip-compressed (as most APIs answer a client that accepts gzip)."""

    def do_GET(self) -> None:
        body = gzip.compress(json.dumps({"auth": self.headers.get("Authorization")}).encode())
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_gzip_answer_is_redacted_and_reaches_the_client_decoded() -> None:
    """Egress decodes the body (so redaction sees the secret); the client must not be told it is still gzip."""
    ca = trustme.CA()
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    try:
        srv = http.server.ThreadingHTTPServer((address, 443), Gzip)
    except PermissionError:
        pytest.skip("binding port 443 on loopback needs root (CI runs as root)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(ALLOWED).configure_cert(ctx)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    store_ca = tls_ca.generate()
    config = EgressConfig(resolver=StubResolver({ALLOWED: [address]}), allow_networks=LOOPBACK, verify=verify,
                          credentials=Secrets({"tok": VALUE}))
    proxy = EgressProxy(Egress(config), Audit(io.StringIO()), ca=store_ca)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    proxy.serve(s, ProxyClient(ToolIdentity("t"), proxy_client_http()))
    try:
        with httpx.Client(proxy=f"http://127.0.0.1:{s.getsockname()[1]}", trust_env=False,
                          verify=ssl.create_default_context(cadata=store_ca.cert_pem.decode())) as client:
            r = client.get(f"https://{ALLOWED}/api/x", headers={"Accept-Encoding": "gzip"})
    finally:
        proxy.close()
        srv.shutdown()
        srv.server_close()
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert r.json() == {"auth": "Bearer [REDACTED:tok]"}


def test_the_jail_env_points_every_tls_stack_at_the_bundle_only_with_a_ca() -> None:
    env = jail.jail_env(jail.JailConfig(mount="/x", ca_pem="PEM"))
    assert {env[k] for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")} == {jail.CA_BUNDLE}
    assert "SSL_CERT_FILE" not in jail.jail_env(jail.JailConfig(mount="/x"))


# -- from inside a real jail ------------------------------------------------------------------------------------

JAIL_SCRIPT = f"""
set -u
env -u CURL_CA_BUNDLE -u REQUESTS_CA_BUNDLE curl -sS https://{ALLOWED}/api/echo; echo
env -u SSL_CERT_FILE -u CURL_CA_BUNDLE -u REQUESTS_CA_BUNDLE curl -sS https://{ALLOWED}/api/echo \\
    >/dev/null 2>&1; echo "untrusted=$?"
python3 -c 'import urllib.request; print(urllib.request.urlopen("https://{ALLOWED}/api/echo").read().decode())'
python3 -c 'import httpx; print(httpx.get("https://{ALLOWED}/api/echo").text)'
"""


@pytest.mark.jail
@pytest.mark.skipif(os.geteuid() != 0 or not all(layer.ok for layer in jailcheck.layers()),
                    reason="a real jail needs root and every jail layer")
def test_from_inside_a_jail_curl_urllib_and_httpx_trust_the_store_ca(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    with upstream() as srv:
        ca = tls_ca.generate()
        proxy, audit, _ = make_proxy(srv, ca)
        try:
            j = jail.start(jail.JailConfig(mount=str(home), ca_pem=ca.cert_pem.decode()),
                           ["/bin/sh", "-c", JAIL_SCRIPT], stdout=subprocess.PIPE)
            assert j.proxy_socket is not None
            http = proxy_client_http()
            proxy.serve(j.proxy_socket, ProxyClient(ToolIdentity("t"), http))
            out, _ = j.proc.communicate(timeout=120)
            assert j.wait() == 0
        finally:
            proxy.close()
        auths = [s["headers"].get("Authorization") for s in srv.seen]  # type: ignore[attr-defined]
    curl, untrusted, python, with_httpx = out.decode().splitlines()
    assert "[REDACTED:tok]" in json.loads(curl)["auth"]
    assert untrusted != "untrusted=0"  # curl without the bundle: the store CA is not the system's
    assert "[REDACTED:tok]" in json.loads(python)["auth"]
    assert "[REDACTED:tok]" in json.loads(with_httpx)["auth"]
    assert auths == [f"Bearer {VALUE}"] * 3  # curl, urllib, httpx; the untrusting curl sent nothing
    assert VALUE not in out.decode() and VALUE not in audit.getvalue()


def proxy_client_http() -> capabilities.HttpCapability | None:
    return capabilities.parse(json.dumps({"http": {
        "allowlist": [{"host": ALLOWED, "path_prefix": "/api/"}],
        "credentials": {"k": {"secret_name": "tok", "location": {"type": "bearer"}, "host_patterns": [ALLOWED]}},
    }})).http
