"""The per-store CA with which the egress proxy terminates TLS for hosts that get an injected credential.

Owns certificates only (the `cryptography` package's x509 builder; no hand-written crypto): the CA, its
serialised form, and the short-lived leaf certificates the proxy presents to the jail, as ready SSL contexts.

- `generate()` makes a CA: EC P-256 key (every TLS stack in the jail accepts ECDSA; Ed25519 certificates are
  not accepted by all of them), basicConstraints CA with pathLen 0 (it signs leaves, never another CA), key
  usage keyCertSign/cRLSign only, valid `CA_DAYS`.
- `to_bytes(ca)` / `from_bytes(data)`: the CA certificate and its PKCS#8 private key as PEM, unencrypted: the
  mount daemon keeps them inside the store, whose envelope encrypts them; they never go to the jail.
- `ca.cert_pem`: what the jail trusts (sandbox/jail.py appends it to the system bundle it hands the jail).
- `ca.server_context(host)`: an SSLContext (server side) presenting a leaf for `host`, signed by the CA, valid
  `LEAF_HOURS` from a few minutes ago; cached per host and made afresh when less than a quarter of its life
  is left. Each leaf has its own key.

No name constraints: the hosts that carry a credential change whenever a tool is installed, so a constraint
would pin the CA to one day's tools; the CA's reach is already the jail alone (no other trust store holds it).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import threading
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_HOURS = 24
BACKDATE = datetime.timedelta(minutes=5)  # tolerate a jail clock a little behind the daemon's
MAX_CACHED = 256


class CAError(ValueError):
    """Serialised CA data that cannot be used, or a host no certificate can be made for."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or not host.isascii() or any(c in host for c in "/\\ \0*") or len(host) > 253:
        raise CAError(f"no certificate for host {host!r}: not an ASCII DNS name (IDNA A-label) or address")
    return x509.DNSName(host.lower().rstrip("."))


@dataclass
class StoreCA:
    """A CA certificate and its key; thread-safe (the proxy serves each connection in a thread)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    _cache: dict[str, tuple[ssl.SSLContext, datetime.datetime]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, host: str, hours: int = LEAF_HOURS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A new leaf certificate (and its key) for `host`, signed by this CA."""
        san = _san(host)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cn = host if isinstance(san, x509.DNSName) and len(host) <= 64 else "clawfs-proxy-leaf"
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + datetime.timedelta(hours=hours))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=False, crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert, key

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for `host` (cached while it has over a quarter of its life)."""
        host = host.lower().rstrip(".")
        with self._lock:
            cached = self._cache.get(host)
            if cached and cached[1] - _now() > datetime.timedelta(hours=LEAF_HOURS / 4):
                return cached[0]
        cert, key = self.issue(host)
        ctx = _context(cert, key, self.cert)
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            self._cache[host] = (ctx, cert.not_valid_after_utc)
        return ctx


def _context(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> ssl.SSLContext:
    """ssl loads a chain only from a path: a memfd gives it one that never touches a disk, and is gone when
    closed."""
    pem = (cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
           + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])  # the proxy reads HTTP/1.1 from the stream; a client offering h2 falls back
    fd = os.memfd_create("clawfs-leaf", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


def generate(name: str = "ClawFS store CA", days: int = CA_DAYS) -> StoreCA:
    """A new CA (held in memory only until the caller stores `to_bytes` of it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ClawFS"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return StoreCA(cert, key)


def to_bytes(ca: StoreCA) -> bytes:
    """The CA certificate and key as PEM (the key unencrypted: the store's envelope is its protection)."""
    return ca.cert_pem + ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())


def from_bytes(data: bytes) -> StoreCA:
    """The CA `to_bytes` wrote; CAError if it is not one (no certificate, no EC key, or a key that does not
    match the certificate)."""
    try:
        cert = x509.load_pem_x509_certificate(data)
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as e:
        raise CAError(f"not a serialised store CA: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError("not a serialised store CA: the key is not an EC key")
    if cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CAError("not a serialised store CA: the key does not match the certificate")
    return StoreCA(cert, key)
