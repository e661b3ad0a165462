"""A store written by an older ClawFS opens in this one: its schema is migrated in place, nothing is lost, and a
wrong passphrase leaves it as it was.

The old store is made by this code with the migration list cut short, which is exactly the schema an older
release created (migrations are append-only and never edited once released), and with the inode insert of that
release (the columns of its schema).  A v4 store with files in it is made by writing them with this release and
taking migration 5 off again (its columns dropped, its record removed): the contents, names and key slots are
sealed the same way in v4 and v5, so what is left is the v4 file an older release wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import vfs_write_tree

from clawfs import FORMAT_VERSION, fsck, integrity
from clawfs.db import database, schema
from clawfs.errors import IntegrityError, UserError
from clawfs.keys import Credentials
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

PW = b"upgrade passphrase"
CTX = Ctx(uid=0, gid=0)
BIG = bytes(range(256)) * 4096  # 1 MiB: a value large enough to spill into overflow pages


V4_INODE_COLUMNS = database.INODE_COLUMNS.rsplit(",", 2)[0]


def _v4_inode_insert(self: database.Database, row: database.InodeRow) -> int:
    """The inode insert of a v3/v4 release: no block sum, no MAC."""
    values = (row.id or None, row.generation, row.mode, row.uid, row.gid, row.nlink, row.size, row.rdev,
              row.atime_ns, row.mtime_ns, row.ctime_ns, row.nblocks, row.parent, row.target, row.flags)
    self.conn.execute(f"INSERT INTO inodes ({V4_INODE_COLUMNS}) VALUES ({', '.join('?' * 15)})", values)
    return int(self.conn.last_insert_rowid())


def make_old_store(path: Path, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at schema `version` (3 or 4) holding index metadata with a large value."""
    assert version in (3, 4)
    with monkeypatch.context() as m:
        m.setattr(database, "MIGRATIONS", schema.MIGRATIONS[:version])
        m.setattr(database, "LATEST", version)
        m.setattr(database.Database, "inode_insert", _v4_inode_insert)
        m.setattr(integrity.Root, "reseal", lambda self, total=None: None)  # no store root before v5
        Store.create(str(path), [("passphrase", PW)], block_size=4096, kdf="scrypt")
        db = database.Database(str(path))
        try:
            assert db.schema_version() == version
            with db.transaction():
                db.conn.execute("INSERT INTO index_meta VALUES ('snapshot', ?), ('embedder', 'hashing-384')", (BIG,))
        finally:
            db.conn.close()


def table_sql(db: database.Database, name: str) -> str:
    row = db.conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return str(row[0])


