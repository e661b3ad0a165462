"""Unit tests of the envelope: every ciphertext is bound to where it belongs."""

from __future__ import annotations

import pytest

from clawfs import crypto
from clawfs.errors import IntegrityError

SID = bytes(range(16))


@pytest.fixture
def env() -> crypto.Envelope:
    return crypto.Envelope(SID, b"k" * 32)


def test_block_round_trip_and_overhead(env: crypto.Envelope) -> None:
    blob = env.seal_block(7, 99, 3, b"secret data")
    assert len(blob) == len(b"secret data") + crypto.OVERHEAD
    assert b"secret" not in blob
    assert env.open_block(7, 99, 3, blob) == b"secret data"


@pytest.mark.parametrize("ino,gen,idx", [(8, 99, 3), (7, 98, 3), (7, 99, 4)])
def test_block_bound_to_inode_generation_and_index(env: crypto.Envelope, ino: int, gen: int, idx: int) -> None:
    blob = env.seal_block(7, 99, 3, b"x" * 100)
    with pytest.raises(IntegrityError, match=f"inode {ino} block {idx}"):
        env.open_block(ino, gen, idx, blob)


def test_block_bound_to_store(env: crypto.Envelope) -> None:
    other = crypto.Envelope(bytes(16), b"k" * 32)
    with pytest.raises(IntegrityError):
        other.open_block(1, 1, 0, env.seal_block(1, 1, 0, b"abc"))


def test_flipped_bit_fails(env: crypto.Envelope) -> None:
    blob = bytearray(env.seal_block(1, 1, 0, b"abc" * 10))
    blob[20] ^= 1
    with pytest.raises(IntegrityError):
        env.open_block(1, 1, 0, bytes(blob))


def test_nonces_are_fresh(env: crypto.Envelope) -> None:
    assert env.seal_block(1, 1, 0, b"same") != env.seal_block(1, 1, 0, b"same")


def test_names_deterministic_and_bound_to_parent(env: crypto.Envelope) -> None:
    a = env.seal_name(1, b"notes.md")
    assert a == env.seal_name(1, b"notes.md")
    assert a != env.seal_name(2, b"notes.md")
    assert env.open_name(1, a) == b"notes.md"
    with pytest.raises(IntegrityError, match="directory 2"):
        env.open_name(2, a)


def test_xattr_value_bound_to_its_name(env: crypto.Envelope) -> None:
    n1, n2 = env.seal_xattr_name(5, b"user.a"), env.seal_xattr_name(5, b"user.b")
    v = env.seal_xattr_value(5, 1, n1, b"value")
    assert env.open_xattr_value(5, 1, n1, v) == b"value"
    with pytest.raises(IntegrityError):
        env.open_xattr_value(5, 1, n2, v)
    assert env.open_xattr_name(5, n1) == b"user.a"


def test_symlink_target(env: crypto.Envelope) -> None:
    blob = env.seal_target(3, 4, b"../target")
    assert env.open_target(3, 4, blob) == b"../target"
    with pytest.raises(IntegrityError):
        env.open_target(3, 5, blob)


def test_key_wrap(env: crypto.Envelope) -> None:
    kek = b"e" * 32
    wrapped = crypto.wrap_key(kek, b"m" * 32, SID, "passphrase")
    assert crypto.unwrap_key(kek, wrapped, SID, "passphrase") == b"m" * 32
    assert crypto.unwrap_key(b"f" * 32, wrapped, SID, "passphrase") is None
    assert crypto.unwrap_key(kek, wrapped, SID, "keyfile") is None


def test_subkeys_differ_per_label(env: crypto.Envelope) -> None:
    assert env.subkey("index") != env.subkey("tokens")
    assert len({env.subkey("index"), env.master_key}) == 2


def test_repr_hides_keys(env: crypto.Envelope) -> None:
    assert "k" * 8 not in repr(env)
    assert "hidden" in repr(env)
