"""A search confined to a path (`--path`, `.results?k=N&path=P`) finds the files under it even when the whole
store's best matches all lie elsewhere (a narrow path by comparing its own chunks, a wide one by digging
deeper into the whole store's rankings); `-k` above the 20 of a result directory works through a mount too.

A crowd of 120 notes matches the query better, in words and in meaning, than the one note under `archive/`:
the first 50 candidates of each side of the hybrid search are all crowd notes, so filtering only those would
find nothing.  Through the VFS over a real store indexed with the model-free `hashing-384` embedder, with the
mount daemon's own control tree (`mountd.daemon._control_tree`) so `.clawfs/` lookups run the real engine.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator

import pytest
from helpers import open_as_mount, vfs_write_tree

from clawfs.control import MAX_HITS, parse_results_name, results_name
from clawfs.errors import FsError
from clawfs.index import engine, querying
from clawfs.index.engine import CANDIDATES, IndexCore
from clawfs.router import Router
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS
from mountd.daemon import _control_tree, _SearchConnection

PW = b"filters passphrase"
QUERY = "telescope grant budget mirror"
CROWD = {f"crowd/{i:03d}.md".encode(): (f"# Telescope grant {i}\n\nThe telescope grant budget for mirror "
                                        f"number {i}: the grant covers the mirror and the telescope budget.\n"
                                        ).encode() for i in range(120)}
ARCHIVE = b"archive/old-grant.md"
FILES = {**CROWD,
         ARCHIVE: b"# Old notes\n\nAn old telescope grant: its mirror budget, long spent.\n",
         b"archive/garden.md": b"# Garden\n\nPlant tomatoes and basil in the raised bed.\n"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Router, Store, IndexCore]]:
    path = str(tmp_path_factory.mktemp("filters") / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store, master = open_as_mount(path, PW)
    core = IndexCore.load(store, "hashing-384")
    searches = _SearchConnection(path, master)
    vfs = Router(VFS(store), _control_tree(store, core, searches))
    inos = vfs_write_tree(vfs, FILES)
    engine.index_files(store, core, [(ino, None) for ino in inos.values()])
    try:
        yield vfs, store, core
    finally:
        searches.close()
        store.close()


def paths(hits: list[engine.Hit]) -> list[bytes]:
    return [h.path for h in hits]


def test_the_crowd_fills_every_candidate_of_an_unfiltered_search(indexed: tuple[Router, Store, IndexCore]) -> None:
    """The premise of the tests below: unfiltered, the archive note is not among the candidates at all."""
    _, store, core = indexed
    found = paths(engine.search(store, core, QUERY, k=2 * CANDIDATES).hits)
    assert len(found) >= CANDIDATES and ARCHIVE not in found, found


def test_a_narrow_prefix_finds_its_file_behind_the_crowd(indexed: tuple[Router, Store, IndexCore]) -> None:
    _, store, core = indexed
    for prefix in (b"archive", b"archive/", b"/archive/"):
        found = paths(engine.search(store, core, QUERY, k=3, path_prefix=prefix).hits)
        assert found[:1] == [ARCHIVE], (prefix, found)
        assert all(p.startswith(b"archive/") for p in found), found
    assert engine.search(store, core, QUERY, k=3, path_prefix=b"nowhere").hits == []
    assert engine.search(store, core, QUERY, k=3, path_prefix=b"archiv").hits == [], "a prefix is whole names"


def test_similar_with_a_prefix_finds_its_file_behind_the_crowd(indexed: tuple[Router, Store, IndexCore]) -> None:
    vfs, store, core = indexed
    crowd0 = vfs.lookup(vfs.lookup(ROOT, b"crowd").ino, b"000.md").ino
    unfiltered = engine.similar(store, core, crowd0, k=CANDIDATES)
    assert unfiltered is not None and ARCHIVE not in paths(unfiltered)
    found = engine.similar(store, core, crowd0, k=2, path_prefix=b"archive")
    assert found is not None and paths(found)[:1] == [ARCHIVE], found and paths(found)


def test_a_confined_search_compares_its_own_chunks_without_digging(
        indexed: tuple[Router, Store, IndexCore], monkeypatch: pytest.MonkeyPatch) -> None:
    """The few chunks under a path are compared with the query themselves: with digging off (MAX_CANDIDATES at
    the first round's depth), the archive note is still found behind the crowd, by search and by similar."""
    vfs, store, core = indexed
    monkeypatch.setattr(querying, "MAX_CANDIDATES", CANDIDATES)
    found = paths(engine.search(store, core, QUERY, k=3, path_prefix=b"archive").hits)
    assert found[:1] == [ARCHIVE], found
    assert paths(engine.search(store, core, QUERY, k=3, path_prefix=ARCHIVE).hits) == [ARCHIVE], "a file"
    crowd0 = vfs.lookup(vfs.lookup(ROOT, b"crowd").ino, b"000.md").ino
    like = engine.similar(store, core, crowd0, k=2, path_prefix=b"archive")
    assert like is not None and paths(like)[:1] == [ARCHIVE], like and paths(like)


def test_a_wide_path_filters_the_whole_store_rankings(
        indexed: tuple[Router, Store, IndexCore], monkeypatch: pytest.MonkeyPatch) -> None:
    """Above SCOPE_CHUNKS the walk gives up and the whole store's fused ranking is filtered as it is read
    (`_dig`).  Its ranks count the chunks refused too, so scores differ a little from those of the path's own
    ranking; the files found are the path's, and the best one is the same."""
    _, store, core = indexed
    dug: list[object] = []
    real_dig = querying.Query.dig
    monkeypatch.setattr(querying.Query, "dig", lambda *a: dug.append(a) or real_dig(*a))
    scoped = paths(engine.search(store, core, QUERY, k=8, path_prefix=b"crowd").hits)
    assert not dug and len(scoped) == 8 and all(p.startswith(b"crowd/") for p in scoped), scoped
    monkeypatch.setattr(querying, "SCOPE_CHUNKS", 10)
    filtered = paths(engine.search(store, core, QUERY, k=8, path_prefix=b"crowd").hits)
    assert dug and len(filtered) == 8 and all(p.startswith(b"crowd/") for p in filtered), filtered
    assert filtered[0] == scoped[0]


def read_ctl(vfs: Router, *names: bytes) -> list[dict[str, object]]:
    """Look up `.clawfs/<names...>` a component at a time, as the kernel does, and parse the JSON file there."""
    ino = vfs.lookup(ROOT, b".clawfs").ino
    for name in names:
        ino = vfs.lookup(ino, name).ino
    fh = vfs.open(ino, os.O_RDONLY)
    try:
        data: list[dict[str, object]] = json.loads(vfs.read(fh, 0, 1 << 22))
    finally:
        vfs.release(fh)
    return data


def test_results_files_of_the_mount_take_k_and_a_prefix(indexed: tuple[Router, Store, IndexCore]) -> None:
    vfs, _, _ = indexed
    q = QUERY.encode()
    assert len(read_ctl(vfs, b"search", q, b".results.json")) == MAX_HITS
    many = read_ctl(vfs, b"search", q, results_name(45, None))
    assert [r["rank"] for r in many] == list(range(1, 46))
    confined = read_ctl(vfs, b"search", q, results_name(3, b"archive"))
    assert [r["path"] for r in confined][:1] == [ARCHIVE.decode()], confined
    like = read_ctl(vfs, b"similar", b"crowd", b"000.md", results_name(2, b"archive"))
    assert [r["path"] for r in like][:1] == [ARCHIVE.decode()], like
    qdir = vfs.lookup(vfs.lookup(vfs.lookup(ROOT, b".clawfs").ino, b"search").ino, q).ino
    listed = [name for name, _, _ in vfs.readdir(vfs.opendir(qdir), 0)]
    assert not [n for n in listed if n.startswith(b".results")], f"hidden files listed: {listed}"
    for bad in (b".results?k=0", b".results?k=1001", b".results?k=x", b".results?k=3&k=4", b".results?q=3",
                b".results?path"):
        with pytest.raises(FsError) as e:
            vfs.lookup(qdir, bad)
        assert e.value.errno == errno.ENOENT, bad


def test_results_name_round_trips_any_prefix() -> None:
    for prefix in (None, b"archive", b"a b/c&d=e%f?g", b"caf\xe9/notes", b"/x/"):
        name = results_name(7, prefix)
        assert len(name) <= 255 and b"/" not in name, name
        k, back = parse_results_name(name) or (None, None)
        assert k == 7 and back == (prefix.strip(b"/") if prefix else None), (prefix, name, back)
    assert parse_results_name(b".results.json") is None
    assert parse_results_name(b".results?path=x") == (MAX_HITS, b"x")
