"""kernel/mounts: the mount table as the kernel shows it, on real tmpfs mounts this test makes (root only), one
with a space in its path (mountinfo escapes it as \\040)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def mount_tmpfs(where: Path) -> None:
    if subprocess.run(["mount", "-t", "tmpfs", "clawfs-test", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(top, top/a mounted, top/a/with space mounted): two nested tmpfs mounts below a plain directory."""
    top = tmp_path / "top"
    outer, inner = top / "a", top / "a" / "with space"
    outer.mkdir(parents=True)
    made: list[Path] = []
    try:
        for where in (outer, inner):
            where.mkdir(exist_ok=True)
            mount_tmpfs(where)
            made.append(where)
        yield top, outer, inner
    finally:
        for where in reversed(made):
            subprocess.run(["umount", str(where)], check=True)


def test_mounts_under_lists_only_what_lies_strictly_below(tree: tuple[Path, Path, Path]) -> None:
    top, outer, inner = tree
    assert sorted(mounts.mounts_under(str(top))) == [str(outer), str(inner)]
    assert mounts.mounts_under(str(outer)) == [str(inner)], "a mount is not below itself"
    assert mounts.mounts_under(str(inner)) == []
    assert mounts.mounts_under(str(top) + "/") == mounts.mounts_under(str(top))
    assert mounts.mounts_under(str(top / "a-sibling")) == [], "a name sharing a prefix is not below it"


def test_mountpoints_are_found_and_unescaped(tree: tuple[Path, Path, Path]) -> None:
    top, outer, inner = tree
    assert mounts.is_mountpoint(str(outer)) and mounts.is_mountpoint(str(inner))
    assert not mounts.is_mountpoint(str(top))
    entry = mounts.find_by_mountpoint(str(inner))
    assert entry is not None and entry.fstype == "tmpfs" and entry.source == "clawfs-test"


def test_none_left_after_unmounting(tmp_path: Path) -> None:
    where = tmp_path / "m"
    where.mkdir()
    mount_tmpfs(where)
    try:
        assert mounts.mounts_under(str(tmp_path)) == [str(where)]
    finally:
        assert mounts.unmount(str(where)) is None
    assert mounts.mounts_under(str(tmp_path)) == []
