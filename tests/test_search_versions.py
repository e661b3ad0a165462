"""Earlier versions of a document (`.versions/<path>/<n>`, clawfs/home.py) are indexed but left out of searches
and similar-file lists, unless the search is confined to a `.versions/` directory or the file asked about is an
earlier version itself.

Through the VFS over a real store indexed with the model-free `hashing-384` embedder (the filtering is by path,
not by meaning).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import vfs_write_tree

from clawfs import home
from clawfs.index import engine
from clawfs.index.engine import IndexCore
from clawfs.keys import Credentials
from clawfs.store import Store
from clawfs.vfs import VFS, Ctx

CTX = Ctx(uid=0, gid=0)
PW = b"versions passphrase"
GRANT = b"# Memory\n\nThe grant application for the telescope is due on the first of March; ask Ada for the budget.\n"
FILES = {
    b"MEMORY.md": GRANT,
    b".versions/MEMORY.md/1.md": GRANT.replace(b"first of March", b"end of February"),
    b".versions/MEMORY.md/2.md": GRANT.replace(b"ask Ada", b"ask Grace"),
    b"notes/telescope.md": b"# Telescope\n\nThe grant budget for the telescope mirror and its mount; Ada has it.\n",
    b"notes/.versions/telescope.md/1.md": b"# Telescope\n\nThe grant budget for the telescope mirror; Ada has it.\n",
}


@pytest.fixture
def indexed(tmp_path: Path) -> Iterator[tuple[Store, IndexCore, dict[bytes, int]]]:
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store = Store.open(path, Credentials(passphrases=[PW]))
    core = IndexCore.load(store, "hashing-384")
    inos = vfs_write_tree(VFS(store), FILES)
    engine.index_files(store, core, [(ino, None) for ino in inos.values()])
    try:
        yield store, core, inos
    finally:
        store.close()


def paths(hits: list[engine.Hit]) -> list[bytes]:
    return [h.path for h in hits]


def test_is_version() -> None:
    assert home.is_version(b".versions/MEMORY.md/2.md")
    assert home.is_version(b"users/u1/.versions/daily/2026-01-01.md/3.md")
    assert not home.is_version(b"MEMORY.md")
    assert not home.is_version(b"notes/.versions")  # the directory itself is no earlier version
    assert not home.is_version(b"notes/versions/1.md")


def test_search_leaves_earlier_versions_out(indexed: tuple[Store, IndexCore, dict[bytes, int]]) -> None:
    store, core, _ = indexed
    assert core.vectors is not None and len(core.vectors) >= 4, "the versions were not indexed"
    found = paths(engine.search(store, core, "grant application telescope due", k=10).hits)
    assert found and found[0] == b"MEMORY.md", found
    assert not [p for p in found if home.is_version(p)], f"earlier versions listed: {found}"


def test_search_confined_to_versions_lists_them(indexed: tuple[Store, IndexCore, dict[bytes, int]]) -> None:
    store, core, _ = indexed
    found = paths(engine.search(store, core, "grant application telescope due", k=10,
                                path_prefix=b".versions/MEMORY.md").hits)
    assert sorted(found) == [b".versions/MEMORY.md/1.md", b".versions/MEMORY.md/2.md"], found


def test_similar_leaves_versions_out_unless_asked_about_one(
        indexed: tuple[Store, IndexCore, dict[bytes, int]]) -> None:
    store, core, inos = indexed
    of_current = engine.similar(store, core, inos[b"MEMORY.md"], k=10)
    assert of_current is not None
    assert paths(of_current) == [b"notes/telescope.md"], paths(of_current)
    of_old = engine.similar(store, core, inos[b".versions/MEMORY.md/1.md"], k=10)
    assert of_old is not None
    assert {b"MEMORY.md", b".versions/MEMORY.md/2.md"} <= set(paths(of_old)), paths(of_old)


def test_a_confined_search_leaves_the_versions_under_its_path_out(
        indexed: tuple[Store, IndexCore, dict[bytes, int]]) -> None:
    store, core, _ = indexed
    query = "telescope mirror grant budget"
    assert paths(engine.search(store, core, query, k=10, path_prefix=b"notes").hits) == [b"notes/telescope.md"]
    assert paths(engine.search(store, core, query, k=10, path_prefix=b"notes/.versions").hits) == \
        [b"notes/.versions/telescope.md/1.md"]
