"""The encryption envelope: subkeys, content blocks, names, small values and key wrapping.

Every primitive comes from `cryptography` (AES-256-GCM, AES-256-SIV, HKDF-SHA256, HMAC-SHA256); nothing here is
hand-written cryptography, only the framing around it.

Subkeys
    subkey(label) = HKDF-SHA256(ikm=master_key, salt=store_id, info=b"clawfs/v1/" + label)
    labels: content (32 B), names (64 B, AES-SIV takes two keys), meta (32 B), xnames (64 B),
    header (32 B), index (32 B), tokens (32 B), inode-mac, entry-mac, block-set, root-set, root-mac (32 B
    each).  One label per use, so no key ever serves two purposes.

Content block (one per `block_size` bytes of plaintext; holes have no block at all)
    +-----------+--------------------------------------+
    | nonce(12) | AES-256-GCM ciphertext || tag(16)    |
    +-----------+--------------------------------------+
    AAD = b"CFSB" || store_id(16) || inode(u64 BE) || generation(u64 BE) || block_index(u64 BE)
    The AAD makes a block that is modified, swapped within a file, moved to another file, or replayed into a
    reused inode number fail authentication.  Nonces are random (96 bits): safe well past 2^32 blocks per key.

Directory entry name
    AES-256-SIV(name, AD = [b"CFSN", store_id, parent(u64 BE)])   deterministic: a lookup is one indexed query.

Symlink target and xattr value
    nonce(12) || AES-256-GCM(value) || tag, AAD = b"CFSL" || store_id || inode || generation       (symlink)
                                            AAD = b"CFSV" || store_id || inode || generation || xname (xattr)
    xattr names: AES-256-SIV(name, AD = [b"CFSX", store_id, inode(u64 BE)]).

Store setting (table `settings`: migration progress and the like)
    nonce(12) || AES-256-GCM_meta(JSON value) || tag, AAD = b"CFSS" || store_id || key (UTF-8)

Index (clawfs/index): vector = nonce || AES-256-GCM(float32 bytes), AAD = b"CFSE" || store_id || digest, key
    subkey("index"); digest = HMAC-SHA256(subkey("digest"), chunk text) (equal texts share a vector without the
    text being stored); HNSW snapshot = nonce || AES-256-GCM(image), AAD = b"CFSH" || store_id, key
    subkey("index"); blind tokens = HMAC(subkey("tokens"), word), see clawfs/index/tokens.py.

Metadata MACs (schema v5; what chains to what: clawfs/integrity.py and docs/ARCHITECTURE.md)
    inode row   HMAC(inode-mac, b"CFSI" || store_id || the row's columns, packed by clawfs/integrity.py)
    entry row   HMAC(entry-mac, b"CFSD" || store_id || parent || child inode || child generation || sealed name)
    block term  HMAC(block-set, b"CFST" || store_id || inode || generation || index || GCM tag), as an integer
    root term   HMAC(root-set, b"CFSR" || store_id || kind (b"I" or b"E") || row MAC), as an integer
    root        HMAC(root-mac, b"CFSM" || store_id || rollback counter value (u64) || sum of root terms (32 B))
    A "term" is a PRF output that is summed (mod 2^256) and never stored, so a sum cannot be rebuilt from the
    stored MACs without the key.

Key slot (the master key is stored only like this)
    wrapped = nonce(12) || AES-256-GCM_KEK(master_key) || tag, AAD = b"CFSK" || store_id || kind
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import IntegrityError

NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG
MASTER_KEY_BYTES = 32
STORE_ID_BYTES = 16

_U64 = struct.Struct(">Q")
_BLOCK_AAD = struct.Struct(">4s16sQQQ")
_INODE_AAD = struct.Struct(">4s16sQQ")


def hkdf(ikm: bytes, *, salt: bytes, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256 with a ClawFS label; used for subkeys and for key-slot KEKs."""
    return HKDF(hashes.SHA256(), length, salt, b"clawfs/v1/" + label.encode()).derive(ikm)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def gcm_seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def gcm_open(aead: AESGCM, blob: bytes, aad: bytes, what: str) -> bytes:
    if len(blob) < OVERHEAD:
        raise IntegrityError(f"{what}: ciphertext too short")
    try:
        return aead.decrypt(blob[:NONCE], blob[NONCE:], aad)
    except InvalidTag:
        raise IntegrityError(f"{what}: authentication failed") from None


def wrap_key(kek: bytes, master_key: bytes, store_id: bytes, kind: str) -> bytes:
    return gcm_seal(AESGCM(kek), master_key, b"CFSK" + store_id + kind.encode())


