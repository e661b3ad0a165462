"""`clawfs search` and `clawfs reindex` given bad or awkward input: each answer names the problem (and the fix),
exits non-zero when nothing was found or done, and changes nothing.

Files (one with a name that is not valid UTF-8) are written through a real mount with the index off; the store
is then searched unmounted (`--store`) with the model-free `hashing-384` embedder: what is checked here is the
command line, not meaning (tests/test_index_mount.py does that with the real model).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import StoreFixture, make_store, run

pytestmark = [pytest.mark.fuse]

ODD_NAME = b"caf\xe9-notes.md"  # Latin-1, not UTF-8
GRANT = b"The telescope grant application is due in March; ask Ada about the budget.\n"


@pytest.fixture
def store(tmp_path: Path) -> StoreFixture:
    s = make_store(tmp_path)
    mnt = tmp_path / "mnt"
    s.mount(mnt)  # index off: the store has files and no index yet
    try:
        (mnt / "garden.md").write_text("Plant tomatoes and basil in the raised bed.\n")
        with open(bytes(mnt) + b"/" + ODD_NAME, "wb") as f:
            f.write(GRANT)
    finally:
        s.umount(mnt)
    return s


def search(s: StoreFixture, *args: str) -> subprocess.CompletedProcess[str]:
    return run("search", *args, "--store", str(s.path), *s.key_args(), check=False)


def test_search_before_any_index_says_how_to_make_one(store: StoreFixture) -> None:
    proc = search(store, "telescope")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "has no index yet" in proc.stderr and "clawfs reindex" in proc.stderr, proc.stderr


def test_unknown_embedder_is_refused_by_name(store: StoreFixture) -> None:
    proc = run("reindex", str(store.path), *store.key_args(), "--embedder", "word2vec", check=False)
    assert proc.returncode == 1
    assert "unknown embedder 'word2vec'" in proc.stderr and "hashing-384" in proc.stderr, proc.stderr
    assert "has no index yet" in search(store, "telescope").stderr, "a refused reindex left an index behind"


def test_non_utf8_name_is_shown_pasteable_and_round_trips_in_json(store: StoreFixture) -> None:
    run("reindex", str(store.path), *store.key_args(), "--embedder", "hashing-384")
    proc = search(store, "telescope grant")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0].split(None, 2)
    assert first[:1] == ["1"], proc.stdout
    shown = first[2]
    assert shown == "$'caf\\351-notes.md'", proc.stdout
    assert "not valid UTF-8" in proc.stderr, proc.stderr
    pasted = subprocess.run(["bash", "-c", f"printf %s {shown}"], capture_output=True, check=True).stdout
    assert pasted == ODD_NAME  # what the user copies from the terminal names the file exactly

    out = json.loads(search(store, "telescope grant", "--json").stdout)
    assert out["hits"][0]["path"].encode("utf-8", "surrogateescape") == ODD_NAME


def test_too_long_query_is_cut_and_said_so(store: StoreFixture) -> None:
    run("reindex", str(store.path), *store.key_args(), "--embedder", "hashing-384")
    long_query = " ".join(["telescope"] * 300)
    out = json.loads(search(store, long_query, "--json").stdout)
    assert out["truncated"] is True and out["query_tokens"] == 300 and out["max_tokens"] == 256, out
    proc = search(store, long_query)
    assert "the query was cut to the model's 256 tokens" in proc.stderr, proc.stderr


def test_search_through_a_path_that_is_no_mount(tmp_path: Path) -> None:
    proc = run("search", "telescope", "--mount", str(tmp_path), check=False)
    assert proc.returncode == 1 and f"{tmp_path} is not a ClawFS mount" in proc.stderr, proc.stderr
