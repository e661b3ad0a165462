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
MAX_KDF_MEMORY = 4 * 1024**3
"""Bytes a slot's KDF may ask for (Argon2 memory, scrypt's 128 * n * r): 64 times the default.  A slot is read
before anything about it is authenticated, so every parameter is bounded: an edited one must not take the
machine's memory or hours of CPU."""
KDF_BOUNDS: dict[str, dict[str, tuple[int, int]]] = {
    "argon2id": {"iterations": (1, 64), "lanes": (1, 64), "memory_kib": (8, MAX_KDF_MEMORY // 1024)},
    "scrypt": {"n": (2, 2**22), "r": (1, 64), "p": (1, 16)},
    "hkdf-sha256": {},
}
SALT_BYTES = (8, 64)
MAX_SECRET_BYTES = 64 * 1024
"""The largest passphrase (and PIN) taken; a keyfile may hold up to MAX_KEYFILE_BYTES."""
MAX_KEYFILE_BYTES = 1024 * 1024


class DamagedSlot(UserError):
    """A key slot's parameters are unreadable or out of bounds: it was edited or damaged."""


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
    how_to_pass: str = "--passphrase-file, --keyfile or --recovery-key-file"
    """How the command at hand takes a key (`clawfs mount` takes `-o passphrase_file=F`...): for messages."""

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


def checked_params(params: object) -> tuple[str, bytes, dict[str, int]]:
    """(kdf, salt, integer parameters) of a slot, each within KDF_BOUNDS; DamagedSlot says what is wrong."""
    if not isinstance(params, dict):
        raise DamagedSlot("its parameters are not a JSON object")
    kdf = params.get("kdf")
    if kdf not in KDF_BOUNDS:
        if isinstance(kdf, str) and kdf:
            raise UserError(f"key slot uses unknown KDF {kdf!r}; this store needs a newer clawfs")
        raise DamagedSlot("it names no KDF")
    try:
        salt = base64.b64decode(str(params["salt"]), validate=True)
    except (KeyError, ValueError):
        raise DamagedSlot("its salt is missing or not base64") from None
    if not SALT_BYTES[0] <= len(salt) <= SALT_BYTES[1]:
        raise DamagedSlot(f"its salt has {len(salt)} bytes (allowed {SALT_BYTES[0]}..{SALT_BYTES[1]})")
    values: dict[str, int] = {}
    for name, (lo, hi) in KDF_BOUNDS[kdf].items():
        value = params.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DamagedSlot(f"its {kdf} parameter {name} is {value!r}, not an integer")
        if not lo <= value <= hi:
            raise DamagedSlot(f"its {kdf} parameter {name}={value} is outside {lo}..{hi}")
        values[name] = value
    if kdf == "argon2id" and values["memory_kib"] < 8 * values["lanes"]:
        raise DamagedSlot(f"its argon2id memory_kib={values['memory_kib']} is below 8 per lane")
    if kdf == "scrypt":
        n = values["n"]
        if n & (n - 1):
            raise DamagedSlot(f"its scrypt parameter n={n} is not a power of two")
        if 128 * n * values["r"] > MAX_KDF_MEMORY or values["p"] * values["r"] > 64:
            raise DamagedSlot(f"its scrypt parameters n={n}, r={values['r']}, p={values['p']} ask for too much "
                              "memory or work")
    return kdf, salt, values


def derive_kek(kind: str, params: dict[str, object], secret: bytes) -> bytes:
    kdf, salt, v = checked_params(params)
    if kdf == "argon2id":
        return Argon2id(salt=salt, length=32, iterations=v["iterations"], lanes=v["lanes"],
                        memory_cost=v["memory_kib"]).derive(secret)
    if kdf == "scrypt":
        return Scrypt(salt=salt, length=32, n=v["n"], r=v["r"], p=v["p"]).derive(secret)
    return crypto.hkdf(secret, salt=salt, label=f"{kind}-kek")


def make_slot(kind: str, secret: bytes, master_key: bytes, store_id: bytes,
              kdf: str = "argon2id") -> tuple[str, bytes]:
    """(params JSON, wrapped master key) for a new slot of `kind` opened by `secret`."""
    check_secret(kind, secret)
    params = new_slot_params(kind, kdf)
    kek = derive_kek(kind, params, secret)
    return json.dumps(params, sort_keys=True), crypto.wrap_key(kek, master_key, store_id, kind)


def open_slot(kind: str, params_json: str, wrapped: bytes, secret: bytes, store_id: bytes) -> bytes | None:
    """The master key, or None when the slot does not authenticate under `secret`; DamagedSlot when its
    parameters cannot be what mkfs wrote."""
    try:
        params = json.loads(params_json)
    except ValueError:
        raise DamagedSlot("its parameters are not valid JSON") from None
    kek = derive_kek(kind, params, secret)
    return crypto.unwrap_key(kek, wrapped, store_id, kind)


def check_secret(kind: str, secret: bytes) -> None:
    if kind == "passphrase" and len(secret) < 1:
        raise UserError("the passphrase is empty")
    if kind == "passphrase" and len(secret) > MAX_SECRET_BYTES:
        raise UserError(f"the passphrase is longer than {MAX_SECRET_BYTES // 1024} KiB")
    if kind == "keyfile" and len(secret) < 16:
        raise UserError("the keyfile holds fewer than 16 bytes; make one with `head -c 32 /dev/urandom > FILE`")
    if kind == "keyfile" and len(secret) > MAX_KEYFILE_BYTES:
        raise UserError(f"the keyfile is larger than {MAX_KEYFILE_BYTES // 1024} KiB")


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
        return WrongKey(f"{lead}: pass {creds.how_to_pass} "
                        f"(this store has {', '.join(sorted(kinds_present)) or 'no'} slots)")
    useless = [k for k in offered if k not in kinds_present]
    hint = f" (the store has no {', '.join(useless)} slot)" if useless else ""
    tried = [k for k in offered if k in kinds_present]
    # A slot that does not authenticate is a wrong secret or a damaged (edited) slot: nothing tells them apart.
    auth = (f"; every {' and '.join(tried)} slot failed authentication (a wrong key, or a damaged slot: then "
            "use another slot's key)") if tried else ""
    tail = f"; {tpm_note}" if tpm_note else ""
    return WrongKey(f"wrong {' or '.join(offered)}: no key slot opened{hint}{auth}{tail}")