def unwrap_key(kek: bytes, wrapped: bytes, store_id: bytes, kind: str) -> bytes | None:
    """The master key, or None when this KEK does not open the slot (wrong passphrase or key)."""
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE], wrapped[NONCE:], b"CFSK" + store_id + kind.encode())
    except (InvalidTag, ValueError):
        return None


class PrefixedMac:
    """HMAC-SHA256 under one key of many messages that share a fixed prefix (hashed once, then copied): the blind
    full-text tokens of clawfs/index/tokens.py."""

    def __init__(self, key: bytes, prefix: bytes) -> None:
        self._base = hmac.new(key, prefix, "sha256")

    def digest(self, message: bytes) -> bytes:
        mac = self._base.copy()
        mac.update(message)
        return mac.digest()


IRONCLAW_SECRET_INFO = b"near-agent-secrets-v1"


def open_ironclaw_secret(master_key: str, key_salt: bytes, blob: bytes) -> bytes | None:
    """An IronClaw secret's plaintext (shared/IRONCLAW.md section 3; its src/secrets/crypto.rs), None when it
    does not authenticate under `master_key`.

        key  = HKDF-SHA256(salt = key_salt, ikm = the master key *string* as UTF-8, info = IRONCLAW_SECRET_INFO)
        blob = nonce(12) || AES-256-GCM ciphertext || tag(16), no AAD
    """
    if len(blob) < OVERHEAD:
        return None
    key = HKDF(hashes.SHA256(), 32, bytes(key_salt), IRONCLAW_SECRET_INFO).derive(master_key.encode("utf-8"))
    try:
        return AESGCM(key).decrypt(bytes(blob[:NONCE]), bytes(blob[NONCE:]), None)
    except InvalidTag:
        return None


