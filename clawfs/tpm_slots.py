"""TPM key slots and rollback protection: ClawFS policy on top of the `kernel.tpm` sealer.

A `tpm2` slot holds a random 32-byte KEK sealed by the TPM (under an ECC P-256 owner storage key, bound by
default to PCR 7 and optionally to a PIN) and the master key wrapped under that KEK exactly as any other slot
(`clawfs.crypto.wrap_key`).  Slot params (JSON): {"kdf": "tpm2", "sealed": <kernel.tpm.seal() dict>}.

Rollback protection keeps a TPM NV monotonic counter per store.  The store records (index, value) with an HMAC
under the header key, so the record cannot be edited; at each read-write mount the recorded value must not be
behind the TPM's, then the new value is recorded durably *before* the TPM counter is advanced: a crash in between
leaves the store ahead (accepted), never behind.  One NV write per mount, never per file write (NV wear).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

from kernel import tpm

from . import crypto
from .errors import UserError

log = logging.getLogger("clawfs.tpm")
KIND = "tpm2"
DEFAULT_PCRS = [7]
_ROLLBACK = struct.Struct(">8sQQ")


@dataclass(repr=False)
class TpmSpec:
    """How to seal a new tpm2 slot (and whether to arm rollback protection with it)."""

    pcrs: list[int]
    pin: bytes | None
    tcti: str
    rollback: bool = False


def parse_pcrs(text: str) -> list[int]:
    """`7`, `0,2,7` or `none`."""
    if text.strip().lower() == "none":
        return []
    try:
        pcrs = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise UserError(f"cannot read PCR list {text!r}: use numbers like 0,2,7 or `none`") from None
    if any(not 0 <= p <= 23 for p in pcrs):
        raise UserError("PCR numbers go from 0 to 23")
    return pcrs


def make_slot(master: bytes, store_id: bytes, *, pcrs: list[int], pin: bytes | None,
              tcti: str) -> tuple[str, bytes]:
    """(params JSON, wrapped master key) for a new tpm2 slot.  Raises tpm.TpmError with the reason."""
    kek = crypto.random_bytes(32)
    sealed = tpm.seal(kek, pcrs=pcrs, pin=pin, tcti=tcti)
    return json.dumps({"kdf": KIND, "sealed": sealed}, sort_keys=True), crypto.wrap_key(kek, master, store_id, KIND)


def open_slot(params_json: str, wrapped: bytes, store_id: bytes, *, pin: bytes | None, tcti: str) -> bytes | None:
    kek = tpm.unseal(json.loads(params_json)["sealed"], pin=pin, tcti=tcti)
    return crypto.unwrap_key(kek, wrapped, store_id, KIND)


def needs_pin(params_json: str) -> bool:
    return bool(json.loads(params_json)["sealed"].get("pin"))


def describe(params_json: str) -> dict[str, Any]:
    sealed = json.loads(params_json)["sealed"]
    return {"pcrs": sealed.get("pcrs", []), "pin": bool(sealed.get("pin"))}


# -- rollback protection ------------------------------------------------------------------------------------
def _record_mac(env: crypto.Envelope, index: int, value: int) -> bytes:
    return env.header_mac(_ROLLBACK.pack(b"rollback", index, value))


def rollback_record(meta: dict[str, Any], env: crypto.Envelope) -> tuple[int, int] | None:
    """The store's authenticated (NV index, counter value), or None when protection is off."""
    if meta.get("rollback_index") is None:
        return None
    index, value = int(meta["rollback_index"]), int(meta["rollback_counter"])
    if not env.check_header_mac(_ROLLBACK.pack(b"rollback", index, value), bytes(meta.get("rollback_mac") or b"")):
        raise UserError("the store's rollback counter record fails authentication (edited?); "
                        "restore the store from a backup")
    return index, value


def new_record(env: crypto.Envelope, index: int, value: int) -> dict[str, Any]:
    return {"rollback_index": index, "rollback_counter": value, "rollback_mac": _record_mac(env, index, value)}


def enable(env: crypto.Envelope, tcti: str) -> dict[str, Any]:
    """Define (or adopt) this store's NV counter; the meta rows to record."""
    index = tpm.counter_index_for(env.store_id)
    value = tpm.counter_define(index, tcti)
    return new_record(env, index, value)


def check(record: tuple[int, int], tcti: str, *, accept_rollback: bool) -> int:
    """Refuse a store whose recorded counter is behind the TPM's; returns the TPM's current value."""
    index, recorded = record
    current = tpm.counter_read(index, tcti)
    if current is None:
        raise UserError(f"the TPM has no rollback counter {index:#x} for this store (another machine, or a "
                        "cleared TPM); mount with -o accept_rollback to re-arm it here")
    if recorded < current and not accept_rollback:
        raise UserError(f"rollback detected: this store copy recorded counter {recorded} but the TPM is at "
                        f"{current}, so a newer copy existed; mount with -o accept_rollback only if you meant "
                        "to restore this older copy")
    if recorded < current:
        log.warning("accepting a rolled-back store (counter %d < TPM %d) as asked", recorded, current)
    return current


def advance(index: int, tcti: str) -> int:
    return tpm.counter_increment(index, tcti)
