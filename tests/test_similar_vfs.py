"""`.clawfs/similar/<path>/` without the kernel: the control tree alone (bounds, directories turning into files),
then the router calls the FUSE adapter makes over a real store indexed with the model-free `hashing-384` embedder
(similar in words, which is enough to check the plumbing; tests/test_similar_mount.py checks meaning with the
real model through a real mount)."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from helpers import open_as_mount, vfs_write_tree

from clawfs.control import MAX_SIMILAR, ControlTree
from clawfs.errors import FsError
from clawfs.index import engine
from clawfs.index.engine import IndexCore
from clawfs.index.hits import Hit
from clawfs.router import Router
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx
from mountd.daemon import _control_tree, _SearchConnection

CTX = Ctx(uid=0, gid=0)
PW = b"pw"
SCORES = "user.clawfs.scores"

NOTES = {
    b"notes/dog.md": b"# Rex\n\nThe dog went to the vet for his rabies vaccination; the vet checked the dog's teeth "
                     b"and weighed the dog.\n",
    b"notes/puppy.md": b"# Puppy\n\nThe vet gave the puppy a vaccination and says the dog needs worming tablets; "
                       b"the dog's teeth are fine.\n",
    b"money/taxes.md": b"# Taxes\n\nFile the tax return with every invoice and receipt before the deadline; the "
                       b"accountant sends the invoice totals.\n",
    b"money/invoices.md": b"# Invoices\n\nSend the invoice for March, chase the unpaid invoice from February and "
                          b"keep each receipt for the tax return.\n",
    b"garden.md": b"# Garden\n\nPlant tomatoes and basil in the raised bed, water the seedlings each morning and "
                  b"mulch against weeds.\n",
}


# -- the control tree alone --------------------------------------------------------------------------------------
class FakeIndex:
    """A SimilarFn over a dict: path -> "dir" or hit paths; records what it was asked."""

    def __init__(self, tree: dict[bytes, list[bytes] | Literal["dir"]]) -> None:
        self.tree = tree
        self.asked: list[bytes] = []

    def __call__(self, path: bytes, k: int, prefix: bytes | None) -> list[Hit] | Literal["dir"] | None:
        self.asked.append(path)
        found = self.tree.get(path)
        if found is None or found == "dir":
            return found
        return [Hit(0, p, 1.0 / (i + 1), 0.9, "") for i, p in enumerate(found)]


def ctl_tree(index: FakeIndex) -> ControlTree:
    return ControlTree(None, dict, 0, 0, similar=index)


def walk(tree: ControlTree, path: bytes) -> int | None:
    """Look up `.clawfs/similar/<path>` a component at a time, as the kernel does; the inode or None."""
    ino = tree.similar_ino
    for name in path.split(b"/"):
        node = tree.lookup(ino, name)
        if node is None:
            return None
        ino = node.ino
    return ino


def test_tree_walks_directories_to_results_with_links_up_to_the_root() -> None:
    index = FakeIndex({b"a": "dir", b"a/b": "dir", b"a/b/c.md": [b"x.md", b"a/y.md"], b"top.md": [b"a/b/c.md"]})
    tree = ctl_tree(index)
    assert sorted(name for name, _ in tree.listing(tree.root)) == [b"search", b"similar", b"status"]
    ino = walk(tree, b"a/b/c.md")
    assert ino is not None and index.asked == [b"a", b"a/b", b"a/b/c.md"]
    links = {name: node.data for name, node in tree.listing(ino)}
    assert links == {b"01-x.md": b"../../../../../x.md", b"02-y.md": b"../../../../../a/y.md"}
    assert b".results.json" in tree.nodes[ino].children, "the hidden .results.json is missing"
    top = walk(tree, b"top.md")
    assert top is not None
    assert [n.data for _, n in tree.listing(top)] == [b"../../../a/b/c.md"]
    assert tree.nodes[top].xattrs[SCORES.encode()] == b"01 1.000000 a/b/c.md"
    assert walk(tree, b"missing.md") is None and walk(tree, b"a/missing") is None
    assert sorted(name for name, _ in tree.listing(tree.similar_ino)) == [b"a", b"top.md"]


def test_tree_follows_a_directory_that_became_a_file_and_a_path_that_went() -> None:
    index = FakeIndex({b"p": "dir", b"p/q.md": [b"r.md"]})
    tree = ctl_tree(index)
    first = walk(tree, b"p/q.md")
    assert first is not None
    index.tree = {b"p": [b"s.md"]}  # `p` is now a file
    p = walk(tree, b"p")
    assert p is not None and [n.data for _, n in tree.listing(p)] == [b"../../../s.md"]
    assert first not in tree.nodes, "the old result directory under the old directory p/ was kept"
    index.tree = {}
    assert walk(tree, b"p") is None
    assert p not in tree.nodes and tree.listing(tree.similar_ino) == []


def test_tree_stays_bounded_but_a_deep_path_still_resolves() -> None:
    files = {b"d%03d.md" % i: [b"other.md"] for i in range(3 * MAX_SIMILAR)}
    deep = b"/".join(b"level%02d" % i for i in range(MAX_SIMILAR + 5))
    dirs: dict[bytes, list[bytes] | Literal["dir"]] = {deep[:i]: "dir" for i in range(len(deep))
                                                       if deep[i:i + 1] == b"/"}
    index = FakeIndex({**files, **dirs, deep: "dir", deep + b"/leaf.md": [b"other.md"]})
    tree = ctl_tree(index)
    for path in files:
        assert walk(tree, path) is not None
    assert len(tree.listing(tree.similar_ino)) <= MAX_SIMILAR
    assert len(tree.nodes) < 5 + MAX_SIMILAR * 3, f"{len(tree.nodes)} nodes kept"
    leaf = walk(tree, deep + b"/leaf.md")
    assert leaf is not None and leaf in tree.nodes, "eviction cut the path that was just walked"
    assert tree.nodes[leaf].children, "the deep result directory is empty"
    assert walk(tree, b"d000.md") is not None  # an evicted one is simply made again


# -- through the VFS over an indexed store ----------------------------------------------------------------------
@pytest.fixture
def indexed(tmp_path: Path) -> Iterator[tuple[Router, dict[bytes, int]]]:
    """A store holding NOTES (and an empty file, indexed with no chunks), all indexed, behind a VFS and the
    control tree the mount daemon builds."""
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store, master = open_as_mount(path, PW)
    core = IndexCore.load(store, "hashing-384")
    vfs = Router(VFS(store), _control_tree(store, core, _SearchConnection(path, master)))
    inos = vfs_write_tree(vfs, {**NOTES, b"empty.md": b""})
    for ino in inos.values():
        engine.index_file(store, core, ino)
    yield vfs, inos
    store.close()


def ctl_walk(vfs: Router, path: bytes) -> int:
    ino = vfs.lookup(vfs.lookup(ROOT, b".clawfs").ino, b"similar").ino
    for name in path.split(b"/"):
        ino = vfs.lookup(ino, name).ino
    return ino


def listing(vfs: Router, ino: int) -> list[tuple[bytes, bytes]]:
    """readdir then readlink of each entry, as `ls -l` would."""
    fh = vfs.opendir(ino)
    names = [name for name, _, _ in vfs.readdir(fh, 0) if name not in (b".", b"..")]
    for name in names:
        assert stat.S_ISLNK(vfs.lookup(ino, name).mode), f"{name!r} is not a symlink"
    return [(name, vfs.readlink(vfs.lookup(ino, name).ino)) for name in names]


def test_similar_lists_the_other_dog_note_first_and_not_itself(indexed: tuple[Router, dict[bytes, int]]) -> None:
    vfs, _ = indexed
    rdir = ctl_walk(vfs, b"notes/dog.md")
    assert stat.S_ISDIR(vfs.getattr(rdir).mode)
    hits = listing(vfs, rdir)
    assert hits and hits[0] == (b"01-puppy.md", b"../../../../notes/puppy.md"), hits
    assert all(target != b"../../../../notes/dog.md" for _, target in hits), f"the file lists itself: {hits}"
    lines = vfs.getxattr(rdir, SCORES.encode()).decode().splitlines()
    parsed = [line.split(" ", 2) for line in lines]
    assert [(r, p) for r, _, p in parsed] == [(f"{i:02d}", t.decode()[len("../../../../"):])
                                              for i, (_, t) in enumerate(hits, 1)]
    scores = [float(s) for _, s, _ in parsed]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0, scores
    fh = vfs.open(vfs.lookup(rdir, b".results.json").ino, os.O_RDONLY)
    results = json.loads(vfs.read(fh, 0, 1 << 20))
    vfs.release(fh)
    assert [r["path"] for r in results] == [p for _, _, p in parsed]
    assert results[0]["snippet"] and results[0]["snippet"] in " ".join(NOTES[b"notes/puppy.md"].decode().split())
    top = listing(vfs, ctl_walk(vfs, b"money/invoices.md"))
    assert top[0] == (b"01-taxes.md", b"../../../../money/taxes.md"), top


def test_missing_unindexed_and_non_files_answer_enoent(indexed: tuple[Router, dict[bytes, int]]) -> None:
    vfs, _ = indexed
    for path in (b"nope.md", b"notes/nope.md", b"nope/dog.md", b"empty.md", b"notes/dog.md/x",
                 b"garden.md/notes"):
        with pytest.raises(FsError) as e:
            ctl_walk(vfs, path)
        assert e.value.errno == errno.ENOENT, path
    notes = ctl_walk(vfs, b"notes")  # a directory: a plain directory to walk through
    assert stat.S_ISDIR(vfs.getattr(notes).mode)
    with pytest.raises(FsError) as e:
        vfs.mkdir(notes, b"x", 0o755, CTX)
    assert e.value.errno in (errno.EROFS, errno.EACCES)


def test_results_follow_a_rename(indexed: tuple[Router, dict[bytes, int]]) -> None:
    vfs, _ = indexed
    notes = vfs.lookup(ROOT, b"notes").ino
    rdir = ctl_walk(vfs, b"notes/dog.md")
    vfs.rename(notes, b"puppy.md", ROOT, b"young-dog.md")
    assert ctl_walk(vfs, b"notes/dog.md") == rdir, "the result directory changed its inode number"
    assert listing(vfs, rdir)[0] == (b"01-young-dog.md", b"../../../../young-dog.md")
