"""The shortest real-mount round trip: if this fails, nothing else will work."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import StoreFixture

pytestmark = pytest.mark.fuse


def test_write_read_remount(mounted: tuple[StoreFixture, Path]) -> None:
    store, mnt = mounted
    (mnt / "hello.txt").write_text("hello world\n")
    assert (mnt / "hello.txt").read_text() == "hello world\n"
    ino = (mnt / "hello.txt").stat().st_ino
    store.umount(mnt)
    store.mount(mnt)
    assert (mnt / "hello.txt").read_text() == "hello world\n"
    assert (mnt / "hello.txt").stat().st_ino == ino