@dataclass(repr=False)
class Envelope:
    """All the ciphers of one unlocked store. `repr` is suppressed so keys never reach a log or traceback."""

    store_id: bytes
    master_key: bytes
    _content: AESGCM = field(init=False)
    _names: AESSIV = field(init=False)
    _meta: AESGCM = field(init=False)
    _xnames: AESSIV = field(init=False)
    _header: bytes = field(init=False)
    _index: AESGCM = field(init=False)
    _digest: bytes = field(init=False)
    token_key: bytes = field(init=False)
    _inode_mac: bytes = field(init=False)
    _entry_mac: bytes = field(init=False)
    _block_set: bytes = field(init=False)
    _root_set: bytes = field(init=False)
    _root_mac: bytes = field(init=False)

    def __post_init__(self) -> None:
        def sub(label: str, n: int = 32) -> bytes:
            return hkdf(self.master_key, salt=self.store_id, label=label, length=n)

        self._content = AESGCM(sub("content"))
        self._names = AESSIV(sub("names", 64))
        self._meta = AESGCM(sub("meta"))
        self._xnames = AESSIV(sub("xnames", 64))
        self._header = sub("header")
        self._index = AESGCM(sub("index"))
        self._digest = sub("digest")
        self.token_key = sub("tokens")
        self._inode_mac = sub("inode-mac")
        self._entry_mac = sub("entry-mac")
        self._block_set = sub("block-set")
        self._root_set = sub("root-set")
        self._root_mac = sub("root-mac")

    def __repr__(self) -> str:
        return "Envelope(<keys hidden>)"

    # -- index ----------------------------------------------------------------------------------------------
    def digest(self, text: bytes) -> bytes:
        h = crypto_hmac.HMAC(self._digest, hashes.SHA256())
        h.update(text)
        return h.finalize()

    def seal_vector(self, digest: bytes, data: bytes) -> bytes:
        return gcm_seal(self._index, data, b"CFSE" + self.store_id + digest)

    def open_vector(self, digest: bytes, blob: bytes) -> bytes:
        return gcm_open(self._index, blob, b"CFSE" + self.store_id + digest, "index vector")

    def seal_snapshot(self, image: bytes) -> bytes:
        return gcm_seal(self._index, image, b"CFSH" + self.store_id)

    def open_snapshot(self, blob: bytes) -> bytes:
        return gcm_open(self._index, blob, b"CFSH" + self.store_id, "index snapshot")

    def seal_setting(self, key: str, value: bytes) -> bytes:
        return gcm_seal(self._meta, value, b"CFSS" + self.store_id + key.encode())

    def open_setting(self, key: str, blob: bytes) -> bytes:
        return gcm_open(self._meta, blob, b"CFSS" + self.store_id + key.encode(), f"setting {key!r}")

    def subkey(self, label: str, length: int = 32) -> bytes:
        """A key for a later layer (index vectors, blind tokens); each caller passes its own label."""
        return hkdf(self.master_key, salt=self.store_id, label=label, length=length)

    # -- content blocks -------------------------------------------------------------------------------------
    def _block_aad(self, ino: int, gen: int, idx: int) -> bytes:
        return _BLOCK_AAD.pack(b"CFSB", self.store_id, ino, gen, idx)

    def seal_block(self, ino: int, gen: int, idx: int, plaintext: bytes) -> bytes:
        return gcm_seal(self._content, plaintext, self._block_aad(ino, gen, idx))

    def open_block(self, ino: int, gen: int, idx: int, blob: bytes) -> bytes:
        return gcm_open(self._content, blob, self._block_aad(ino, gen, idx), f"inode {ino} block {idx}")

    # -- names ----------------------------------------------------------------------------------------------
    def seal_name(self, parent: int, name: bytes) -> bytes:
        return self._names.encrypt(name, [b"CFSN", self.store_id, _U64.pack(parent)])

    def open_name(self, parent: int, blob: bytes) -> bytes:
        try:
            return self._names.decrypt(blob, [b"CFSN", self.store_id, _U64.pack(parent)])
        except (InvalidTag, ValueError):
            raise IntegrityError(f"directory {parent}: an entry name failed authentication") from None

    # -- symlink targets and xattrs ------------------------------------------------------------------------
    def seal_target(self, ino: int, gen: int, target: bytes) -> bytes:
        return gcm_seal(self._meta, target, _INODE_AAD.pack(b"CFSL", self.store_id, ino, gen))

    def open_target(self, ino: int, gen: int, blob: bytes) -> bytes:
        aad = _INODE_AAD.pack(b"CFSL", self.store_id, ino, gen)
        return gcm_open(self._meta, blob, aad, f"inode {ino} symlink target")

    def seal_xattr_name(self, ino: int, name: bytes) -> bytes:
        return self._xnames.encrypt(name, [b"CFSX", self.store_id, _U64.pack(ino)])

    def open_xattr_name(self, ino: int, blob: bytes) -> bytes:
        try:
            return self._xnames.decrypt(blob, [b"CFSX", self.store_id, _U64.pack(ino)])
        except (InvalidTag, ValueError):
            raise IntegrityError(f"inode {ino}: an xattr name failed authentication") from None

    def seal_xattr_value(self, ino: int, gen: int, xname: bytes, value: bytes) -> bytes:
        return gcm_seal(self._meta, value, _INODE_AAD.pack(b"CFSV", self.store_id, ino, gen) + xname)

    def open_xattr_value(self, ino: int, gen: int, xname: bytes, blob: bytes) -> bytes:
        aad = _INODE_AAD.pack(b"CFSV", self.store_id, ino, gen) + xname
        return gcm_open(self._meta, blob, aad, f"inode {ino} xattr value")

    # -- metadata MACs (schema v5) ------------------------------------------------------------------------
    def _hmac(self, key: bytes, data: bytes) -> bytes:
        h = crypto_hmac.HMAC(key, hashes.SHA256())
        h.update(data)
        return h.finalize()

    def inode_mac(self, packed: bytes) -> bytes:
        return self._hmac(self._inode_mac, b"CFSI" + self.store_id + packed)

    def entry_mac(self, parent: int, name_blob: bytes, ino: int, gen: int) -> bytes:
        return self._hmac(self._entry_mac, _INODE_AAD.pack(b"CFSD", self.store_id, parent, ino)
                          + _U64.pack(gen) + name_blob)

    def block_term(self, ino: int, gen: int, idx: int, tag: bytes) -> int:
        return int.from_bytes(self._hmac(self._block_set, _BLOCK_AAD.pack(b"CFST", self.store_id, ino, gen, idx)
                                         + tag), "big")

    def root_term(self, kind: bytes, mac: bytes) -> int:
        return int.from_bytes(self._hmac(self._root_set, b"CFSR" + self.store_id + kind + mac), "big")

    def root_mac(self, counter: int, total: bytes) -> bytes:
        return self._hmac(self._root_mac, b"CFSM" + self.store_id + _U64.pack(counter) + total)

    # -- header ---------------------------------------------------------------------------------------------
    def header_mac(self, fields: bytes) -> bytes:
        h = crypto_hmac.HMAC(self._header, hashes.SHA256())
        h.update(fields)
        return h.finalize()

    def check_header_mac(self, fields: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.header_mac(fields), mac)
