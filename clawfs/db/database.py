"""The typed apsw layer: every SQL statement of ClawFS, one small method each.

Transactions: `with db.transaction():` wraps a unit of work (one FUSE request, one fsck repair) so that it is
atomic; SQLite errors inside roll the whole unit back.  `durable_commit()` is what fsync calls: one tiny write
with `synchronous=FULL`, which fsyncs the WAL and with it every frame committed before it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import apsw

from ..errors import NotAStore
from .schema import APPLICATION_ID, KEYED, LATEST, MIGRATIONS

log = logging.getLogger("clawfs.db")

MMAP_BYTES = 1 << 31
"""Map up to 2 GiB of the database file: block reads then walk overflow pages in memory, not one pread each."""

PAGE_SIZE = 16384
"""Larger pages cut the overflow chain of a 64 KiB block from 17 pages to 5; measured by bench/fs_throughput."""

CHECKPOINT_PAGES = 1024
"""WAL pages (16 MiB at 16 KiB pages) after which a checkpoint copies them into the database file.  Until it
does, the data takes its space twice (WAL and database), which the free-space reserve must cover."""

INODE_COLUMNS = (
    "id, generation, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns, ctime_ns, nblocks, parent, target, flags,"
    " bsum, mac"
)
_INODE_V4_COLUMNS = INODE_COLUMNS.rsplit(",", 2)[0]  # before migration 5 (a v4 store is read only to migrate it)
FLAG_SECRET = 1  # inodes.flags: a secret (or a directory of secrets); see clawfs/home.py


class StorageError(Exception):
    """SQLite failed under a unit of work; apsw's exceptions never leave this package (the store maps these)."""


class DiskFull(StorageError):
    """The filesystem holding the store is full."""


class DiskIOError(StorageError):
    """An I/O error other than a full disk."""


class Locked(StorageError):
    """Another connection held the store past the busy timeout."""


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """apsw's full-disk, I/O and busy errors as this package's own."""
    try:
        yield
    except apsw.FullError as e:
        raise DiskFull(str(e)) from None
    except apsw.IOError as e:
        raise (DiskFull if "full" in str(e).lower() else DiskIOError)(str(e)) from None
    except apsw.BusyError as e:
        raise Locked(str(e)) from None


@dataclass
class InodeRow:
    id: int
    generation: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    nblocks: int
    parent: int | None
    target: bytes | None
    flags: int = 0
    bsum: bytes = b""  # schema v5: the sum of the file's block terms (clawfs/integrity.py)
    mac: bytes = b""   # schema v5: the row's MAC


@dataclass
class SlotRow:
    id: int
    kind: str
    params: str
    wrapped: bytes
    created_ns: int


def read_only_media(path: str) -> bool:
    """Is the store file on a read-only filesystem (and without a -shm file there that a reader could use)?"""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY) and not os.path.exists(path + "-shm")
    except OSError:
        return False


