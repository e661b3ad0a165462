"""Metadata integrity (schema v5): the MACs of inode and entry rows, the per-file block sums and the store root.

What is MACed, under which key, and what chains to what is drawn in docs/ARCHITECTURE.md ("Metadata integrity")
and the keyed primitives are in clawfs/crypto.py; this module owns the framing: how a row is packed for its MAC,
how a file's block set and the store's rows are summed, and the store root's upkeep.  `Store` (clawfs/store.py)
calls it on every read and change; fsck calls it to name what fails.

Sums are of PRF outputs (HMAC under a key of their own) modulo 2^256.  The terms are never stored, so the stored
MACs, which anyone can read, do not let an attacker rebuild a sum for rows that were never together: a mix of
rows from two copies of a store adds up to its sum only by a 2^-256 chance.
"""

from __future__ import annotations

import hmac
import logging
import struct
from collections.abc import Iterable

from . import crypto
from .db import Database, InodeRow
from .errors import IntegrityError

log = logging.getLogger("clawfs.integrity")

MOD = 1 << 256
ZERO = bytes(32)
INODE, ENTRY = b"I", b"E"
_ROW = struct.Struct(">QQQQQQQQqqqQQQ")
_BAD_VALUES = (struct.error, TypeError, OverflowError, ValueError)  # an edited column of the wrong type or range


def to_bytes(n: int) -> bytes:
    return (n % MOD).to_bytes(32, "big")


def from_bytes(b: bytes | None) -> int:
    return int.from_bytes(b, "big") if b and len(b) == 32 else -1


def inode_mac(env: crypto.Envelope, row: InodeRow) -> bytes:
    """The MAC of every column of `row` (its `mac` aside); b"" when a column holds what no store writes."""
    try:
        target = b"" if row.target is None else bytes(row.target)
        packed = _ROW.pack(row.id, row.generation, row.mode, row.uid, row.gid, row.nlink, row.size, row.rdev,
                           row.atime_ns, row.mtime_ns, row.ctime_ns, row.nblocks, row.parent or 0, row.flags)
        extra = struct.pack(">?I", row.target is not None, len(target)) + target + bytes(row.bsum)
    except _BAD_VALUES:
        return b""
    return env.inode_mac(packed + extra)


def inode_authentic(env: crypto.Envelope, row: InodeRow) -> bool:
    want = inode_mac(env, row)
    return bool(want) and hmac.compare_digest(want, bytes(row.mac or b""))


def check_inode(env: crypto.Envelope, row: InodeRow) -> InodeRow:
    if not inode_authentic(env, row):
        raise IntegrityError(f"inode {row.id}: its metadata fails authentication (modified, or its row replaced)")
    return row


def entry_mac(env: crypto.Envelope, parent: int, name_blob: bytes, ino: int, gen: int | None) -> bytes:
    try:
        return env.entry_mac(parent, bytes(name_blob), ino, gen or 0)
    except _BAD_VALUES:
        return b""


def entry_authentic(env: crypto.Envelope, parent: int, name_blob: bytes, ino: int, gen: int | None,
                    mac: bytes | None) -> bool:
    if gen is None:  # the child is missing
        return False
    want = entry_mac(env, parent, name_blob, ino, gen)
    return bool(want) and hmac.compare_digest(want, bytes(mac or b""))


def block_sum(env: crypto.Envelope, ino: int, gen: int, tags: Iterable[tuple[int, bytes]]) -> int:
    total = 0
    for idx, tag in tags:
        total += env.block_term(ino, gen, idx, tag)
    return total % MOD


