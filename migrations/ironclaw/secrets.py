"""IronClaw's secret encryption, undone (shared/IRONCLAW.md section 3; src/secrets/crypto.rs).

    key  = HKDF-SHA256(salt = the row's key_salt (32 random bytes),
                       ikm  = the master key *string* as UTF-8 (64 hex characters, not hex-decoded),
                       info = b"near-agent-secrets-v1", length 32)
    blob = nonce(12) || AES-256-GCM ciphertext || tag(16), no AAD (legacy rows)

The decryption itself is `clawfs.crypto.open_ironclaw_secret`.  The plaintext is handed straight to the
ClawFS writer (a write-only secret file); it is never logged or put in the report.
"""

from __future__ import annotations

from clawfs import crypto


class WrongMasterKey(Exception):
    """A secret did not authenticate under the given master key."""


def read_master_key(path: str) -> str:
    """The master key from a file: the bare key, or IronClaw's `.env` line `SECRETS_MASTER_KEY=...`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() in ("SECRETS_MASTER_KEY", "export SECRETS_MASTER_KEY"):
            return value.strip().strip("'\"")
    key = text.strip()
    if not key or "\n" in key:
        raise ValueError(f"{path} holds no master key (expected the key alone, or a SECRETS_MASTER_KEY= line)")
    return key


def decrypt(master_key: str, key_salt: bytes, blob: bytes) -> bytes:
    if len(blob) < crypto.OVERHEAD:
        raise WrongMasterKey("encrypted value too short")
    plain = crypto.open_ironclaw_secret(master_key, key_salt, blob)
    if plain is None:
        raise WrongMasterKey("does not authenticate")
    return plain
