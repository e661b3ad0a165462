"""The vector index: exact and HNSW answers, deletes and replacement, growth, snapshots without disk, threads."""

from __future__ import annotations

import builtins
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from clawfs.index.vectors import _HEADER, IndexParams, SnapshotError, VectorIndex

DIM = 384


def clustered(n: int, dim: int = DIM, *, clusters: int = 200, spread: float = 1.0, seed: int = 0) -> NDArray[Any]:
    """Gaussian blobs around random centres: structured like embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    assign = rng.integers(0, clusters, n)
    return (centres[assign] + spread * rng.standard_normal((n, dim))).astype(np.float32)


def brute_force(base: NDArray[Any], queries: NDArray[Any], k: int) -> list[list[int]]:
    """Row numbers of the k most cosine-similar base vectors, computed independently of the module."""
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ b.T
    return [list(np.argsort(-row, kind="stable")[:k]) for row in sims]


def recall(found: list[list[tuple[int, float]]], truth: list[list[int]]) -> float:
    hits = sum(len({i for i, _ in f} & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


def test_similarities_among_ids_are_exact_in_either_mode() -> None:
    data = clustered(1_003, 64, clusters=20)
    base, queries = data[:1_000], data[1_000:]
    for exact_below in (10_000, 10):  # exact mode, and an HNSW graph (its matrix is what is compared)
        index = VectorIndex(64, exact_below=exact_below)
        index.add(list(range(1_000)), base)
        index.remove(7)
        asked = [500, 7, 3, 999, 5_000, 3]  # 7 removed and 5,000 never added are left out; order kept
        held, sims = index.similarities(queries, asked)
        assert held == [500, 3, 999, 3] and sims.shape == (3, 4)
        b = base[held] / np.linalg.norm(base[held], axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        assert sims == pytest.approx(q @ b.T, abs=1e-5)
    assert index.similarities(queries[0], [])[1].shape == (1, 0)


@pytest.fixture(scope="module")
def big() -> tuple[VectorIndex, NDArray[Any], NDArray[Any]]:
    data = clustered(20_200)
    base, queries = data[:20_000], data[20_000:]
    index = VectorIndex(DIM, ef=100, max_elements=20_000)
    index.add(np.arange(20_000), base)
    return index, base, queries


def test_exact_mode_matches_brute_force() -> None:
    data = clustered(2_050, 64, clusters=20)
    base, queries = data[:2_000], data[2_000:]
    index = VectorIndex(64)
    index.add(list(range(2_000)), base)
    assert index.mode == "exact" and len(index) == 2_000
    found = index.search_batch(queries, 10)
    assert recall(found, brute_force(base, queries, 10)) == 1.0
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries[0] / np.linalg.norm(queries[0])
    for i, sim in found[0]:
        assert sim == pytest.approx(float(b[i] @ q), abs=1e-5)
    assert [s for _, s in found[0]] == sorted((s for _, s in found[0]), reverse=True)
    single = index.search(queries[0], 10)  # gemv rounds differently from gemm: compare ids, sims to 1e-6
    assert [i for i, _ in single] == [i for i, _ in found[0]]
    assert [s for _, s in single] == pytest.approx([s for _, s in found[0]], abs=1e-6)


def test_hnsw_mode_recall_at_20k(big: tuple[VectorIndex, NDArray[Any], NDArray[Any]]) -> None:
    index, base, queries = big
    assert index.mode == "hnsw" and index.params.ef == 100
    assert recall(index.search_batch(queries, 10), brute_force(base, queries, 10)) >= 0.95
    single = [index.search(q, 10) for q in queries[:20]]
    assert recall(single, brute_force(base, queries[:20], 10)) >= 0.95
    assert recall(index.search_batch(queries, 10, exact=True), brute_force(base, queries, 10)) == 1.0
    assert 0 < index.memory_bytes() < 2 * 20_000 * (DIM * 4 + 2 * 16 * 4 + 200)


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["exact", "hnsw"])
def test_removed_ids_never_come_back(exact_below: int) -> None:
    data = clustered(1_000, 32, clusters=10)
    index = VectorIndex(32, exact_below=exact_below)
    index.add(range(1_000), data)
    gone = list(range(0, 1_000, 7))
    for i in gone:
        assert index.remove(i)
    assert not index.remove(gone[0])
    assert len(index) == 1_000 - len(gone) and not index.contains(gone[0]) and index.contains(1)
    for found in index.search_batch(data[gone], 20):
        assert len(found) == 20 and not {i for i, _ in found} & set(gone)
    assert index.vector(gone[0]) is None


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["exact", "hnsw"])
def test_replaced_and_readded_ids_return_their_new_vector(exact_below: int) -> None:
    data = clustered(1_010, 32, clusters=10, seed=3)
    index = VectorIndex(32, exact_below=exact_below)
    index.add(range(1_000), data[:1_000])
    index.add([5], data[1_000])  # replace a live id
    index.remove(9)
    index.remove(10)
    index.add([9], data[1_001])  # re-add a removed id (its old slot is free, and so is 10's)
    index.add([2_000, 2_001], data[1_002:1_004])  # new ids take free slots
    for i, vec in ((5, data[1_000]), (9, data[1_001]), (2_000, data[1_002])):
        best_id, best_sim = index.search(vec, 1)[0]
        assert best_id == i and best_sim == pytest.approx(1.0, abs=1e-5)
    assert 5 not in {i for i, _ in index.search(data[5], 5)}
    everything = index.search(data[0], len(index), exact=exact_below == 10**9)
    ids = [i for i, _ in everything]
    assert len(ids) == len(set(ids)) == len(index) == 1_001


def test_free_slots_are_reused_not_grown() -> None:
    data = clustered(1_500, 32, clusters=10, seed=4)
    index = VectorIndex(32, exact_below=0, max_elements=1_000)
    index.add(range(1_000), data[:1_000])
    before = index.memory_bytes()
    for i in range(500):
        index.remove(i)
    index.add(range(5_000, 5_500), data[1_000:1_500])
    assert index.memory_bytes() == before and len(index) == 1_000


def test_grows_beyond_initial_capacity() -> None:
    data = clustered(1_000, 32, clusters=10, seed=5)
    index = VectorIndex(32, exact_below=0, max_elements=16)
    for start in range(0, 1_000, 100):
        index.add(range(start, start + 100), data[start : start + 100])
    assert len(index) == 1_000
    for exact in (True, False):
        found = index.search_batch(data[::50], 1, exact=exact)
        assert [f[0][0] for f in found] == list(range(0, 1_000, 50))


def test_hnsw_falls_back_when_deletions_starve_it() -> None:
    data = clustered(200, 16, clusters=4, seed=6)
    index = VectorIndex(16, exact_below=0, M=4, ef=4)
    index.add(range(200), data)
    for i in range(190):
        index.remove(i)
    found = index.search(data[0], 10)
    assert sorted(i for i, _ in found) == list(range(190, 200))


@pytest.fixture
def no_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd and the temp dir are fresh empty directories, and Python-level opens of real paths fail."""
    work, tmp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    real_open, real_os_open = builtins.open, os.open

    def guarded(path: Any, *args: Any, **kwargs: Any) -> Any:
        if not (isinstance(path, int) or str(path).startswith("/proc/")):
            raise AssertionError(f"opened {path!r}")
        return (real_os_open if kwargs.pop("_os", False) else real_open)(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(os, "open", lambda path, *a, **kw: guarded(path, *a, _os=True, **kw))
    return tmp_path


def assert_untouched(root: Path) -> None:
    assert sorted(p.name for p in root.rglob("*")) == ["cwd", "tmp"]


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["exact", "hnsw"])
def test_round_trip_is_identical_and_never_touches_disk(exact_below: int, no_disk: Path) -> None:
    data = clustered(3_050, 48, clusters=30, seed=7)
    index = VectorIndex(48, exact_below=exact_below, ef=50)
    index.add(range(3_000), data[:3_000])
    for i in range(0, 3_000, 11):
        index.remove(i)
    blob = index.to_bytes()
    copy = VectorIndex.from_bytes(blob)
    assert_untouched(no_disk)
    assert copy.params == index.params == IndexParams(48, 16, 200, 50, exact_below)
    assert copy.mode == index.mode and len(copy) == len(index)
    queries = data[3_000:]
    assert copy.search_batch(queries, 10) == index.search_batch(queries, 10)
    copy.add([0, 9_999], data[3_000:3_002])  # still writable, slots reused
    assert copy.search(data[3_001], 1)[0][0] == 9_999 and copy.search(data[3_000], 1)[0][0] == 0


