#!/usr/bin/env python3
"""What TLS termination adds to a request through the egress proxy (bench/jail.py reports it as `proxy_tls`).

One GET over HTTPS on loopback, three ways, interleaved so each sees the same load:
- direct: TLS straight to the local upstream (127.x.y.z:443, a certificate from a throwaway CA);
- tunnelled: CONNECT through the proxy for a host without a credential binding (bytes spliced, TLS end to end);
- terminated: CONNECT for a host with a bearer credential bound: TLS to the proxy with a leaf of the store CA,
  leak check, credential injected, Egress's own TLS to the upstream (pinned address), response redacted.
Each request is a fresh connection (the proxy answers one request per tunnel). Reported: p50/p95 of each and
`added_ms_p50` = terminated - tunnelled. Needs root (port 443 on loopback).

    .venv/bin/python -m bench.proxy_tls [--requests 300] [--out bench/results]   (writes OUT/proxy_tls.json)
"""

from __future__ import annotations

import argparse
import http.server
import io
import ipaddress
import random
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path
from typing import Any, cast

from bench.machine import machine_info, write_report
from sandbox import tls_ca
from sandbox.capabilities import Credential, CredentialLocation, Endpoint, HttpCapability, RateLimit
from sandbox.egress import Egress, EgressConfig, ToolIdentity
from sandbox.proxy import Audit, EgressProxy, ProxyClient

BOUND, PLAIN = "bound.bench.test", "plain.bench.test"


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class _Table:
    def __init__(self, address: str) -> None:
        self.address = address

    def resolve(self, host: str, port: int) -> list[str]:
        return [self.address]


class _Secret:
    def secret(self, tool: ToolIdentity, name: str) -> str | None:
        return "bench-token-0123456789"


def _get(ctx: ssl.SSLContext, host: str, connect: tuple[str, int], via_proxy: bool) -> str:
    """GET over TLS; the issuer of the certificate the client saw (so a tunnel cannot pass for termination)."""
    raw = socket.create_connection(connect, timeout=30)
    if via_proxy:
        raw.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = raw.recv(1)
            if not chunk:
                raise RuntimeError(f"proxy hung up: {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"CONNECT refused: {head!r}")
    with ctx.wrap_socket(raw, server_hostname=host) as tls:
        peer = tls.getpeercert() or {}
        tls.sendall(f"GET /v1/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    if b" 200 " not in data[:20]:
        raise RuntimeError(f"unexpected answer {data[:60]!r}")
    issuer = cast("tuple[tuple[tuple[str, str], ...], ...]", peer.get("issuer", ()))
    return ",".join(v for rdn in issuer for k, v in rdn if k == "commonName")


def _kept_tunnel(ctx: ssl.SSLContext, proxy: tuple[str, int], requests: int) -> list[float]:
    """Per-request times on one terminated tunnel kept alive (HTTP/1.1), its handshake not counted."""
    raw = socket.create_connection(proxy, timeout=30)
    raw.sendall(f"CONNECT {BOUND}:443 HTTP/1.1\r\n\r\n".encode())
    if not raw.recv(4096).startswith(b"HTTP/1.1 200"):
        raise RuntimeError("CONNECT refused")
    times = []
    with ctx.wrap_socket(raw, server_hostname=BOUND) as tls:
        for _ in range(requests):
            t = time.perf_counter()
            tls.sendall(f"GET /v1/x HTTP/1.1\r\nHost: {BOUND}\r\n\r\n".encode())
            data = b""
            while not data.endswith(b"\r\n\r\nok"):  # the upstream's whole answer: head, then "ok"
                chunk = tls.recv(65536)
                if not chunk:
                    raise RuntimeError(f"tunnel closed: {data[:60]!r}")
                data += chunk
            times.append(time.perf_counter() - t)
    return times


def _stats(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(xs) * 1000, 3),
            "p95_ms": round(sorted(xs)[min(len(xs) - 1, int(0.95 * len(xs)))] * 1000, 3)}


def bench_proxy_tls(requests: int) -> dict[str, Any]:
    upstream_ca, store_ca = tls_ca.generate("bench upstream CA"), tls_ca.generate()
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    srv = _Quiet((address, 443), Hello)
    srv.socket = _upstream_context(upstream_ca).wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    verify = ssl.create_default_context(cadata=upstream_ca.cert_pem.decode())
    egress = Egress(EgressConfig(credentials=_Secret(), resolver=_Table(address), verify=verify,
                                 allow_networks=(ipaddress.ip_network("127.0.0.0/8"),)))
    px = EgressProxy(egress, Audit(io.StringIO()), ca=store_ca)
    http = HttpCapability(allowlist=(Endpoint(BOUND), Endpoint(PLAIN)),
                          credentials=(Credential("k", "tok", CredentialLocation("bearer"), (BOUND,)),),
                          rate_limit=RateLimit(per_minute=10 * requests + 10, per_hour=10 * requests + 10))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    proxy = ("127.0.0.1", lsock.getsockname()[1])
    px.serve(lsock, ProxyClient(ToolIdentity("bench"), http))
    client = ssl.create_default_context(cadata=upstream_ca.cert_pem.decode() + store_ca.cert_pem.decode())
    times: dict[str, list[float]] = {"direct": [], "tunnelled": [], "terminated": []}
    try:
        for _ in range(requests):
            for name, host, to, via, issuer in (("direct", PLAIN, (address, 443), False, "bench upstream CA"),
                                                ("tunnelled", PLAIN, proxy, True, "bench upstream CA"),
                                                ("terminated", BOUND, proxy, True, "ClawFS store CA")):
                t = time.perf_counter()
                seen = _get(client, host, to, via)
                times[name].append(time.perf_counter() - t)
                if seen != issuer:
                    raise RuntimeError(f"{name}: certificate from {seen!r}, expected {issuer!r}")
        times["terminated_kept_tunnel"] = _kept_tunnel(client, proxy, requests)
    finally:
        px.close()
        lsock.close()
        srv.shutdown()
        srv.server_close()
    out: dict[str, Any] = {"requests": requests, **{k: _stats(v) for k, v in times.items()}}
    added = statistics.median(times["terminated"]) - statistics.median(times["tunnelled"])
    out["added_ms_p50"] = round(added * 1000, 3)
    out["note"] = ("added = terminated - tunnelled, p50, each a fresh connection and TLS handshake; "
                   "terminated_kept_tunnel: requests on one kept-alive tunnel (the proxy's upstream TLS still fresh "
                   "per request: Egress keeps no connection)")
    return out


def _upstream_context(ca: tls_ca.StoreCA) -> ssl.SSLContext:
    """The upstream's server context: the leaf for whichever name the client asks for (SNI)."""
    ctx = ca.server_context(PLAIN)  # this CA's cached context, changed in place: the bench's upstream CA only

    def by_name(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        if name:
            sock.context = ca.server_context(name)

    ctx.sni_callback = by_name
    return ctx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    result = bench_proxy_tls(args.requests)
    write_report(Path(args.out), "proxy_tls", {"machine": machine_info(), "proxy_tls": result})


if __name__ == "__main__":
    main()
