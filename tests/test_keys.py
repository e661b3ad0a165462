"""Unit tests of key slots: every kind opens with its secret and only with it."""

from __future__ import annotations

import json

import pytest

from clawfs import keys
from clawfs.errors import UserError

SID, MASTER = b"s" * 16, b"M" * 32


@pytest.mark.parametrize("kind,secret,kdf", [
    ("passphrase", b"hunter2", "argon2id"),
    ("passphrase", b"hunter2", "scrypt"),
    ("keyfile", b"0123456789abcdef0123", "argon2id"),
    ("recovery", b"r" * 32, "argon2id"),
])
def test_slot_opens_only_with_its_secret(kind: str, secret: bytes, kdf: str) -> None:
    params, wrapped = keys.make_slot(kind, secret, MASTER, SID, kdf)
    assert MASTER not in wrapped
    assert keys.open_slot(kind, params, wrapped, secret, SID) == MASTER
    assert keys.open_slot(kind, params, wrapped, secret + b"x", SID) is None
    assert keys.open_slot(kind, params, wrapped, secret, b"t" * 16) is None


def test_passphrase_params_are_stored() -> None:
    params = json.loads(keys.make_slot("passphrase", b"pw", MASTER, SID)[0])
    assert params["kdf"] == "argon2id" and params["memory_kib"] >= 65536 and len(params["salt"]) > 16


def test_recovery_key_text_round_trip() -> None:
    raw, text = keys.new_recovery_key()
    assert len(text.split("-")) == 8
    assert keys.parse_recovery_key(text) == raw
    assert keys.parse_recovery_key(" " + text.upper().replace("-", " ") + "\n") == raw


def test_malformed_recovery_key() -> None:
    with pytest.raises(UserError, match="64 hex digits"):
        keys.parse_recovery_key("not-a-key")


def test_short_keyfile_refused() -> None:
    with pytest.raises(UserError, match="fewer than 16 bytes"):
        keys.make_slot("keyfile", b"short", MASTER, SID)


def test_credentials_repr_hides_secrets() -> None:
    c = keys.Credentials(passphrases=[b"topsecret"])
    assert "topsecret" not in repr(c)


def test_wrong_key_message_names_the_kind() -> None:
    err = keys.no_slot_opened(keys.Credentials(keyfiles=[b"x" * 16]), {"passphrase"})
    assert "wrong keyfile" in str(err) and "no keyfile slot" in str(err)
