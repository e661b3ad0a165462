"""sandbox/egress.py: the egress policy, against real local HTTPS servers on 127.0.0.1 (stub DNS for .test names).

Refused hosts are reserved .test/.invalid names; private and link-local addresses come only from the stub
resolver, and the tests show no connection is attempted to them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from wasm.support import ALLOWED, SECRET, Secrets, StubResolver, http_caps, serve

from sandbox import capabilities
from sandbox.egress import (
    Egress,
    EgressConfig,
    EgressError,
    EgressRequest,
    RateLimiter,
    Redactor,
    ToolIdentity,
    check_address,
    check_target,
    host_matches,
)

TOOL = ToolIdentity("t", "b3")


def caps(port: int, **http: Any) -> capabilities.HttpCapability:
    c = capabilities.parse(json.dumps(http_caps(port, **http))).http
    assert c is not None
    return c


def test_host_patterns() -> None:
    assert host_matches("*.example.com", "api.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("*.example.com", "evilexample.com")
    assert host_matches("Example.COM", "example.com.")
    assert not host_matches("example.com", "api.example.com")


@pytest.mark.parametrize("url,why", [
    ("http://api.allowed.test/api/ok", "scheme"),
    ("https://user:pw@api.allowed.test/api/ok", "user information"),
    ("https://api.allowed.test/api/../admin", ". or .."),
    ("https://api.allowed.test/api/%2e%2e/admin", ". or .."),
    ("https://api.allowed.test/api%2fx", "encoded slash"),
    ("https://api.allowed.test/other", "allowlist"),
    ("https://elsewhere.invalid/api/ok", "allowlist"),
    ("https:///api/ok", "no host"),
])
def test_target_refused(url: str, why: str) -> None:
    with pytest.raises(EgressError, match=why.replace(".", r"\.")):
        check_target(caps(443), "GET", url)


def test_method_not_in_allowlist() -> None:
    with pytest.raises(EgressError, match="not in the tool's allowlist") as e:
        check_target(caps(443), "DELETE", f"https://{ALLOWED}/api/ok")
    assert e.value.kind == "network-denied"


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.1", "172.16.0.1", "127.0.0.1", "169.254.169.254",
                                     "100.64.1.1", "224.0.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1",
                                     "::ffff:10.0.0.1", "::ffff:127.0.0.1", "2002:a00:1::"])
def test_private_addresses_refused(address: str) -> None:
    with pytest.raises(EgressError, match="private, local or reserved"):
        check_address(address)


def test_public_address_passes() -> None:
    assert str(check_address("93.184.215.14")) == "93.184.215.14"


def test_name_refused_before_any_lookup() -> None:
    resolver = StubResolver({})
    egress = Egress(EgressConfig(resolver=resolver))
    with pytest.raises(EgressError, match="allowlist"):
        egress.send(TOOL, caps(443), EgressRequest("GET", "https://elsewhere.invalid/api/ok"))
    assert resolver.asked == []


@pytest.mark.parametrize("address", ["10.1.2.3", "169.254.169.254", "100.100.0.1", "::ffff:192.168.0.1", "::1"])
def test_private_resolution_refused_before_connect(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "internal.test"
    http = capabilities.parse('{"http": {"allowlist": [{"host": "internal.test"}]}}').http
    egress = Egress(EgressConfig(resolver=StubResolver({name: [address]})))

    def no_connect(*a: Any, **k: Any) -> Any:
        raise AssertionError("a refused address must never be dialled")

    monkeypatch.setattr(egress._client, "stream", no_connect)
    with pytest.raises(EgressError, match="private, local or reserved") as e:
        egress.send(TOOL, http, EgressRequest("GET", f"https://{name}/x"))
    assert e.value.kind == "network-denied" and not e.value.request_sent


def test_one_private_address_among_public_refuses_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    http = capabilities.parse('{"http": {"allowlist": [{"host": "mixed.test"}]}}').http
    egress = Egress(EgressConfig(resolver=StubResolver({"mixed.test": ["93.184.215.14", "10.0.0.1"]})))
    monkeypatch.setattr(egress._client, "stream", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    with pytest.raises(EgressError, match=r"10\.0\.0\.1"):
        egress.send(TOOL, http, EgressRequest("GET", "https://mixed.test/x"))


def test_allowed_https_request_pins_the_resolved_address() -> None:
    with serve() as srv:
        cfg = srv.config()
        egress = Egress(cfg)
        resp = egress.send(TOOL, caps(srv.port), EgressRequest("GET", srv.url("/api/ok")))
        assert resp.status == 200 and resp.body == b'{"ok": true}'
        assert cfg.resolver.asked == [ALLOWED]  # type: ignore[attr-defined]
        # the server saw the allowlisted name as Host (TLS checked the certificate against it: SNI)
        assert srv.seen[-1]["headers"]["Host"] == f"{ALLOWED}:{srv.port}"  # type: ignore[index]


def test_plain_http_refused_by_default_and_loopback_needs_explicit_allowance() -> None:
    with serve(tls=False) as srv:
        egress = Egress(srv.config(require_https=True))
        with pytest.raises(EgressError, match="only https"):
            egress.send(TOOL, caps(srv.port), EgressRequest("GET", srv.url("/api/ok")))
        egress = Egress(srv.config(allow_networks=()))
        with pytest.raises(EgressError, match="private, local or reserved"):
            egress.send(TOOL, caps(srv.port), EgressRequest("GET", srv.url("/api/ok")))
        assert srv.seen == []


@pytest.mark.parametrize("location,header", [
    ({"type": "bearer"}, "Bearer " + SECRET),
    ({"type": "header", "name": "X-Key", "prefix": "k="}, "k=" + SECRET),
    ({"type": "basic", "username": "me"}, "Basic " + base64.b64encode(f"me:{SECRET}".encode()).decode()),
])
def test_credentials_injected_and_redacted_from_the_response(location: dict[str, str], header: str) -> None:
    with serve() as srv:
        secrets = Secrets({"tok": SECRET})
        egress = Egress(srv.config(credentials=secrets))
        http = caps(srv.port, credentials={"k": {"secret_name": "tok", "location": location,
                                                 "host_patterns": [ALLOWED]}})
        resp = egress.send(TOOL, http, EgressRequest("GET", srv.url("/api/echo")))
        sent = srv.seen[-1]["headers"]
        assert header in (sent.get("Authorization"), sent.get("X-Key"))  # type: ignore[union-attr]
        assert SECRET.encode() not in resp.body
        assert base64.b64encode(SECRET.encode()) not in resp.body
        assert b"[REDACTED:tok]" in resp.body
        assert secrets.asked == [("t", "tok")]


def test_query_and_url_path_credentials() -> None:
    with serve() as srv:
        egress = Egress(srv.config(credentials=Secrets({"tok": SECRET})))
        http = caps(srv.port, credentials={
            "q": {"secret_name": "tok", "location": {"type": "query_param", "name": "key"},
                  "host_patterns": [ALLOWED]}})
        resp = egress.send(TOOL, http, EgressRequest("GET", srv.url("/api/echo?x=1")))
        assert srv.seen[-1]["path"] == f"/api/echo?x=1&key={SECRET}"
        assert SECRET.encode() not in resp.body
        http = caps(srv.port, allowlist=[{"host": ALLOWED, "path_prefix": "/api/"}], credentials={
            "p": {"secret_name": "tok", "location": {"type": "url_path", "placeholder": "{TOKEN}"},
                  "host_patterns": [ALLOWED]}})
        egress.send(TOOL, http, EgressRequest("GET", srv.url("/api/{TOKEN}/echo")))
        assert srv.seen[-1]["path"] == f"/api/{SECRET}/echo"


def test_missing_credential_refused_unless_optional() -> None:
    with serve() as srv:
        egress = Egress(srv.config())
        cred = {"secret_name": "tok", "location": {"type": "bearer"}, "host_patterns": [ALLOWED]}
        with pytest.raises(EgressError, match="not available") as e:
            egress.send(TOOL, caps(srv.port, credentials={"k": cred}), EgressRequest("GET", srv.url("/api/ok")))
        assert e.value.kind == "auth-required"
        resp = egress.send(TOOL, caps(srv.port, credentials={"k": {**cred, "optional": True}}),
                           EgressRequest("GET", srv.url("/api/ok")))
        assert resp.status == 200


def test_credential_not_sent_to_other_hosts() -> None:
    with serve() as srv:
        egress = Egress(srv.config(credentials=Secrets({"tok": SECRET})))
        http = caps(srv.port, credentials={"k": {"secret_name": "tok", "location": {"type": "bearer"},
                                                 "host_patterns": ["api.other.test"]}})
        egress.send(TOOL, http, EgressRequest("GET", srv.url("/api/echo")))
        assert "Authorization" not in srv.seen[-1]["headers"]  # type: ignore[operator]


def test_redirects_rechecked() -> None:
    with serve() as srv:
        egress = Egress(srv.config())
        resp = egress.send(TOOL, caps(srv.port), EgressRequest("GET", srv.url("/api/redirect-ok")))
        assert resp.status == 200 and [s["path"] for s in srv.seen] == ["/api/redirect-ok", "/api/ok"]
        with pytest.raises(EgressError, match="allowlist"):
            egress.send(TOOL, caps(srv.port), EgressRequest("GET", srv.url("/api/redirect-out")))


def test_size_limits() -> None:
    with serve() as srv:
        egress = Egress(srv.config())
        with pytest.raises(EgressError, match="response over") as e:
            egress.send(TOOL, caps(srv.port, max_response_bytes=1024 * 1024), EgressRequest("GET", srv.url("/api/big")))
        assert e.value.kind == "output-too-large"
        with pytest.raises(EgressError, match="request body"):
            egress.send(TOOL, caps(srv.port, max_request_bytes=10), EgressRequest("POST", srv.url("/api/ok"),
                                                                                  body=b"x" * 11))


def test_tool_may_not_set_host_header() -> None:
    with pytest.raises(EgressError, match="may not be set"):
        Egress(EgressConfig(resolver=StubResolver({}))).send(
            TOOL, caps(443), EgressRequest("GET", f"https://{ALLOWED}/api/ok", headers={"Host": "x"}))


def test_rate_limit_per_tool() -> None:
    rl = RateLimiter()
    for i in range(3):
        rl.admit(TOOL, 3, 100, now=1000.0 + i)
    with pytest.raises(EgressError, match="per minute"):
        rl.admit(TOOL, 3, 100, now=1003.0)
    rl.admit(ToolIdentity("other"), 3, 100, now=1003.0)  # windows are per tool
    rl.admit(TOOL, 3, 100, now=1061.0)  # the minute has passed
    with pytest.raises(EgressError, match="per hour"):
        for i in range(10):
            rl.admit(TOOL, 100, 6, now=2000.0 + i)


def test_redactor_encoded_forms() -> None:
    text = f"a {SECRET} b {base64.b64encode(SECRET.encode()).decode()} c {SECRET.encode().hex()}".encode()
    out, names = Redactor([("tok", SECRET)]).redact(text)
    assert SECRET.encode() not in out and names == ["tok"] and out.count(b"[REDACTED:tok]") == 3


def test_tls_checks_the_certificate_against_the_name_not_the_address() -> None:
    """api.other.test is allowlisted and resolves to the test server, whose certificate is for api.allowed.test
    only: the pinned connection must fail TLS verification (the name, not the address, is verified)."""
    with serve() as srv:
        cfg = srv.config(resolver=StubResolver({"api.other.test": ["127.0.0.1"]}))
        http = capabilities.parse(json.dumps(
            {"http": {"allowlist": [{"host": "api.other.test"}]}})).http
        with pytest.raises(EgressError, match=r"CERTIFICATE_VERIFY_FAILED|certificate") as e:
            Egress(cfg).send(TOOL, http, EgressRequest("GET", f"https://api.other.test:{srv.port}/api/ok"))
        assert e.value.kind == "operation-failed"
        assert srv.seen == []


@pytest.mark.parametrize("before", [b"", b"a", b"ab", b"Bearer "])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_redactor_finds_base64_at_any_alignment(before: bytes, encode: Any) -> None:
    text = encode(before + SECRET.encode() + b"/tail")
    out, names = Redactor([("tok", SECRET)]).redact(b"x " + text + b" y")
    assert names == ["tok"] and b"[REDACTED:tok]" in out
