"""Tampering with an unmounted store through SQLite: fsck must find it, a mount must answer EIO (never wrong
bytes), keep serving every other file, and name the damage in its log.

The `mounted` fixture is not used: its oracle demands a clean fsck, and a tampered store is not clean.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults import clawfs, fsck_json, read_errno, safe_unmount, tamper
from helpers import StoreFixture, is_mounted

pytestmark = pytest.mark.fuse

BS = 64 * 1024  # the default block size


@dataclass
class Tree:
    store: StoreFixture
    mnt: Path
    files: dict[str, bytes]  # relative path -> content
    ino: dict[str, int]      # relative path (files and directories) -> inode number


def _rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def tree(store: StoreFixture) -> Iterator[Tree]:
    """A store holding a 4-block file, a sparse file with a hole at block 1, small files in two
    directories; unmounted again, so the test can tamper with it."""
    mnt = store.tmp / "mnt"
    files = {
        "victim.bin": _rand(1, 3 * BS + 100),
        "other.txt": b"this file is never touched\n",
        "dirA/a.txt": b"entry in dirA\n",
        "dirA/a2.txt": b"second entry in dirA\n",
        "dirB/b.txt": b"entry in dirB\n",
    }
    sparse_head, sparse_tail = _rand(2, BS), _rand(3, 100)
    store.mount(mnt)
    try:
        (mnt / "dirA").mkdir()
        (mnt / "dirB").mkdir()
        for name, data in files.items():
            (mnt / name).write_bytes(data)
        with open(mnt / "sparse.bin", "wb") as f:
            f.write(sparse_head)
            f.seek(2 * BS)
            f.write(sparse_tail)
        files["sparse.bin"] = sparse_head + bytes(BS) + sparse_tail
        ino = {name: (mnt / name).stat().st_ino for name in [*files, "dirA", "dirB"]}
    finally:
        store.umount(mnt)
    code, report, _ = fsck_json(store)
    assert code == 0 and report["clean"], f"the untouched store must check clean: {report['problems']}"
    yield Tree(store, mnt, files, ino)
    safe_unmount(store, mnt)


def _blocks(t: Tree, name: str) -> dict[int, bytes]:
    with tamper(t.store.path) as db:
        return {idx: bytes(data) for idx, data in
                db.execute("SELECT idx, data FROM blocks WHERE ino = ?", (t.ino[name],))}


def _problems(t: Tree) -> list[dict[str, Any]]:
    code, report, stderr = fsck_json(t.store)
    assert code == 4, f"fsck exited {code} on a tampered store (expected 4); report: {report}; {stderr}"
    assert not report["clean"]
    problems: list[dict[str, Any]] = report["problems"]
    assert problems, "fsck exit 4 but no problems listed"
    return problems


def _has(problems: list[dict[str, Any]], inode: int, block: int | None = None) -> bool:
    return any(p["inode"] == inode and (block is None or p["block"] == block) for p in problems)


def _check_rest_and_unmount(t: Tree, damaged: set[str], before: list[dict[str, Any]]) -> None:
    """While mounted: every undamaged file reads back exactly, the mount is still up and writable.  Then
    unmount: fsck reports exactly the damage it found before (the mount neither hid nor spread it)."""
    for name, data in t.files.items():
        if name not in damaged:
            assert (t.mnt / name).read_bytes() == data, f"{name} was not tampered with but reads differently"
    assert is_mounted(t.mnt), "the mount died after an integrity error"
    (t.mnt / "after.txt").write_bytes(b"still writable\n")
    assert (t.mnt / "after.txt").read_bytes() == b"still writable\n"
    t.store.umount(t.mnt)
    after = _problems(t)
    assert sorted(map(str, after)) == sorted(map(str, before)), (
        f"mounting changed what fsck finds:\nbefore: {before}\nafter:  {after}")


def _assert_eio(t: Tree, name: str) -> None:
    err = read_errno(t.mnt / name)
    assert err == errno.EIO, (f"reading tampered {name} gave "
                              f"{'its bytes' if err is None else errno.errorcode.get(err, err)}, expected EIO")


def test_flipped_byte_in_block(tree: Tree) -> None:
    t, victim = tree, tree.ino["victim.bin"]
    blob = bytearray(_blocks(t, "victim.bin")[1])
    blob[40] ^= 0x01
    with tamper(t.store.path) as db:
        db.execute("UPDATE blocks SET data = ? WHERE ino = ? AND idx = 1", (bytes(blob), victim))

    problems = _problems(t)
    assert _has(problems, victim, 1), f"fsck does not name inode {victim} block 1: {problems}"
    assert all(p["inode"] == victim for p in problems), f"fsck blames untouched inodes: {problems}"
    plain = clawfs("fsck", str(t.store.path), *t.store.key_args())
    assert plain.returncode == 4 and f"inode {victim} block 1" in plain.stdout, plain.stdout + plain.stderr

    t.store.mount(t.mnt)
    _assert_eio(t, "victim.bin")
    assert f"inode {victim} block 1" in t.store.log_text(), (
        f"the mount log does not name inode {victim} block 1:\n{t.store.log_text()}")
    _check_rest_and_unmount(t, {"victim.bin"}, problems)


def test_swapped_blocks_of_one_file(tree: Tree) -> None:
    t, victim = tree, tree.ino["victim.bin"]
    blocks = _blocks(t, "victim.bin")
    with tamper(t.store.path) as db:
        db.execute("UPDATE blocks SET data = ? WHERE ino = ? AND idx = 0", (blocks[1], victim))
        db.execute("UPDATE blocks SET data = ? WHERE ino = ? AND idx = 1", (blocks[0], victim))

    problems = _problems(t)
    assert _has(problems, victim, 0) and _has(problems, victim, 1), (
        f"fsck does not name both swapped blocks 0 and 1 of inode {victim}: {problems}")
    assert all(p["inode"] == victim for p in problems), f"fsck blames untouched inodes: {problems}"

    t.store.mount(t.mnt)
    _assert_eio(t, "victim.bin")
    log = t.store.log_text()
    assert f"inode {victim} block 0" in log or f"inode {victim} block 1" in log, (
        f"the mount log does not name a swapped block of inode {victim}:\n{log}")
    _check_rest_and_unmount(t, {"victim.bin"}, problems)


def _move_block(t: Tree) -> tuple[int, int]:
    """Move block 1 of victim.bin into the hole at block 1 of sparse.bin (same index, other inode)."""
    victim, sparse = t.ino["victim.bin"], t.ino["sparse.bin"]
    hole = 1
    assert hole not in _blocks(t, "sparse.bin"), "sparse.bin should have a hole at block 1"
    with tamper(t.store.path) as db:
        db.execute("UPDATE blocks SET ino = ? WHERE ino = ? AND idx = 1", (sparse, victim))
    return victim, sparse


def test_block_moved_to_another_inode(tree: Tree) -> None:
    t = tree
    victim, sparse = _move_block(t)

    problems = _problems(t)
    assert _has(problems, sparse, 1), f"fsck does not name the moved block (inode {sparse} block 1): {problems}"
    assert _has(problems, victim), f"fsck does not notice inode {victim} lost a block: {problems}"

    t.store.mount(t.mnt)
    _assert_eio(t, "sparse.bin")
    assert f"inode {sparse} block 1" in t.store.log_text(), (
        f"the mount log does not name inode {sparse} block 1:\n{t.store.log_text()}")
    _check_rest_and_unmount(t, {"victim.bin", "sparse.bin"}, problems)


def test_block_moved_away_never_reads_as_zeros(tree: Tree) -> None:
    """The file that lost a block is damaged too: its missing block must not read as a hole of zeros."""
    t = tree
    victim, _ = _move_block(t)
    problems = _problems(t)
    assert _has(problems, victim), f"fsck does not notice inode {victim} lost a block: {problems}"

    t.store.mount(t.mnt)
    err = read_errno(t.mnt / "victim.bin")
    if err is None:
        got = (t.mnt / "victim.bin").read_bytes()
        lost = got[BS:2 * BS] == bytes(BS)
        pytest.fail(f"victim.bin (inode {victim}) lost block 1 but reads without error"
                    f"{' with 64 KiB of zeros in its place' if lost else ''}; expected EIO")
    assert err == errno.EIO, errno.errorcode.get(err, err)
    assert f"inode {victim}" in t.store.log_text()
    _check_rest_and_unmount(t, {"victim.bin", "sparse.bin"}, problems)


def _dentry_of(t: Tree, name: str) -> tuple[int, bytes]:
    with tamper(t.store.path) as db:
        rows = db.execute("SELECT id, name FROM dentries WHERE ino = ?", (t.ino[name],)).fetchall()
    assert len(rows) == 1, rows
    return int(rows[0][0]), bytes(rows[0][1])


def _assert_unreachable(t: Tree, path: str) -> None:
    try:
        data = (t.mnt / path).read_bytes()
    except OSError as e:
        assert e.errno in (errno.ENOENT, errno.EIO), f"{path}: unexpected {errno.errorcode.get(e.errno or 0)}"
    else:
        pytest.fail(f"{path} is still readable ({len(data)} bytes) through a tampered entry")


def test_modified_entry_name(tree: Tree) -> None:
    t, dir_a = tree, tree.ino["dirA"]
    entry_id, name = _dentry_of(t, "dirA/a.txt")
    blob = bytearray(name)
    blob[-1] ^= 0x80
    with tamper(t.store.path) as db:
        db.execute("UPDATE dentries SET name = ? WHERE id = ?", (bytes(blob), entry_id))

    problems = _problems(t)
    assert _has(problems, dir_a), f"fsck does not name directory {dir_a}: {problems}"
    assert any(f"entry {entry_id}" in p["message"] for p in problems), f"fsck does not name entry {entry_id}"

    t.store.mount(t.mnt)
    assert sorted(os.listdir(t.mnt / "dirA")) == ["a2.txt"], (
        "a directory with a tampered entry must list its good entries and hide (not garble) the bad one")
    _assert_unreachable(t, "dirA/a.txt")
    assert f"directory {dir_a}" in t.store.log_text(), (
        f"the mount log does not name directory {dir_a}:\n{t.store.log_text()}")
    _check_rest_and_unmount(t, {"dirA/a.txt"}, problems)


def test_entry_moved_to_another_directory(tree: Tree) -> None:
    t, dir_a, dir_b = tree, tree.ino["dirA"], tree.ino["dirB"]
    entry_id, _ = _dentry_of(t, "dirA/a.txt")
    with tamper(t.store.path) as db:
        db.execute("UPDATE dentries SET parent = ? WHERE id = ?", (dir_b, entry_id))

    problems = _problems(t)
    assert _has(problems, dir_b), f"fsck does not name directory {dir_b}, where the entry now is: {problems}"
    assert any(f"entry {entry_id}" in p["message"] for p in problems), f"fsck does not name entry {entry_id}"

    t.store.mount(t.mnt)
    assert sorted(os.listdir(t.mnt / "dirB")) == ["b.txt"], "the moved entry shows up in dirB"
    assert sorted(os.listdir(t.mnt / "dirA")) == ["a2.txt"]
    _assert_unreachable(t, "dirA/a.txt")
    _assert_unreachable(t, "dirB/a.txt")
    assert f"directory {dir_b}" in t.store.log_text(), (
        f"the mount log does not name directory {dir_b}:\n{t.store.log_text()}")
    assert f"directory {dir_a}" not in t.store.log_text()
    _check_rest_and_unmount(t, {"dirA/a.txt"}, problems)
