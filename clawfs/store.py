"""The store: one unlocked ClawFS file, spoken to in plaintext.

`Store` joins the SQL layer (`clawfs.db`) and the envelope (`clawfs.crypto`): callers pass and receive plaintext
names, contents, symlink targets and xattrs; only ciphertext reaches the database.  It also owns the store's
lifecycle: creation (mkfs), unlocking through key slots, the exclusive lock that stops two mounts, the
"mounted" mark that reveals an unclean shutdown, and the decrypted-block cache.

Block layout: byte `b` of a file lives in block `b // block_size` at offset `b % block_size`.  A stored block's
plaintext is never longer than `min(block_size, size - idx * block_size)`; bytes past its end, and blocks that
are absent, read as zeros.  Truncation trims the last block so that stale bytes can never reappear.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kernel import tpm

from . import FORMAT_VERSION, crypto, integrity, keys, tpm_slots
from .db import Database, DiskFull, DiskIOError, InodeRow, Locked, SlotRow, StorageError
from .db.database import read_only_media
from .db.schema import LATEST
from .errors import (
    Busy,
    FsError,
    IntegrityError,
    NewerFormat,
    NoSpace,
    NotAStore,
    NotFound,
    StoreBusy,
    UserError,
    WrongKey,
)
from .index_storage import IndexStorage

log = logging.getLogger("clawfs.store")

ROOT = 1
DEFAULT_BLOCK_SIZE = 64 * 1024
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 4096, 1024 * 1024
BLOCK_CACHE_ENTRIES = 128
VERIFIED_ROWS = 4096
"""Inode rows this store has authenticated or written, as stored: an identical row read again needs no MAC."""
BLOCK_MAP_ENTRIES = 64
"""Files whose verified block set (index -> GCM tag) is kept: a read checks its blocks against it."""
FLUSH_INTERVAL = 0.05
SPACE_RESERVE = 24 * 1024 * 1024
"""Free space kept back on the store's filesystem: writes that would eat into it get ENOSPC, so that deletes,
purges and the WAL checkpoint (which needs up to CHECKPOINT_PAGES of room) can always still run."""
_HEADER = struct.Struct(">16sQ")


def _clone(row: InodeRow) -> InodeRow:
    return Database.inode_from(Database.inode_raw(row))  # a field-by-field copy (copy.copy is slower)


def store_files(path: str) -> list[str]:
    return [path, path + "-wal", path + "-shm"]


class StoreLock:
    """An exclusive flock on the store file, held for as long as a mount or fsck works on it.

    flock and SQLite's POSIX record locks are independent on Linux.  The fd must be closed only after the
    SQLite connection: closing any fd of a file drops the process's POSIX locks on it.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StoreBusy(f"{path} is in use by another clawfs process (mounted, or fsck running); "
                            "unmount it first (`clawfs umount MOUNTPOINT`)") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class StoreInfo:
    """What a store tells without a key."""

    path: str
    format_version: int
    block_size: int
    store_id: str
    created_ns: int
    slots: list[dict[str, Any]]
    counts: dict[str, int]
    mounted_flag: bool
    unclean_shutdowns: int
    rollback_protection: bool


def _open_db(path: str, *, readonly: bool = False) -> Database:
    if not os.path.exists(path):
        raise NotAStore(f"{path}: no such store (create one with `clawfs mkfs {path}`)")
    if not os.path.isfile(path):
        raise NotAStore(f"{path} is not a ClawFS store (not a regular file)")
    db = Database(path, readonly=readonly)
    version = db.schema_version()
    if version > LATEST:
        db.disconnect()
        raise NewerFormat(f"{path} has format version {version}, newer than this clawfs supports "
                          f"({LATEST}); upgrade clawfs to open it")
    return db


def read_info(path: str) -> StoreInfo:
    db = _open_db(path, readonly=True)
    try:
        meta = db.meta_all()
        slots = [{"id": s.id, "kind": s.kind, "created_ns": s.created_ns, "kdf": json.loads(s.params).get("kdf"),
                  **(tpm_slots.describe(s.params) if s.kind == tpm_slots.KIND else {})} for s in db.slots()]
        return StoreInfo(
            path=os.path.abspath(path), format_version=db.schema_version(), block_size=int(meta["block_size"]),
            store_id=bytes(meta["store_id"]).hex(), created_ns=int(meta["created_ns"]), slots=slots,
            counts=db.counts(), mounted_flag=bool(meta.get("mounted")),
            unclean_shutdowns=int(meta.get("unclean_shutdowns") or 0),
            rollback_protection=meta.get("rollback_index") is not None,
        )
    finally:
        db.disconnect()


def check_block_size(size: int) -> int:
    if size < MIN_BLOCK_SIZE or size > MAX_BLOCK_SIZE or size & (size - 1):
        raise UserError(f"block size {size} is not a power of two between 4 KiB and 1 MiB")
    return size


def _now() -> int:
    return time.time_ns()