def applied_migrations(db: database.Database) -> list[int]:
    return [int(r[0]) for r in db.conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_v3_store_upgrades_to_rowid_index_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.claw"
    make_old_store(path, 3, monkeypatch)
    db = database.Database(str(path))
    assert "WITHOUT ROWID" in table_sql(db, "index_meta")
    db.conn.close()

    store = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        # The schema itself is the database layer's, not the store's: read it over a connection of its own (the
        # store has committed the upgrade) instead of through the store's private one.
        db = database.Database(str(path), readonly=True)
        try:
            assert db.schema_version() == schema.LATEST == 5
            assert "WITHOUT ROWID" not in table_sql(db, "index_meta")
            assert applied_migrations(db) == [1, 2, 3, 4, 5]
        finally:
            db.disconnect()
        tables = store.index
        assert tables.meta("snapshot") == BIG
        assert tables.meta("embedder") == "hashing-384"
        assert tables.meta("absent") is None
        vfs = VFS(store)
        fh, attr = vfs.create(ROOT, b"after-upgrade.txt", 0o100644, os.O_RDWR, CTX)
        vfs.write(fh, 0, b"written after the upgrade")
        assert vfs.read(fh, 0, 100) == b"written after the upgrade"
        vfs.release(fh)
        assert store.get(attr.ino).flags == 0  # the version 3 column is there and read
    finally:
        store.close()


def test_wrong_passphrase_leaves_old_store_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.claw"
    make_old_store(path, 3, monkeypatch)
    with pytest.raises(UserError):
        Store.open(str(path), Credentials(passphrases=[b"not the passphrase"]))
    db = database.Database(str(path))
    try:
        assert db.schema_version() == 3
        assert "WITHOUT ROWID" in table_sql(db, "index_meta")
    finally:
        db.conn.close()


FILES = {b"notes/MEMORY.md": b"remember this\n" * 500, b"big.bin": bytes(range(256)) * 100, b"empty": b"",
         b"secrets/key": b"sk-not-for-reading"}


def make_v4_store_with_files(path: Path) -> dict[bytes, int]:
    """A v4 store holding FILES (one of them a secret, one spanning blocks) and a symlink."""
    Store.create(str(path), [("passphrase", PW)], block_size=4096, kdf="scrypt")
    store = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        vfs = VFS(store)
        vfs.mkdir(ROOT, b"secrets", 0o700, CTX)
        inos = vfs_write_tree(vfs, FILES)
        vfs.symlink(ROOT, b"link", b"notes/MEMORY.md", CTX)
    finally:
        store.close()
    db = database.Database(str(path))
    try:
        with db.transaction():
            for sql in ("DROP INDEX blocks_tags", "ALTER TABLE blocks DROP COLUMN tag",
                        "ALTER TABLE dentries DROP COLUMN mac", "ALTER TABLE inodes DROP COLUMN mac",
                        "ALTER TABLE inodes DROP COLUMN bsum", "DELETE FROM meta WHERE key = 'root'",
                        "DELETE FROM schema_migrations WHERE version = 5", "PRAGMA user_version = 4"):
                db.conn.execute(sql)
    finally:
        db.close()
    return inos


def test_v4_store_gets_macs_on_first_read_write_open(tmp_path: Path) -> None:
    path = tmp_path / "v4.claw"
    inos = make_v4_store_with_files(path)
    db = database.Database(str(path), readonly=True)
    assert db.schema_version() == 4
    db.disconnect()
    with pytest.raises(UserError, match="upgraded"):  # read-only cannot upgrade, and must not guess
        Store.open(str(path), Credentials(passphrases=[PW]), readonly=True)

    store = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        report = fsck.check(store)
        assert report.clean, report.problems
        assert store.root_authentic()
        vfs = VFS(store)
        for name, data in FILES.items():
            if not name.startswith(b"secrets/"):
                assert store.read(store.get(inos[name]), 0, len(data) + 10) == data
        assert store.get(inos[b"secrets/key"]).flags == 1
        assert vfs.readlink(vfs.lookup(ROOT, b"link").ino) == b"notes/MEMORY.md"
        fh, _attr = vfs.create(ROOT, b"new.txt", 0o100644, os.O_RDWR, CTX)
        vfs.write(fh, 0, b"after the upgrade")
        vfs.release(fh)
        assert fsck.check(store).clean
    finally:
        store.close()
    db = database.Database(str(path), readonly=True)
    try:
        assert applied_migrations(db) == [1, 2, 3, 4, 5]
        assert db.conn.execute("SELECT count(*) FROM inodes WHERE mac IS NULL OR bsum IS NULL").fetchone()[0] == 0
        assert db.conn.execute("SELECT count(*) FROM dentries WHERE mac IS NULL").fetchone()[0] == 0
        assert db.conn.execute("SELECT count(*) FROM blocks WHERE tag IS NULL").fetchone()[0] == 0
    finally:
        db.disconnect()


def test_v4_store_edited_before_upgrade_is_trusted_then_guarded(tmp_path: Path) -> None:
    """The upgrade MACs what the v4 store holds (it had nothing to check it against); an edit made after the
    upgrade is caught as in any v5 store."""
    path = tmp_path / "v4.claw"
    inos = make_v4_store_with_files(path)
    Store.open(str(path), Credentials(passphrases=[PW])).close()
    db = database.Database(str(path))
    try:
        with db.transaction():
            db.conn.execute("UPDATE inodes SET flags = 0 WHERE id = ?", (inos[b"secrets/key"],))
    finally:
        db.close()
    store = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        with pytest.raises(IntegrityError):
            store.get(inos[b"secrets/key"])
        problems = fsck.check(store).problems
        assert [(p.kind, p.inode) for p in problems if p.kind == "inode"] == [("inode", inos[b"secrets/key"])]
    finally:
        store.close()


def test_format_version_is_the_newest_migration() -> None:
    """`clawfs info` reports the schema version; the format the program writes must be that same number."""
    assert FORMAT_VERSION == schema.LATEST