class Database:
    """One apsw connection to a store file."""

    def __init__(self, path: str, *, create: bool = False, readonly: bool = False) -> None:
        flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
        if create:
            flags |= apsw.SQLITE_OPEN_CREATE
        self.path = path
        if not create and os.path.getsize(path) == 0:
            raise NotAStore(f"{path} is an empty file, not a ClawFS store")
        target = path
        if readonly and not create and read_only_media(path):
            # On read-only media SQLite cannot make the -shm file a WAL reader needs: nobody can change the
            # file there, so it is opened as immutable (no locks, no -shm).
            target = f"file:{urllib.parse.quote(os.path.abspath(path))}?immutable=1"
            flags |= apsw.SQLITE_OPEN_URI
        try:
            self.conn = apsw.Connection(target, flags=flags)
            self.conn.set_busy_timeout(5000)
            # Identify the file before changing anything in it: a foreign database must be left untouched.
            app_id = self._scalar("PRAGMA application_id")
            if not create and app_id != APPLICATION_ID:
                self.conn.close()
                raise NotAStore(f"{path} is an SQLite database but not a ClawFS store")
            if create:
                self._execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = self._scalar("PRAGMA journal_mode = WAL") if not readonly else "wal"
        except (apsw.NotADBError, apsw.CorruptError):
            raise NotAStore(f"{path} is not a ClawFS store (not an SQLite database)") from None
        except apsw.CantOpenError:
            if create:
                raise StorageError(f"cannot open {path}") from None
            if os.path.exists(path):  # e.g. its -wal/-shm were being made or removed by another process
                why = "permission denied" if not os.access(path, os.R_OK) else \
                    "another clawfs process may have been opening or closing it just then; try again"
                raise NotAStore(f"cannot open {path}: {why}") from None
            raise NotAStore(f"cannot open {path}: no such store (create one with `clawfs mkfs {path}`)") from None
        except apsw.Error as e:
            if create:
                raise StorageError(str(e)) from None
            raise
        if str(mode).lower() != "wal":
            raise NotAStore(f"{path}: cannot switch the store to WAL mode (journal_mode is {mode})")
        self._execute("PRAGMA synchronous = NORMAL")
        self._execute("PRAGMA cache_size = -65536")  # 64 MiB of page cache
        self._execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # reads of the database file without a pread per page
        self._execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        self._checkpointer: _Checkpointer | None = None
        self.before_commit: Callable[[], None] | None = None
        """Called inside the transaction just before each COMMIT this class issues (the store root's flush)."""
        self.batching = False
        """When True, units of work accumulate in one transaction until commit_batch (see Store.batch_commits)."""

    def close(self) -> None:
        with contextlib.suppress(apsw.Error, StorageError):
            self.commit_batch()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with contextlib.suppress(apsw.Error):
            self._execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()

    def disconnect(self) -> None:
        """Close the connection only (no commit, no checkpoint): for a store opened just to look at it."""
        self.conn.close()

    def checkpoint_in_background(self) -> None:
        """Move WAL checkpoints off the request path: a thread with its own connection copies committed pages
        into the database file (and fsyncs it) while requests keep committing to the WAL.  apsw drops the GIL
        inside SQLite, so on two cores the copy runs beside the request loop instead of stalling it."""
        if self._checkpointer is None:
            self._checkpointer = _Checkpointer(self.path)
            self._execute("PRAGMA wal_autocheckpoint = 0")
            self.conn.set_wal_hook(self._checkpointer.on_commit)

    # -- plumbing -------------------------------------------------------------------------------------------
    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> apsw.Cursor:
        return self.conn.execute(sql, args)

    def _scalar(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A unit of work: a savepoint inside an open batch, else its own transaction.

        Transactions begin IMMEDIATE: with two connections on one store (the mount's and its indexer's), a
        deferred transaction that read first could not upgrade to writing after the other one committed
        (SQLITE_BUSY_SNAPSHOT, which no busy timeout retries); taking the write lock up front waits instead."""
        with storage_errors():
            own = not self.conn.in_transaction
            if own:
                self._execute("BEGIN IMMEDIATE")
            try:
                with self.conn:
                    yield
            except BaseException:
                if own and not self.batching and self.conn.in_transaction:
                    self._execute("ROLLBACK")
                raise
            if own and not self.batching:
                self._commit()

    def _commit(self) -> None:
        if self.before_commit is not None:
            self.before_commit()
        self._execute("COMMIT")

    def in_transaction(self) -> bool:
        return bool(self.conn.in_transaction)

    def commit_batch(self) -> None:
        """Commit the open batch (group commit): many requests, one WAL append of each page they dirtied."""
        if self.conn.in_transaction:
            with storage_errors():
                self._commit()

    def durable_commit(self) -> None:
        """Make everything committed so far survive a power cut (what fsync promises)."""
        with storage_errors():
            self._durable_commit()

    def _durable_commit(self) -> None:
        self.commit_batch()
        self._execute("PRAGMA synchronous = FULL")
        try:
            self._execute("BEGIN IMMEDIATE")
            self._execute("INSERT OR REPLACE INTO meta VALUES ('last_sync_ns', ?)", (time.time_ns(),))
            self._execute("COMMIT")
        finally:
            if self.conn.in_transaction:
                self._execute("ROLLBACK")
            self._execute("PRAGMA synchronous = NORMAL")

    def schema_version(self) -> int:
        return int(self._scalar("PRAGMA user_version") or 0)

    def migrate(self, keyed: Callable[[Database, int], None] | None = None) -> None:
        """Apply every migration newer than the store, each in one transaction with its record; `keyed(db, v)`
        runs the keyed step of migration v (schema.KEYED) inside that transaction."""
        current = self.schema_version()
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            with self.conn:
                if version == 1:
                    self._execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    self._execute(
                        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT,"
                        " applied_ns INTEGER)"
                    )
                self.conn.execute(sql)
                if version in KEYED:
                    if keyed is None:
                        raise RuntimeError(f"migration {version} needs the store's key")
                    keyed(self, version)
                self._execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, description, time.time_ns()))
                self._execute(f"PRAGMA user_version = {version}")
        assert self.schema_version() == LATEST

    # -- meta -----------------------------------------------------------------------------------------------
    def meta_get(self, key: str) -> Any:
        return self._scalar("SELECT value FROM meta WHERE key = ?", (key,))

    def meta_set(self, key: str, value: Any) -> None:
        self._execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def setting_get(self, key: str) -> bytes | None:
        value = self._scalar("SELECT value FROM settings WHERE key = ?", (key,))
        return None if value is None else bytes(value)

    def setting_set(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._execute("DELETE FROM settings WHERE key = ?", (key,))
        else:
            self._execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def meta_pair(self, a: str, b: str) -> tuple[Any, Any]:
        """Two meta values in one query."""
        found: dict[Any, Any] = {k: v for k, v in self._execute("SELECT key, value FROM meta WHERE key IN (?, ?)",
                                                                 (a, b))}
        return found.get(a), found.get(b)

    def meta_all(self) -> dict[str, Any]:
        return {k: v for k, v in self._execute("SELECT key, value FROM meta")}

    # -- key slots ------------------------------------------------------------------------------------------
    def slots(self) -> list[SlotRow]:
        return [SlotRow(*r) for r in self._execute("SELECT * FROM key_slots ORDER BY id")]

    def slot_add(self, kind: str, params: str, wrapped: bytes) -> int:
        self._execute(
            "INSERT INTO key_slots (kind, params, wrapped, created_ns) VALUES (?, ?, ?, ?)",
            (kind, params, wrapped, time.time_ns()),
        )
        return int(self.conn.last_insert_rowid())

    def slot_remove(self, slot_id: int) -> bool:
        self._execute("DELETE FROM key_slots WHERE id = ?", (slot_id,))
        return self.conn.changes() > 0

    # -- inodes ---------------------------------------------------------------------------------------------
    @staticmethod
    def inode_from(row: tuple[Any, ...]) -> InodeRow:
        r = InodeRow(*row)
        r.bsum = b"" if r.bsum is None else bytes(r.bsum)
        r.mac = b"" if r.mac is None else bytes(r.mac)
        if r.target is not None:
            r.target = bytes(r.target)
        return r

    def inode_get(self, ino: int) -> InodeRow | None:
        row = self.inode_get_raw(ino)
        return None if row is None else self.inode_from(row)

    def inode_get_raw(self, ino: int) -> tuple[Any, ...] | None:
        """The row as SQLite returns it (INODE_COLUMNS), for a caller that compares it with one it has seen."""
        row = self._execute(f"SELECT {INODE_COLUMNS} FROM inodes WHERE id = ?", (ino,)).fetchone()
        return None if row is None else tuple(row)

    @staticmethod
    def inode_raw(row: InodeRow) -> tuple[Any, ...]:
        """`row` as `inode_get_raw` returns it once written."""
        return (row.id, row.generation, row.mode, row.uid, row.gid, row.nlink, row.size, row.rdev, row.atime_ns,
                row.mtime_ns, row.ctime_ns, row.nblocks, row.parent, row.target, row.flags, row.bsum, row.mac)

    def inode_generation(self, ino: int) -> int | None:
        value = self._scalar("SELECT generation FROM inodes WHERE id = ?", (ino,))
        return None if value is None else int(value)

    def inode_insert(self, row: InodeRow) -> int:
        """Insert `row`; its id is used when non-zero (the root), else SQLite assigns a fresh, never-reused id."""
        values = (
            row.id or None, row.generation, row.mode, row.uid, row.gid, row.nlink, row.size, row.rdev,
            row.atime_ns, row.mtime_ns, row.ctime_ns, row.nblocks, row.parent, row.target, row.flags,
            row.bsum, row.mac,
        )
        self._execute(f"INSERT INTO inodes ({INODE_COLUMNS}) VALUES ({', '.join('?' * 17)})", values)
        return int(self.conn.last_insert_rowid())

    def inode_write(self, row: InodeRow, expect_mac: bytes | None = None) -> bool:
        """Every column of `row` (but its id) written over the stored row; with `expect_mac`, only over a row
        that still holds that MAC.  True when a row was written."""
        guard, args = ("", ()) if expect_mac is None else (" AND mac IS ?", (expect_mac,))
        self._execute(
            "UPDATE inodes SET generation = ?, mode = ?, uid = ?, gid = ?, nlink = ?, size = ?, rdev = ?,"
            " atime_ns = ?, mtime_ns = ?, ctime_ns = ?, nblocks = ?, parent = ?, target = ?, flags = ?, bsum = ?,"
            f" mac = ? WHERE id = ?{guard}",
            (row.generation, row.mode, row.uid, row.gid, row.nlink, row.size, row.rdev, row.atime_ns, row.mtime_ns,
             row.ctime_ns, row.nblocks, row.parent, row.target, row.flags, row.bsum, row.mac, row.id, *args),
        )
        return self.conn.changes() > 0

    def inode_delete(self, ino: int) -> bytes | None:
        """Delete the inode with its blocks and xattrs; the deleted row's MAC."""
        self._execute("DELETE FROM blocks WHERE ino = ?", (ino,))
        self._execute("DELETE FROM xattrs WHERE ino = ?", (ino,))
        row = self._execute("DELETE FROM inodes WHERE id = ? RETURNING mac", (ino,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def inodes_orphaned(self) -> list[int]:
        return [r[0] for r in self._execute("SELECT id FROM inodes WHERE nlink = 0")]

    def inodes_all(self) -> Iterator[InodeRow]:
        for row in self._execute(f"SELECT {INODE_COLUMNS} FROM inodes ORDER BY id"):
            yield self.inode_from(row)

    def inodes_v4(self) -> Iterator[InodeRow]:
        """Every inode of a store being migrated to v5 (no bsum or mac columns read)."""
        for row in self._execute(f"SELECT {_INODE_V4_COLUMNS} FROM inodes ORDER BY id"):
            yield self.inode_from((*row, None, None))

    def inode_macs(self) -> Iterator[bytes | None]:
        for (mac,) in self._execute("SELECT mac FROM inodes"):
            yield mac

    # -- directory entries ----------------------------------------------------------------------------------
    # Rows of entries come with the child's generation (a join): an entry's MAC binds it.
    def dentry_lookup(self, parent: int, name: bytes) -> tuple[int, bytes | None, int | None] | None:
        """(child inode, entry MAC, child generation or None when the child is missing)."""
        row = self._execute(
            "SELECT d.ino, d.mac, i.generation FROM dentries d LEFT JOIN inodes i ON i.id = d.ino"
            " WHERE d.parent = ? AND d.name = ?", (parent, name)).fetchone()
        return None if row is None else (int(row[0]), row[1], row[2])

    def dentry_insert(self, parent: int, name: bytes, ino: int, mac: bytes) -> None:
        self._execute("INSERT INTO dentries (parent, name, ino, mac) VALUES (?, ?, ?, ?)", (parent, name, ino, mac))

    def dentry_delete(self, parent: int, name: bytes) -> bytes | None:
        """Delete the entry; its MAC (None when there was none)."""
        row = self._execute("DELETE FROM dentries WHERE parent = ? AND name = ? RETURNING mac",
                            (parent, name)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def dentry_set_ino(self, parent: int, name: bytes, ino: int, mac: bytes) -> bytes | None:
        """Point the entry at `ino`; the entry's previous MAC."""
        old = self._scalar("SELECT mac FROM dentries WHERE parent = ? AND name = ?", (parent, name))
        self._execute("UPDATE dentries SET ino = ?, mac = ? WHERE parent = ? AND name = ?", (ino, mac, parent, name))
        return None if old is None else bytes(old)

    def dentry_set_mac(self, entry_id: int, mac: bytes) -> None:
        self._execute("UPDATE dentries SET mac = ? WHERE id = ?", (mac, entry_id))

    def dentry_list(self, parent: int, after_id: int) -> Iterator[tuple[int, bytes, int, bytes | None, int | None]]:
        """(id, encrypted name, inode, MAC, child generation) of `parent`'s entries with id > after_id, in id
        order."""
        yield from self._execute(
            "SELECT d.id, d.name, d.ino, d.mac, i.generation FROM dentries d LEFT JOIN inodes i ON i.id = d.ino"
            " WHERE d.parent = ? AND d.id > ? ORDER BY d.id", (parent, after_id)
        )

    def dentry_of(self, ino: int) -> tuple[int, bytes, bytes | None, int | None] | None:
        """(parent, encrypted name, MAC, generation of `ino`) of one entry that links to `ino` (the oldest)."""
        row = self._execute(
            "SELECT d.parent, d.name, d.mac, i.generation FROM dentries d LEFT JOIN inodes i ON i.id = d.ino"
            " WHERE d.ino = ? ORDER BY d.id LIMIT 1", (ino,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), row[2], row[3])

    def dentries_of(self, ino: int) -> list[tuple[int, bytes, bytes | None, int | None]]:
        """(parent, encrypted name, MAC, generation of `ino`) of every entry that links to `ino`, oldest first."""
        return [(int(p), bytes(n), m, g) for p, n, m, g in self._execute(
            "SELECT d.parent, d.name, d.mac, i.generation FROM dentries d LEFT JOIN inodes i ON i.id = d.ino"
            " WHERE d.ino = ? ORDER BY d.id", (ino,))]

    def dentry_has_children(self, parent: int) -> bool:
        return self._scalar("SELECT 1 FROM dentries WHERE parent = ? LIMIT 1", (parent,)) is not None

    def dentries_all(self) -> Iterator[tuple[int, int, bytes, int, bytes | None, int | None]]:
        """(id, parent, encrypted name, inode, MAC, child generation) of every entry."""
        yield from self._execute(
            "SELECT d.id, d.parent, d.name, d.ino, d.mac, i.generation FROM dentries d"
            " LEFT JOIN inodes i ON i.id = d.ino ORDER BY d.id")

    def dentry_macs(self) -> Iterator[bytes | None]:
        for (mac,) in self._execute("SELECT mac FROM dentries"):
            yield mac

    # -- blocks ---------------------------------------------------------------------------------------------
    def block_get(self, ino: int, idx: int) -> bytes | None:
        value = self._scalar("SELECT data FROM blocks WHERE ino = ? AND idx = ?", (ino, idx))
        return None if value is None else bytes(value)

    def blocks_range(self, ino: int, first: int, last: int) -> Iterator[tuple[int, bytes]]:
        yield from self._execute(
            "SELECT idx, data FROM blocks WHERE ino = ? AND idx BETWEEN ? AND ? ORDER BY idx", (ino, first, last)
        )

    def block_put(self, ino: int, idx: int, data: bytes, tag: bytes) -> bool:
        """Store a block and its tag; True when the block is new (the inode's nblocks grows)."""
        self._execute("INSERT OR IGNORE INTO blocks (ino, idx, data, tag) VALUES (?, ?, ?, ?)", (ino, idx, data, tag))
        if self.conn.changes():
            return True
        self._execute("UPDATE blocks SET data = ?, tag = ? WHERE ino = ? AND idx = ?", (data, tag, ino, idx))
        return False

    def block_tags(self, ino: int) -> list[tuple[int, bytes]]:
        """(index, tag) of every stored block of `ino` (index blocks_tags: the blocks themselves are not read)."""
        return [(int(i), bytes(t) if t is not None else b"") for i, t in
                self._execute("SELECT idx, tag FROM blocks WHERE ino = ? ORDER BY idx", (ino,))]

    def blocks_delete_from(self, ino: int, first: int) -> int:
        self._execute("DELETE FROM blocks WHERE ino = ? AND idx >= ?", (ino, first))
        return int(self.conn.changes())

    def blocks_of(self, ino: int) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(index, sealed block, tag column) of every stored block of `ino`."""
        yield from self._execute("SELECT idx, data, tag FROM blocks WHERE ino = ? ORDER BY idx", (ino,))

    def blocks_owners(self) -> Iterator[tuple[int, int]]:
        """(inode, block count) for every inode that owns blocks."""
        yield from self._execute("SELECT ino, count(*) FROM blocks GROUP BY ino")

    # -- xattrs ---------------------------------------------------------------------------------------------
    def xattr_get(self, ino: int, name: bytes) -> bytes | None:
        value = self._scalar("SELECT value FROM xattrs WHERE ino = ? AND name = ?", (ino, name))
        return None if value is None else bytes(value)

    def xattr_set(self, ino: int, name: bytes, value: bytes) -> None:
        self._execute("INSERT OR REPLACE INTO xattrs VALUES (?, ?, ?)", (ino, name, value))

    def xattr_delete(self, ino: int, name: bytes) -> bool:
        self._execute("DELETE FROM xattrs WHERE ino = ? AND name = ?", (ino, name))
        return self.conn.changes() > 0

    def xattr_list(self, ino: int) -> Iterator[tuple[bytes, bytes]]:
        yield from self._execute("SELECT name, value FROM xattrs WHERE ino = ? ORDER BY name", (ino,))

    # -- statistics -----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {
            "inodes": int(self._scalar("SELECT count(*) FROM inodes")),
            "entries": int(self._scalar("SELECT count(*) FROM dentries")),
            "blocks": int(self._scalar("SELECT count(*) FROM blocks")),
            "stored_bytes": int(self._scalar("SELECT coalesce(sum(length(data)), 0) FROM blocks")),
        }


class _Checkpointer:
    """A thread that runs PASSIVE checkpoints when the WAL has grown past CHECKPOINT_PAGES (or every second)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="clawfs-checkpoint", daemon=True)
        self.thread.start()

    def on_commit(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        if pages >= CHECKPOINT_PAGES:
            self.wake.set()
        return int(apsw.SQLITE_OK)

    def _run(self) -> None:
        conn = apsw.Connection(self.path, flags=apsw.SQLITE_OPEN_READWRITE)
        conn.set_busy_timeout(1000)
        try:
            while not self.stopping:
                self.wake.wait(1.0)
                self.wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (apsw.BusyError, apsw.LockedError):
                    pass  # a writer or reader is in the way; the next wake-up tries again
                except (apsw.FullError, apsw.IOError) as e:
                    log.warning("checkpoint could not complete (%s); committed data stays safe in the WAL", e)
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join()