class Store:
    """An unlocked store.  Not thread-safe: the FUSE adapter calls it from one trio thread."""

    def __init__(self, db: Database, env: crypto.Envelope, *, lock: StoreLock | None, readonly: bool) -> None:
        self._db = db
        self._env = env
        self.lock = lock
        self.path = db.path
        self.readonly = readonly
        self.block_size = int(db.meta_get("block_size"))
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        # ino -> (the block sum it was verified against, index -> tag); see _block_map
        self._maps: OrderedDict[int, tuple[bytes, dict[int, bytes]]] = OrderedDict()
        self._root = integrity.Root(db, env)
        db.before_commit = self._root.flush
        self._rows: OrderedDict[int, tuple[Any, ...]] = OrderedDict()  # see VERIFIED_ROWS
        # (parent, sealed name) -> (inode, MAC, generation) of entries verified or written here, likewise
        self._bindings: OrderedDict[tuple[int, bytes], tuple[int, Any, Any]] = OrderedDict()
        self.was_unclean = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str, slots: list[tuple[str, bytes]], *, block_size: int = DEFAULT_BLOCK_SIZE,
               force: bool = False, kdf: str = "argon2id", tpm_spec: tpm_slots.TpmSpec | None = None) -> None:
        """mkfs: a new store at `path`, its master key wrapped once per (kind, secret) in `slots`, plus a TPM
        slot (and rollback counter) when `tpm_spec` asks for one."""
        check_block_size(block_size)
        if not slots and tpm_spec is None:
            raise UserError("a store needs at least one key slot")
        if os.path.lexists(path):
            if not force:
                raise UserError(f"{path} already exists; pass --force to overwrite it (its contents are lost)")
            if not os.path.isfile(path):
                raise UserError(f"{path} exists and is not a regular file; refusing to overwrite it")
            StoreLock(path).release()  # refuses while mounted
        master, store_id = crypto.random_bytes(crypto.MASTER_KEY_BYTES), crypto.random_bytes(crypto.STORE_ID_BYTES)
        env = crypto.Envelope(store_id, master)
        wrapped = [(kind, *keys.make_slot(kind, secret, master, store_id, kdf)) for kind, secret in slots]
        rollback_meta: dict[str, Any] = {}
        if tpm_spec is not None:
            wrapped.append((tpm_slots.KIND, *tpm_slots.make_slot(master, store_id, pcrs=tpm_spec.pcrs,
                                                                 pin=tpm_spec.pin, tcti=tpm_spec.tcti)))
            if tpm_spec.rollback:
                rollback_meta = tpm_slots.enable(env, tpm_spec.tcti)
        # Build the new store beside the old one and rename it into place: until then an existing store (with
        # --force) stays whole, and a failure leaves nothing half-made.
        tmp = f"{path}.mkfs-{os.getpid()}"
        try:
            _build(tmp, env, block_size, wrapped, rollback_meta)
            for f in store_files(path)[1:]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f)
            os.replace(tmp, path)
        finally:
            for f in store_files(tmp):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f)

    @classmethod
    def open(cls, path: str, creds: keys.Credentials, *, readonly: bool = False, lock: bool = True,
             master_key: bytes | None = None) -> Store:
        # On read-only media (a CD, a read-only bind mount) every command opens the store read-only.
        readonly = readonly or read_only_media(path)
        db = _open_db(path, readonly=readonly)
        try:
            the_lock = StoreLock(path) if lock else None
        except BaseException:
            db.disconnect()
            raise
        try:
            env = unlock(db, creds) if master_key is None else _envelope(db, master_key)
            # Upgrade only once the key has been proven: a wrong passphrase leaves an older store untouched.
            # Key slots and meta are version 1 tables, which unlock is all that reads.
            if db.schema_version() < LATEST:
                if readonly:
                    raise UserError(f"{path} has an older format that must be upgraded first: open it once "
                                    "read-write (on writable media)")
                db.migrate(lambda d, _version: integrity.upgrade(d, env))
            return cls(db, env, lock=the_lock, readonly=readonly)
        except BaseException:
            db.disconnect()
            if the_lock:
                the_lock.release()
            raise

    @staticmethod
    def unlock_master(path: str, creds: keys.Credentials) -> bytes:
        """Only unlock (no lock, no changes): the master key, for a mount that forks after asking for keys."""
        db = _open_db(path, readonly=True)
        try:
            return unlock(db, creds).master_key
        finally:
            db.disconnect()

    def close(self) -> None:
        self._db.close()
        if self.lock:
            self.lock.release()

    def check_rollback(self, tcti: str, *, accept_rollback: bool, advance: bool) -> None:
        """Every mount's check: the rows must add up to the store root (a part of the store replaced by an older
        copy refuses the mount).  With rollback protection armed: refuse an older copy of the whole store,
        then (read-write mounts) record the next counter value durably and only then advance the TPM counter."""
        record = tpm_slots.rollback_record(self._db.meta_all(), self._env)
        total = self._root.compute()
        if self._root.stored() != total:
            raise UserError(f"{self.path}: the store's inodes and entries do not add up to its root: part of the "
                            "store was replaced by an older copy or edited; run `clawfs fsck` and restore the store "
                            "from a backup")
        if record is None:
            return
        index = record[0]
        if accept_rollback and tpm.counter_read(index, tcti) is None:
            tpm.counter_define(index, tcti)
        current = tpm_slots.check(record, tcti, accept_rollback=accept_rollback)
        if not advance:
            return
        with self.transaction():
            for key, value in tpm_slots.new_record(self._env, index, current + 1).items():
                self._db.meta_set(key, value)
            self._root.reseal(total)  # R's MAC covers the counter value
        self._db.durable_commit()
        tpm_slots.advance(index, tcti)

    def mark_mounted(self) -> None:
        """Set the mounted mark; if it was already set, the last mount ended without a clean unmount."""
        with self.transaction():
            self.was_unclean = bool(self._db.meta_get("mounted"))
            if self.was_unclean:
                self._db.meta_set("unclean_shutdowns", int(self._db.meta_get("unclean_shutdowns") or 0) + 1)
            self._db.meta_set("mounted", 1)
            self._db.meta_set("last_mount_ns", _now())
        self._db.durable_commit()

    def checkpoint_in_background(self) -> None:
        """For a long-lived mount: WAL checkpoints run in a thread, off the request path."""
        self._db.checkpoint_in_background()

    def mark_unmounted(self) -> None:
        with self.transaction():
            self._db.meta_set("mounted", 0)
            self._db.meta_set("last_clean_unmount_ns", _now())
        self._db.durable_commit()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of work; a full disk becomes ENOSPC and rolls the unit back."""
        with self._unit(), self._root_unit():
            yield

    @contextlib.contextmanager
    def _root_unit(self) -> Iterator[None]:
        root = self._root
        mark = len(root.pending)
        root.depth += 1
        try:
            with self._db.transaction():
                yield
        except BaseException:
            del root.pending[mark:]
            raise
        finally:
            root.depth -= 1

    @contextlib.contextmanager
    def _unit(self) -> Iterator[None]:
        try:
            yield
        except DiskFull:
            self._after_failed_unit()
            raise NoSpace("the filesystem holding the store is full") from None
        except DiskIOError as e:
            self._after_failed_unit()
            raise FsError(f"store I/O error: {e}", err=errno.EIO) from None
        except Locked:
            self._after_failed_unit()
            raise Busy("the store stayed locked by another connection past the busy timeout") from None

    def _after_failed_unit(self) -> None:
        # SQLite may have cancelled the whole batch, not just this unit; then earlier (acknowledged, not yet
        # fsync'd) writes are gone as after a crash.  The free-space reserve makes this practically unreachable.
        if self._db.batching and not self._db.in_transaction():
            log.error("the store's disk filled up mid-batch: writes of the last moments were rolled back")
        if not self._db.in_transaction():
            self._root.pending.clear()  # the rows those changes were for are gone too
        self._cache.clear()

    def batch_commits(self) -> None:
        """Group commit for a mount: units of work share one transaction that `flush()` commits (the mount
        calls it every FLUSH_INTERVAL s); fsync and unmount commit at once.  A crash loses at most the last
        interval of un-fsync'd writes, as a kernel page cache would."""
        self._db.batching = True

    def flush(self) -> None:
        try:
            self._db.commit_batch()
        except (DiskFull, DiskIOError) as e:
            log.error("group commit failed (%s); the batch was rolled back", e)
            self._cache.clear()

    def sync(self) -> None:
        try:
            self._db.durable_commit()
        except (DiskFull, DiskIOError):
            raise NoSpace("the filesystem holding the store is full") from None
        except Locked:
            raise Busy("the store stayed locked by another connection past the busy timeout") from None

    # -- key slots ------------------------------------------------------------------------------------------
    def key_slots(self) -> list[SlotRow]:
        return self._db.slots()

    def add_key_slot(self, kind: str, secret: bytes, kdf: str) -> int:
        """A new `kind` slot wrapping this store's master key under `secret`; committed (not yet fsync'd)."""
        params, wrapped = keys.make_slot(kind, secret, self._env.master_key, self._env.store_id, kdf)
        with self.transaction():
            return self._db.slot_add(kind, params, wrapped)

    def add_tpm_slot(self, spec: tpm_slots.TpmSpec) -> int:
        """A TPM slot sealed as `spec` says, arming rollback protection too when it asks for it."""
        params, wrapped = tpm_slots.make_slot(self._env.master_key, self._env.store_id, pcrs=spec.pcrs,
                                              pin=spec.pin, tcti=spec.tcti)
        rollback = tpm_slots.enable(self._env, spec.tcti) if spec.rollback else {}
        with self.transaction():
            slot_id = self._db.slot_add(tpm_slots.KIND, params, wrapped)
            for key, value in rollback.items():
                self._db.meta_set(key, value)
            if rollback:
                if not self._root.authentic():
                    raise IntegrityError("the store's rows do not add up to its root; run `clawfs fsck` first")
                self._root.reseal()
        return slot_id

    def remove_key_slot(self, slot_id: int) -> bool:
        with self.transaction():
            return self._db.slot_remove(slot_id)

    # -- inodes ---------------------------------------------------------------------------------------------
    # Every row read is checked against its MAC; every change writes the whole row with a new MAC and moves the
    # store root by the difference (clawfs/integrity.py).
    def find(self, ino: int) -> InodeRow | None:
        """The inode `ino` (authenticated), or None when there is none."""
        raw = self._db.inode_get_raw(ino)
        if raw is None:
            return None
        row = Database.inode_from(raw)
        if self._rows.get(ino) != raw:  # compared column by column: any edit since means a MAC check
            integrity.check_inode(self._env, row)
            self._seen(raw)
        return row

    def _seen(self, raw: tuple[Any, ...]) -> None:
        self._rows[raw[0]] = raw
        self._rows.move_to_end(raw[0])
        if len(self._rows) > VERIFIED_ROWS:
            self._rows.popitem(last=False)

    def get(self, ino: int) -> InodeRow:
        row = self.find(ino)
        if row is None:
            raise NotFound(f"inode {ino}")
        return row

    def _put_inode(self, old: InodeRow | None, new: InodeRow, *, may_be_stale: bool = False) -> bool:
        new.mac = integrity.inode_mac(self._env, new)
        if not new.mac:
            raise FsError(f"inode {new.id}: a field is out of range", err=errno.EINVAL)
        # Only over the row `old` was read as: writing over a row changed since (a stale row object) would take
        # the wrong term out of the root and leave the store unmountable.
        if not self._db.inode_write(new, expect_mac=old.mac if old else b""):
            if may_be_stale:
                return False
            raise IntegrityError(f"inode {new.id} changed under this change (stale row, or edited meanwhile)")
        self._seen(Database.inode_raw(new))
        self._root.change(add=[(integrity.INODE, new.mac)], remove=[(integrity.INODE, old.mac)] if old else [])
        return True

    def new_inode(self, mode: int, uid: int, gid: int, *, rdev: int = 0, parent: int | None = None,
                  target: bytes | None = None, flags: int = 0) -> InodeRow:
        now = _now()
        nlink = 2 if stat.S_ISDIR(mode) else 1
        gen = int.from_bytes(crypto.random_bytes(7), "big")
        row = InodeRow(0, gen, mode, uid, gid, nlink, 0, rdev, now, now, now, 0, parent, None, flags,
                       integrity.ZERO, b"")
        row.id = self._db.inode_insert(row)  # the id (part of the MAC and of the target's AAD) comes first
        if target is not None:
            row.target = self._env.seal_target(row.id, gen, target)
            row.size = len(target)
        self._put_inode(None, row)
        self._maps[row.id] = (row.bsum, {})  # no blocks yet: nothing to look up at the first write
        return row

    def update(self, ino: int, **fields: Any) -> None:
        self._change(ino, lambda row: row.__dict__.update(fields))

    def adjust(self, ino: int, column: str, delta: int) -> None:
        self._change(ino, lambda row: setattr(row, column, getattr(row, column) + delta))

    def _change(self, ino: int, edit: Callable[[InodeRow], object]) -> None:
        """Edit the inode's row.  The row this store last verified or wrote stands in for a read: the guarded
        write goes through only if the stored row still has that MAC (else it is read and checked, and the edit
        made again).  Columns edited behind a MAC that stayed are simply written over with authentic values."""
        seen = self._rows.get(ino)
        if seen is not None:
            old, new = Database.inode_from(seen), Database.inode_from(seen)
            edit(new)
            if self._put_inode(old, new, may_be_stale=True):
                return
        old = self.get(ino)
        new = _clone(old)
        edit(new)
        self._put_inode(old, new)

    def purge(self, ino: int) -> None:
        """Delete an inode with its blocks and xattrs (it has no entries, lookups or open handles left).  Only an
        authentic row with no links is purged: an edited link count never deletes a file's data."""
        row = self.get(ino)
        if row.nlink != 0:
            raise IntegrityError(f"inode {ino}: asked to purge an inode that still has {row.nlink} links")
        self._drop_cached(ino)
        self._maps.pop(ino, None)
        self._rows.pop(ino, None)
        mac = self._db.inode_delete(ino)
        self._root.change(remove=[(integrity.INODE, mac)])

    def orphans(self) -> list[int]:
        """Inodes with no links left (unlinked while open when the last mount ended), authentic rows only."""
        out = []
        for ino in self._db.inodes_orphaned():
            try:
                self.get(ino)
            except IntegrityError as e:
                log.error("integrity: %s; not purged (run `clawfs fsck`)", e)
                continue
            out.append(ino)
        return out

    def readlink(self, row: InodeRow) -> bytes:
        if row.target is None:
            raise IntegrityError(f"inode {row.id}: symlink without a target")
        return self._env.open_target(row.id, row.generation, row.target)

    # -- directory entries ----------------------------------------------------------------------------------
    # An entry's MAC binds (parent, sealed name) to its child's number and generation: an entry re-pointed at
    # another inode, or left behind by a deleted one, fails it.
    def _bound(self, parent: int, blob: bytes, ino: int, mac: bytes | None, gen: int | None) -> None:
        if not integrity.entry_authentic(self._env, parent, blob, ino, gen, mac):
            raise IntegrityError(f"directory {parent}: an entry is not bound to inode {ino} (re-pointed, "
                                 "replayed or modified)")

    def lookup(self, parent: int, name: bytes) -> int | None:
        blob = self._env.seal_name(parent, name)
        found = self._db.dentry_lookup(parent, blob)
        if found is None:
            return None
        ino, mac, gen = found
        if self._bindings.get((parent, blob)) != found:
            self._bound(parent, blob, ino, mac, gen)
            self._bind(parent, blob, found)
        return ino

    def _bind(self, parent: int, blob: bytes, found: tuple[int, Any, Any] | None) -> None:
        key = (parent, blob)
        if found is None:
            self._bindings.pop(key, None)
            return
        self._bindings[key] = found
        self._bindings.move_to_end(key)
        if len(self._bindings) > VERIFIED_ROWS:
            self._bindings.popitem(last=False)

    def _generation(self, ino: int) -> int | None:
        seen = self._rows.get(ino)
        return int(seen[1]) if seen is not None else self._db.inode_generation(ino)

    def add_entry(self, parent: int, name: bytes, ino: int) -> None:
        blob = self._env.seal_name(parent, name)
        gen = self._generation(ino)
        mac = integrity.entry_mac(self._env, parent, blob, ino, gen)
        self._db.dentry_insert(parent, blob, ino, mac)
        self._bind(parent, blob, (ino, mac, gen))
        self._root.change(add=[(integrity.ENTRY, mac)])

    def remove_entry(self, parent: int, name: bytes) -> None:
        blob = self._env.seal_name(parent, name)
        old = self._db.dentry_delete(parent, blob)
        self._bind(parent, blob, None)
        self._root.change(remove=[(integrity.ENTRY, old)])

    def set_entry(self, parent: int, name: bytes, ino: int) -> None:
        blob = self._env.seal_name(parent, name)
        gen = self._generation(ino)
        mac = integrity.entry_mac(self._env, parent, blob, ino, gen)
        old = self._db.dentry_set_ino(parent, blob, ino, mac)
        self._bind(parent, blob, (ino, mac, gen))
        self._root.change(add=[(integrity.ENTRY, mac)], remove=[(integrity.ENTRY, old)])

    def path_of(self, ino: int) -> bytes | None:
        """A path (relative to the root, no leading slash) of `ino`, or None if it has no entry any more."""
        parts: list[bytes] = []
        while ino != ROOT:
            found = self._db.dentry_of(ino)
            if found is None or len(parts) > 4096:
                return None
            parent, blob, mac, gen = found
            self._bound(parent, blob, ino, mac, gen)
            parts.append(self._env.open_name(parent, blob))
            ino = parent
        return b"/".join(reversed(parts))

    def paths_of(self, ino: int) -> list[bytes]:
        """Every path of `ino`, one per link (a file's hard links, oldest first; a directory has one)."""
        out: list[bytes] = []
        bases: dict[int, bytes | None] = {ROOT: b""}  # links mostly share a few folders: walk each up once
        for parent, blob, mac, gen in self._db.dentries_of(ino):
            if not integrity.entry_authentic(self._env, parent, blob, ino, gen, mac):
                log.error("integrity: directory %d: an entry is not bound to inode %d (skipped)", parent, ino)
                continue
            if parent not in bases:
                bases[parent] = self.path_of(parent)
            base = bases[parent]
            if base is not None:
                name = self._env.open_name(parent, blob)
                out.append(base + b"/" + name if base else name)
        return out

    def has_entries(self, parent: int) -> bool:
        return self._db.dentry_has_children(parent)

    def child_inodes(self, parent: int) -> list[int]:
        """The inodes `parent`'s authentic entries name, names left sealed (a walk that needs no names decrypts
        none)."""
        return [int(ino) for _, blob, ino, mac, gen in self._db.dentry_list(parent, 0)
                if integrity.entry_authentic(self._env, parent, bytes(blob), ino, gen, mac)]

    def entries(self, parent: int, after_id: int = 0) -> Iterator[tuple[int, bytes, int]]:
        """(entry id, plaintext name, inode) in a stable order; an entry that fails authentication is
        logged and skipped, so the rest of the directory stays readable (fsck lists it)."""
        for entry_id, blob, ino, mac, gen in self._db.dentry_list(parent, after_id):
            try:
                blob = bytes(blob)
                if self._bindings.get((parent, blob)) != (ino, mac, gen):
                    self._bound(parent, blob, ino, mac, gen)
                    self._bind(parent, blob, (ino, mac, gen))  # the lookups that follow a listing skip the MAC
                yield entry_id, self._env.open_name(parent, blob), ino
            except IntegrityError as e:
                log.error("integrity: %s (entry %d hidden; run `clawfs fsck`)", e, entry_id)

    # -- contents -------------------------------------------------------------------------------------------
    def drop_cache(self) -> None:
        """Forget decrypted blocks: a second connection (the indexer's) must, since writes made through the
        mount's connection never reach this cache."""
        self._cache.clear()

    def _drop_cached(self, ino: int, first: int = 0) -> None:
        for key in [k for k in self._cache if k[0] == ino and k[1] >= first]:
            del self._cache[key]

    def _block_map(self, row: InodeRow) -> dict[int, bytes]:
        """`row`'s stored blocks as index -> GCM tag, proven against the block sum in its (authenticated) row:
        a block added, removed or replaced by an older one fails here.  Proven once per block sum (the index of
        tags, one PRF per block), then kept while the sum stays (this store's own writes keep it up to date)."""
        hit = self._maps.get(row.id)
        if hit is not None and hit[0] == row.bsum:
            self._maps.move_to_end(row.id)
            return hit[1]
        tags = self._db.block_tags(row.id)
        if integrity.to_bytes(integrity.block_sum(self._env, row.id, row.generation, tags)) != row.bsum:
            raise IntegrityError(f"inode {row.id}: its blocks are not the ones it records (a block replayed, added "
                                 "or removed)")
        found = dict(tags)
        self._maps[row.id] = (row.bsum, found)
        if len(self._maps) > BLOCK_MAP_ENTRIES:
            self._maps.popitem(last=False)
        return found

    def _fetched_map(self, row: InodeRow, stored: dict[int, bytes]) -> dict[int, bytes] | None:
        """When a read fetched as many blocks as the file records (a small file, or a read of all of it), the
        fetched blocks' own tags may prove the set without reading the tag index: they do if they add up."""
        hit = self._maps.get(row.id)
        if (hit is not None and hit[0] == row.bsum) or len(stored) != row.nblocks:
            return None
        tags = {idx: blob[-crypto.TAG:] for idx, blob in stored.items()}
        if integrity.to_bytes(integrity.block_sum(self._env, row.id, row.generation, tags.items())) != row.bsum:
            return None  # the full proof decides (and names the failure)
        self._maps[row.id] = (row.bsum, tags)
        if len(self._maps) > BLOCK_MAP_ENTRIES:
            self._maps.popitem(last=False)
        return tags

    def _block(self, row: InodeRow, idx: int, blob: bytes | None, tag: bytes | None) -> bytes:
        """Block `idx` of `row` in plaintext; `blob` must be the block `tag` (from the verified map) names."""
        if (blob is None) != (tag is None) or (blob is not None and blob[-crypto.TAG:] != tag):
            raise IntegrityError(f"inode {row.id} block {idx} is not the block the file records (replayed, added "
                                 "or removed)")
        key = (row.id, idx)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if blob is None:
            return b""
        plain = self._env.open_block(row.id, row.generation, idx, bytes(blob))
        self._cache[key] = plain
        if len(self._cache) > BLOCK_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return plain

    def read(self, row: InodeRow, offset: int, length: int) -> bytes:
        end = min(offset + length, row.size)
        if offset >= end:
            return b""
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        stored = {idx: bytes(blob) for idx, blob in self._db.blocks_range(row.id, first, last)}
        try:
            tags = self._fetched_map(row, stored) or self._block_map(row)
        except IntegrityError:
            self._name_bad_block(row, stored)
            raise
        parts = []
        for idx in range(first, last + 1):
            base = idx * bs
            lo, hi = max(offset, base) - base, min(end, base + bs) - base
            piece = self._block(row, idx, stored.get(idx), tags.get(idx))[lo:hi]
            parts.append(piece if len(piece) == hi - lo else piece + bytes(hi - lo - len(piece)))
        return b"".join(parts)

    def _name_bad_block(self, row: InodeRow, stored: dict[int, bytes]) -> None:
        """The block set failed: if a block of the request fails on its own, say which (the log names it)."""
        for idx, blob in sorted(stored.items()):
            try:
                self._env.open_block(row.id, row.generation, idx, blob)
            except IntegrityError as e:
                raise IntegrityError(f"{e}; inode {row.id}: its blocks are not the ones it records") from None

    def _set_blocks(self, row: InodeRow, tags: dict[int, bytes], total: int) -> None:
        """`row`'s block set changed to `tags` with sum `total`: the row records the sum, the map follows."""
        new = _clone(row)
        new.bsum = integrity.to_bytes(total)
        self._put_inode(row, new)
        row.bsum, row.mac = new.bsum, new.mac  # the caller's row stays current: it may be passed again
        self._maps[row.id] = (new.bsum, tags)  # mutated in place: a rolled-back unit's sum never matches it again

    def write(self, row: InodeRow, offset: int, data: bytes) -> tuple[int, int]:
        """Write `data` at `offset`; returns (new size, blocks added).  The caller records both.  `row` must be
        current; its block sum and MAC are updated in place (the row written is `row` with the new sum)."""
        bs, size = self.block_size, row.size
        end = offset + len(data)
        view = memoryview(data)
        added = 0
        tags = self._block_map(row)
        self._maps.pop(row.id, None)  # until the new sum is recorded below
        total = integrity.from_bytes(row.bsum)
        for idx in range(offset // bs, (end - 1) // bs + 1):
            base = idx * bs
            lo, hi = max(offset, base) - base, min(end, base + bs) - base
            chunk = view[base + lo - offset:base + hi - offset]
            old_tag = tags.get(idx)
            if lo == 0 and (hi == bs or base + hi >= size):
                plain = bytes(chunk)  # the write covers everything this block held
            else:
                old = self._block(row, idx, self._db.block_get(row.id, idx) if old_tag is not None else None, old_tag)
                buf = bytearray(old)
                if len(buf) < lo:
                    buf.extend(bytes(lo - len(buf)))
                buf[lo:hi] = chunk
                plain = bytes(buf)
            self._cache.pop((row.id, idx), None)  # refilled on read: a rolled-back write must not linger
            sealed = self._env.seal_block(row.id, row.generation, idx, plain)
            tag = sealed[-crypto.TAG:]
            added += self._db.block_put(row.id, idx, sealed, tag)
            if old_tag is not None:
                total -= self._env.block_term(row.id, row.generation, idx, old_tag)
            total += self._env.block_term(row.id, row.generation, idx, tag)
            tags[idx] = tag
        self._set_blocks(row, tags, total)
        return max(size, end), added

    def truncate(self, row: InodeRow, new_size: int) -> int:
        """Cut or extend to `new_size`; returns the change in stored blocks (<= 0).  Growth stores nothing.  As
        with `write`, `row` must be current and is kept so."""
        if new_size >= row.size:
            return 0
        bs = self.block_size
        keep = (new_size + bs - 1) // bs  # blocks 0..keep-1 may hold data
        tags = self._block_map(row)
        self._maps.pop(row.id, None)
        total = integrity.from_bytes(row.bsum)
        self._drop_cached(row.id, new_size // bs)
        removed = self._db.blocks_delete_from(row.id, keep)
        for idx in [i for i in tags if i >= keep]:
            total -= self._env.block_term(row.id, row.generation, idx, tags.pop(idx))
        tail = new_size % bs
        if tail:
            idx = new_size // bs
            old_tag = tags.get(idx)
            if old_tag is not None:
                plain = self._block(row, idx, self._db.block_get(row.id, idx), old_tag)
                self._cache.pop((row.id, idx), None)
                if len(plain) > tail:
                    sealed = self._env.seal_block(row.id, row.generation, idx, plain[:tail])
                    self._db.block_put(row.id, idx, sealed, sealed[-crypto.TAG:])
                    total += (self._env.block_term(row.id, row.generation, idx, sealed[-crypto.TAG:])
                              - self._env.block_term(row.id, row.generation, idx, old_tag))
                    tags[idx] = sealed[-crypto.TAG:]
        self._set_blocks(row, tags, total)
        return -removed

    # -- xattrs ---------------------------------------------------------------------------------------------
    def xattr_get(self, row: InodeRow, name: bytes) -> bytes | None:
        xname = self._env.seal_xattr_name(row.id, name)
        blob = self._db.xattr_get(row.id, xname)
        return None if blob is None else self._env.open_xattr_value(row.id, row.generation, xname, blob)

    def xattr_set(self, row: InodeRow, name: bytes, value: bytes) -> None:
        xname = self._env.seal_xattr_name(row.id, name)
        self._db.xattr_set(row.id, xname, self._env.seal_xattr_value(row.id, row.generation, xname, value))

    def xattr_remove(self, row: InodeRow, name: bytes) -> bool:
        return self._db.xattr_delete(row.id, self._env.seal_xattr_name(row.id, name))

    def xattr_names(self, row: InodeRow) -> list[bytes]:
        return [self._env.open_xattr_name(row.id, bytes(n)) for n, _ in self._db.xattr_list(row.id)]

    # -- settings -------------------------------------------------------------------------------------------
    def setting(self, key: str) -> Any:
        """A store setting (JSON), decrypted; None when unset."""
        blob = self._db.setting_get(key)
        return None if blob is None else json.loads(self._env.open_setting(key, blob))

    def set_setting(self, key: str, value: Any) -> None:
        """Set (or with None, remove) a setting; part of the caller's unit of work."""
        sealed = None if value is None else self._env.seal_setting(key, json.dumps(value).encode())
        self._db.setting_set(key, sealed)

    # -- index queue ----------------------------------------------------------------------------------------
    def queue_for_index(self, ino: int) -> None:
        """Ask the indexer to look at `ino` again; part of the caller's unit of work, so never lost."""
        self.index.enqueue(ino, _now())

    # -- audit (fsck): every row, sealed material checked rather than trusted -------------------------------
    def all_inodes(self) -> Iterator[InodeRow]:
        """Every inode row as stored, unchecked: fsck asks `inode_authentic` of each."""
        return self._db.inodes_all()

    def inode_authentic(self, row: InodeRow) -> bool:
        return integrity.inode_authentic(self._env, row)

    def all_entries(self) -> Iterator[tuple[int, int, int, bool, bool]]:
        """(entry id, parent, inode, whether the sealed name authenticates, whether the entry is bound to that
        inode) of every directory entry."""
        for entry_id, parent, name, ino, mac, gen in self._db.dentries_all():
            try:
                self._env.open_name(parent, bytes(name))
                authentic = True
            except IntegrityError:
                authentic = False
            bound = gen is None or integrity.entry_authentic(self._env, parent, bytes(name), ino, gen, mac)
            yield entry_id, parent, ino, authentic, bound

    def block_owners(self) -> Iterator[tuple[int, int]]:
        """(inode, number of blocks) for every inode that owns stored blocks."""
        return self._db.blocks_owners()

    def stored_blocks(self, row: InodeRow) -> Iterator[tuple[int, bytes | None]]:
        """(index, plaintext, or None when the block fails authentication or is not the one its tag column
        names) of each stored block of `row`."""
        for idx, blob, tag in self._db.blocks_of(row.id):
            blob = bytes(blob)
            if tag is None or blob[-crypto.TAG:] != bytes(tag):
                yield idx, None
                continue
            try:
                yield idx, self._env.open_block(row.id, row.generation, idx, blob)
            except IntegrityError:
                yield idx, None

    def block_set_authentic(self, row: InodeRow) -> bool:
        """Do `row`'s stored blocks add up to the block sum its row records?"""
        tags = self._db.block_tags(row.id)
        return integrity.to_bytes(integrity.block_sum(self._env, row.id, row.generation, tags)) == row.bsum

    def root_authentic(self) -> bool:
        """Do the inode and entry rows add up to the store root, sealed for the recorded counter value?"""
        return self._root.authentic()

    def xattrs_authentic(self, row: InodeRow) -> Iterator[bool]:
        """Per stored extended attribute of `row`: whether its name and value authenticate."""
        for xname, value in self._db.xattr_list(row.id):
            try:
                self._env.open_xattr_name(row.id, bytes(xname))
                self._env.open_xattr_value(row.id, row.generation, bytes(xname), bytes(value))
                yield True
            except IntegrityError:
                yield False

    @property
    def index(self) -> IndexStorage:
        """The semantic index's tables and sealing, through this store's connection and keys."""
        return IndexStorage(self._db, self._env)

    # -- whole-store figures --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows per kind (inodes, entries, blocks) and the bytes stored in blocks."""
        return self._db.counts()

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(os.path.dirname(os.path.abspath(self.path)))

    def ensure_space(self, nbytes: int) -> None:
        """ENOSPC unless `nbytes` of new data fits without touching the reserve.  New data takes its space
        twice until checkpointed (WAL, then database), hence the factor 2."""
        st = self.statvfs()
        if st.f_bavail * st.f_frsize - 2 * (nbytes + crypto.OVERHEAD) < SPACE_RESERVE:
            raise NoSpace("the filesystem holding the store is full")


def _build(path: str, env: crypto.Envelope, block_size: int, wrapped: list[tuple[str, str, bytes]],
           extra_meta: dict[str, Any]) -> None:
    """Write a complete, closed (checkpointed) new store at `path`."""
    # The file is the owner's alone whatever the umask (SQLite gives the -wal and -shm files its mode too).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.chmod(path, 0o600)
    try:
        db = Database(path, create=True)
    except StorageError as e:
        raise UserError(f"cannot create {path}: {e}") from None
    try:
        db.migrate(lambda d, _version: integrity.upgrade(d, env))
        with db.transaction():
            db.meta_set("store_id", env.store_id)
            db.meta_set("format_version", FORMAT_VERSION)
            db.meta_set("block_size", block_size)
            db.meta_set("created_ns", _now())
            db.meta_set("header_mac", env.header_mac(_HEADER.pack(env.store_id, block_size)))
            db.meta_set("mounted", 0)
            db.meta_set("unclean_shutdowns", 0)
            for kind, params, blob in wrapped:
                db.slot_add(kind, params, blob)
            for key, value in extra_meta.items():
                db.meta_set(key, value)
            now = _now()
            root = InodeRow(ROOT, int.from_bytes(crypto.random_bytes(7), "big"), stat.S_IFDIR | 0o755,
                            os.getuid(), os.getgid(), 2, 0, 0, now, now, now, 0, ROOT, None, 0, integrity.ZERO)
            root.mac = integrity.inode_mac(env, root)
            db.inode_insert(root)
            integrity.Root(db, env).reseal()  # for the counter value just recorded, over the root inode
    finally:
        db.close()


def _envelope(db: Database, master: bytes) -> crypto.Envelope:
    store_id = bytes(db.meta_get("store_id"))
    env = crypto.Envelope(store_id, master)
    header = _HEADER.pack(store_id, int(db.meta_get("block_size")))
    if not env.check_header_mac(header, bytes(db.meta_get("header_mac") or b"")):
        raise UserError(f"{db.path}: the store header failed authentication (store id or block size was "
                        "modified); restore the store from a backup")
    return env


def unlock(db: Database, creds: keys.Credentials) -> crypto.Envelope:
    """TPM slots first, then every offered secret against every slot of its kind, then a passphrase prompt if
    one was allowed.  The first slot that opens wins; failures of TPM slots are logged and reported."""
    store_id = bytes(db.meta_get("store_id"))
    slots = db.slots()
    tpm_failures: list[str] = []
    if creds.tpm:
        for slot in (s for s in slots if s.kind == tpm_slots.KIND):
            master = _try_tpm_slot(slot, store_id, creds, tpm_failures)
            if master is not None:
                return _envelope(db, master)
    offered = creds.offered()
    has_passphrase_slot = any(s.kind == "passphrase" for s in slots)
    if creds.ask_passphrase and not creds.passphrases and has_passphrase_slot:
        offered = [*offered, ("passphrase", creds.ask_passphrase())]
    for kind, secret in offered:
        for slot in slots:
            if slot.kind != kind:
                continue
            try:
                master = keys.open_slot(kind, slot.params, bytes(slot.wrapped), secret, store_id)
            except keys.DamagedSlot as e:  # edited or damaged: say so, and try the other slots
                tpm_failures.append(f"{kind} slot {slot.id} is damaged: {e}")
                continue
            if master is not None:
                for failure in tpm_failures:  # opened anyway: say why the TPM did not do it
                    log.warning("%s; opened with the %s slot instead", failure, kind)
                return _envelope(db, master)
    raise keys.no_slot_opened(creds, {s.kind for s in slots}, tpm_failures)


def _try_tpm_slot(slot: SlotRow, store_id: bytes, creds: keys.Credentials, failures: list[str]) -> bytes | None:
    pin = creds.tpm_pin
    try:
        if pin is None and tpm_slots.needs_pin(slot.params) and creds.ask_pin:
            pin = creds.ask_pin()
        return tpm_slots.open_slot(slot.params, bytes(slot.wrapped), store_id, pin=pin,
                                   tcti=creds.tpm_tcti or tpm.default_tcti())
    except tpm.TpmError as e:
        failures.append(f"TPM slot {slot.id}: {e}")
        log.debug("TPM slot %d did not open (%s); trying the other key slots", slot.id, e)
        return None


__all__ = ["ROOT", "Store", "StoreLock", "WrongKey", "read_info"]