class Root:
    """The store root: R = the sum of the terms of every inode and entry MAC, kept in `meta.root` as R || MAC,
    the MAC over the rollback counter value the store records (0 without rollback protection).

    Inside a unit of work (`depth` > 0, kept by `Store.transaction`) changes are only listed (`pending`: sign,
    kind, MAC); `flush` adds them into R just before the transaction commits (`Database.before_commit`), so a
    mount's group commit writes R once per batch, and a row rewritten N times in a batch costs two terms, not 2N
    (the MACs in between come and go).  A unit that fails cuts the list back to where it began."""

    TERM_CACHE = 8192

    def __init__(self, db: Database, env: crypto.Envelope) -> None:
        self._db = db
        self._env = env
        self._last: tuple[bytes, int] | None = None  # the value this connection wrote last: known authentic
        self._terms: dict[tuple[bytes, bytes], int] = {}  # (kind, MAC) -> term, for MACs this store wrote
        self.depth = 0
        self.pending: list[tuple[int, bytes, bytes]] = []

    def term(self, kind: bytes, mac: bytes) -> int:
        key = (kind, mac)
        found = self._terms.get(key)
        if found is None:
            found = self._env.root_term(kind, mac)
            if len(self._terms) >= self.TERM_CACHE:
                self._terms.clear()
            self._terms[key] = found
        return found

    def _counter(self) -> int:
        value = self._db.meta_get("rollback_counter")
        return 0 if value is None else int(value)

    def _seal(self, total: int, counter: int) -> None:
        raw = to_bytes(total)
        blob = raw + self._env.root_mac(counter, raw)
        self._db.meta_set("root", blob)
        self._last = (blob, counter)

    def stored(self) -> int | None:
        """The stored R if its MAC holds for the recorded counter value, else None."""
        blob, counter = self._db.meta_pair("root", "rollback_counter")
        counter = 0 if counter is None else int(counter)
        if blob is None:
            return None
        blob = bytes(blob)
        if self._last != (blob, counter) and (
                len(blob) != 64 or not hmac.compare_digest(self._env.root_mac(counter, blob[:32]), blob[32:])):
            return None
        return int.from_bytes(blob[:32], "big")

    def change(self, add: Iterable[tuple[bytes, bytes | None]] = (),
               remove: Iterable[tuple[bytes, bytes | None]] = ()) -> None:
        """Rows came and went (kind, MAC): R follows, in the caller's unit of work."""
        changes = [(1, kind, mac) for kind, mac in add if mac] + [(-1, kind, mac) for kind, mac in remove if mac]
        self.pending.extend(changes)
        if not self.depth:
            self.flush()

    def flush(self) -> None:
        """Write the pending changes into R (before a commit).  An R that fails its MAC is never built upon (that
        would bless a forged sum): the rows commit without it and the next mount refuses the store."""
        net: dict[tuple[bytes, bytes], int] = {}
        for sign, kind, mac in self.pending:
            net[kind, mac] = net.get((kind, mac), 0) + sign
        self.pending.clear()
        delta = sum(n * self.term(kind, mac) for (kind, mac), n in net.items() if n)
        if delta % MOD:
            try:
                self._apply(delta)
            except IntegrityError as e:
                log.error("integrity: %s", e)

    def _apply(self, delta: int) -> None:
        total = self.stored()
        if total is None:
            raise IntegrityError("the store root fails authentication (the meta table was edited); the next "
                                 "mount will refuse the store: run `clawfs fsck`")
        self._seal(total + delta, self._counter())

    def compute(self) -> int:
        """R from the MAC columns of every row: one PRF per inode and entry (a mount's and fsck's check)."""
        total = 0
        for mac in self._db.inode_macs():
            if mac:
                total += self._env.root_term(INODE, bytes(mac))
        for mac in self._db.dentry_macs():
            if mac:
                total += self._env.root_term(ENTRY, bytes(mac))
        return total % MOD

    def authentic(self) -> bool:
        """Do the rows add up to the stored R, and does R's MAC hold for the recorded counter value?"""
        stored = self.stored()
        return stored is not None and stored == self.compute()

    def reseal(self, total: int | None = None) -> None:
        """Seal R again (the recorded counter value changed): from the rows, unless the caller just computed it."""
        self.pending.clear()
        self._seal(self.compute() if total is None else total, self._counter())


def upgrade(db: Database, env: crypto.Envelope) -> None:
    """Migration 5's keyed step: every inode's block sum and MAC, every entry's MAC, the root.  Runs inside the
    migration's transaction, over what the older store holds (trusted as it is: it had no MACs to check)."""
    for row in list(db.inodes_v4()):
        row.bsum = to_bytes(block_sum(env, row.id, row.generation, db.block_tags(row.id)))
        row.mac = inode_mac(env, row)
        db.inode_write(row)
    for entry_id, parent, name, ino, _mac, gen in list(db.dentries_all()):
        db.dentry_set_mac(entry_id, entry_mac(env, parent, bytes(name), ino, gen))
    Root(db, env).reseal()
