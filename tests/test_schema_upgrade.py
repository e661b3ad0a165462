"""A store written by an older ClawFS opens in this one: its schema is migrated in place, nothing is lost, and a
wrong passphrase leaves it as it was.

The old store is made by this code with the migration list cut short, which is exactly the schema an older
release created (migrations are append-only and never edited once released).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clawfs.db import database, schema
from clawfs.errors import UserError
from clawfs.keys import Credentials
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

PW = b"upgrade passphrase"
CTX = Ctx(uid=0, gid=0)
BIG = bytes(range(256)) * 4096  # 1 MiB: a value large enough to spill into overflow pages


def make_old_store(path: Path, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at schema `version` holding one file and index metadata with a large value."""
    with monkeypatch.context() as m:
        m.setattr(database, "MIGRATIONS", schema.MIGRATIONS[:version])
        m.setattr(database, "LATEST", version)
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
            assert db.schema_version() == schema.LATEST == 4
            assert "WITHOUT ROWID" not in table_sql(db, "index_meta")
            assert applied_migrations(db) == [1, 2, 3, 4]
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
