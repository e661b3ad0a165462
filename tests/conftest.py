"""Fixtures.  Every real-mount test ends with fsck as the oracle: the store must check clean."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import StoreFixture, is_mounted, make_store

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