def test_round_trip_at_20k(big: tuple[VectorIndex, NDArray[Any], NDArray[Any]], no_disk: Path) -> None:
    index, _, queries = big
    copy = VectorIndex.from_bytes(index.to_bytes(), ef=index.params.ef)
    assert_untouched(no_disk)
    assert copy.mode == "hnsw" and copy.search_batch(queries, 10) == index.search_batch(queries, 10)


def test_damaged_snapshot_header_is_rejected_and_rebuild_recovers() -> None:
    data = clustered(300, 16, clusters=5, seed=8)
    index = VectorIndex(16, exact_below=0)
    index.add(range(300), data)
    blob = index.to_bytes()
    for bad in (b"", b"XXXX" + blob[4:], blob[:-1], blob + b"\0"):
        with pytest.raises(SnapshotError):
            VectorIndex.from_bytes(bad)
    stored = [index.vector(int(i)) for i in index.ids()]
    rebuilt = VectorIndex.rebuild(index.ids(), np.stack([v for v in stored if v is not None]), params=index.params)
    assert rebuilt.params == index.params
    for a, b in zip(rebuilt.search_batch(data[:20], 5, exact=True), index.search_batch(data[:20], 5, exact=True),
                    strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)


def test_bad_input_is_refused() -> None:
    index = VectorIndex(8)
    assert index.search(np.ones(8, dtype=np.float32), 3) == []
    with pytest.raises(ValueError):
        index.add([1], np.ones((1, 9), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add([1], np.full((1, 8), np.nan, dtype=np.float32))
    with pytest.raises(ValueError):
        index.add([-1], np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add([1, 2], np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        VectorIndex(8, graph=False).search(np.ones(8), 1, exact=False)
    with pytest.raises(ValueError):
        VectorIndex(0)


def test_concurrent_searches_while_a_writer_adds() -> None:
    data = clustered(3_000, 32, clusters=20, seed=9)
    index = VectorIndex(32, exact_below=300, num_threads=2)  # crosses from exact to HNSW mid-run
    index.add(range(50), data[:50])
    done, errors, modes = threading.Event(), [], set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set():
                modes.add(index.mode)
                found = index.search(data[rng.integers(0, 3_000)], 10)
                sims = [s for _, s in found]
                ids = [i for i, _ in found]
                assert 0 < len(found) <= 10 and sims == sorted(sims, reverse=True)
                assert len(set(ids)) == len(ids) and all(0 <= i < 3_000 for i in ids)
                assert all(-1.0 <= s <= 1.0 for s in sims)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        for start in range(50, 3_000, 50):
            index.add(range(start, start + 50), data[start : start + 50])
            index.remove(start - 25)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(index) == 3_000 - 59 and modes == {"exact", "hnsw"}


def churned_hnsw_index() -> tuple[VectorIndex, NDArray[Any]]:
    """An HNSW-mode index whose graph has deleted slots, reused slots and revived ids (every case of a label)."""
    data = clustered(2_600, 32, clusters=20, seed=11)
    index = VectorIndex(32, exact_below=0, ef=40)
    index.add(range(2_000), data[:2_000])
    for i in range(0, 2_000, 7):
        index.remove(i)
    index.add(range(5_000, 5_200), data[2_000:2_200])  # new ids take deleted slots
    index.add([7, 14, 21], data[2_200:2_203])  # removed ids come back with new vectors
    index.add([1, 2], data[2_203:2_205])  # live ids take new vectors in place
    return index, data[2_300:]


def test_hnsw_snapshot_leaves_the_matrix_out_and_reads_it_back_from_the_graph() -> None:
    index, queries = churned_hnsw_index()
    assert index.mode == "hnsw"
    blob = index.to_bytes()
    n = len(index)
    exact_mode = VectorIndex.from_bytes(blob, exact_below=10**9).to_bytes()  # same index, matrix kept
    assert len(exact_mode) - len(blob) == n * 32 * 4, "the matrix is in the HNSW-mode snapshot after all"
    copy = VectorIndex.from_bytes(blob)
    assert sorted(copy.ids().tolist()) == sorted(index.ids().tolist())
    for i in index.ids().tolist():
        original, restored = index.vector(i), copy.vector(i)
        assert original is not None and restored is not None
        np.testing.assert_allclose(restored, original, atol=1e-6)  # hnswlib's own unit-length copy
    assert copy.search_batch(queries, 10) == index.search_batch(queries, 10)  # the graph answers: identical
    exact_a = index.search_batch(queries, 10, exact=True)
    exact_b = copy.search_batch(queries, 10, exact=True)
    assert [[i for i, _ in r] for r in exact_a] == [[i for i, _ in r] for r in exact_b]


def test_version_1_snapshot_with_its_matrix_still_loads() -> None:
    index, queries = churned_hnsw_index()
    small = VectorIndex.from_bytes(index.to_bytes(), exact_below=10**9)
    blob = bytearray(small.to_bytes())  # exact mode: the matrix is in, which is version 1's layout
    blob[4:6] = (1).to_bytes(2, "little")
    old = VectorIndex.from_bytes(bytes(blob))
    assert old.search_batch(queries, 10) == small.search_batch(queries, 10)
    blob[6:8] = (3).to_bytes(2, "little")  # version 1 never left the matrix out
    with pytest.raises(SnapshotError):
        VectorIndex.from_bytes(bytes(blob))


def test_an_image_not_in_hnswlib_layout_is_refused() -> None:
    index, _ = churned_hnsw_index()
    blob = bytearray(index.to_bytes())
    image_at = _HEADER.size + 8 * len(index)  # our header, the ids, no matrix: then hnswlib's image
    blob[image_at + 4 * 8] ^= 0x08  # its label_offset (the 5th size_t of its header)
    with pytest.raises(SnapshotError, match="level-0 layout"):
        VectorIndex.from_bytes(bytes(blob))
