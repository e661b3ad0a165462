"""Key slots: the only places the master key is kept, each wrapped under its own key-encryption key (KEK).

Slot kinds and how their KEK is derived (parameters are stored in the slot, so they can be raised later):
  passphrase  Argon2id (RFC 9106 second recommendation: t=3, p=4, m=64 MiB, 16-byte salt) or scrypt
  keyfile     HKDF-SHA256(file contents, salt, "keyfile-kek"); the file may be any bytes, >= 16 of them
  recovery    HKDF-SHA256(32 random bytes shown once as 8 groups of hex, salt, "recovery-kek")
The KEK wraps the master key with AES-256-GCM (clawfs.crypto.wrap_key).  Adding or removing a slot never
re-encrypts data.  Secrets are never part of an exception message or a log line.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import crypto
from .errors import UserError, WrongKey

KINDS = ("passphrase", "keyfile", "recovery")
ARGON2_DEFAULT = {"iterations": 3, "lanes": 4, "memory_kib": 65536}
SCRYPT_DEFAULT = {"n": 2**17, "r": 8, "p": 1}


@dataclass(repr=False)
class Credentials:
    """Secrets offered to unlock a store; any one matching slot opens it.  TPM slots are tried first (unless
    `tpm` is False); `ask_passphrase` / `ask_pin` are asked only when nothing else has opened the store."""

    passphrases: list[bytes] = field(default_factory=list)
    keyfiles: list[bytes] = field(default_factory=list)
    recovery_keys: list[bytes] = field(default_factory=list)
    tpm: bool = True
    tpm_tcti: str | None = None
    tpm_pin: bytes | None = None
    ask_passphrase: Callable[[], bytes] | None = None
    ask_pin: Callable[[], bytes] | None = None

    def __repr__(self) -> str:
        return (
            f"Credentials(passphrases={len(self.passphrases)}, keyfiles={len(self.keyfiles)},"
            f" recovery_keys={len(self.recovery_keys)})"
        )

    def offered(self) -> list[tuple[str, bytes]]:
        return (
            [("passphrase", p) for p in self.passphrases]
            + [("keyfile", k) for k in self.keyfiles]
            + [("recovery", r) for r in self.recovery_keys]
        )

    def empty(self) -> bool:
        return not self.offered()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def new_slot_params(kind: str, kdf: str = "argon2id") -> dict[str, object]:
    salt = _b64(crypto.random_bytes(16))
    if kind == "passphrase":
        if kdf == "argon2id":
            return {"kdf": "argon2id", "salt": salt, **ARGON2_DEFAULT}
        if kdf == "scrypt":
            return {"kdf": "scrypt", "salt": salt, **SCRYPT_DEFAULT}
        raise UserError(f"unknown KDF {kdf!r}: use argon2id or scrypt")
    if kind in ("keyfile", "recovery"):
        return {"kdf": "hkdf-sha256", "salt": salt}
    raise UserError(f"unknown key slot kind {kind!r}: use one of {', '.join(KINDS)}")


def derive_kek(kind: str, params: dict[str, object], secret: bytes) -> bytes:
    salt = base64.b64decode(str(params["salt"]))
    kdf = params["kdf"]
    if kdf == "argon2id":
        return Argon2id(
            salt=salt, length=32, iterations=int(str(params["iterations"])), lanes=int(str(params["lanes"])),
            memory_cost=int(str(params["memory_kib"])),
        ).derive(secret)
    if kdf == "scrypt":
        return Scrypt(salt=salt, length=32, n=int(str(params["n"])), r=int(str(params["r"])),
                      p=int(str(params["p"]))).derive(secret)
    if kdf == "hkdf-sha256":
        return crypto.hkdf(secret, salt=salt, label=f"{kind}-kek")
    raise UserError(f"key slot uses unknown KDF {kdf!r}; this store needs a newer clawfs")


def make_slot(kind: str, secret: bytes, master_key: bytes, store_id: bytes,
              kdf: str = "argon2id") -> tuple[str, bytes]:
    """(params JSON, wrapped master key) for a new slot of `kind` opened by `secret`."""
    check_secret(kind, secret)
    params = new_slot_params(kind, kdf)
    kek = derive_kek(kind, params, secret)
    return json.dumps(params, sort_keys=True), crypto.wrap_key(kek, master_key, store_id, kind)


def open_slot(kind: str, params_json: str, wrapped: bytes, secret: bytes, store_id: bytes) -> bytes | None:
    kek = derive_kek(kind, json.loads(params_json), secret)
    return crypto.unwrap_key(kek, wrapped, store_id, kind)


def check_secret(kind: str, secret: bytes) -> None:
    if kind == "passphrase" and len(secret) < 1:
        raise UserError("the passphrase is empty")
    if kind == "keyfile" and len(secret) < 16:
        raise UserError("the keyfile holds fewer than 16 bytes; make one with `head -c 32 /dev/urandom > FILE`")


# -- recovery keys ----------------------------------------------------------------------------------------------
def new_recovery_key() -> tuple[bytes, str]:
    """(secret bytes, the text shown to the user: 8 dash-separated groups of 8 hex digits)."""
    raw = crypto.random_bytes(32)
    text = raw.hex()
    return raw, "-".join(text[i:i + 8] for i in range(0, 64, 8))


def parse_recovery_key(text: str) -> bytes:
    digits = re.sub(r"[\s-]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise UserError("the recovery key is malformed: expected 64 hex digits (dashes and spaces allowed)")
    return bytes.fromhex(digits)


def no_slot_opened(creds: Credentials, kinds_present: set[str], tpm_failures: list[str] | None = None) -> WrongKey:
    offered = sorted({k for k, _ in creds.offered()})
    tpm_note = "; ".join(tpm_failures or [])
    if not offered:
        lead = f"{tpm_note}; and no other key was given" if tpm_note else "no key given"
        return WrongKey(f"{lead}: pass --passphrase-file, --keyfile or --recovery-key-file "
                        f"(this store has {', '.join(sorted(kinds_present)) or 'no'} slots)")
    useless = [k for k in offered if k not in kinds_present]
    hint = f" (the store has no {', '.join(useless)} slot)" if useless else ""
    tail = f"; {tpm_note}" if tpm_note else ""
    return WrongKey(f"wrong {' or '.join(offered)}: no key slot opened{hint}{tail}")
