"""`clawfs bench hnsw`: the sweep's results, the recommendation, the plots, --apply on a real store, bad input.

The sweep runs on small synthetic data with a reduced grid (seconds, not minutes); `--apply` runs on a real
encrypted store whose files are indexed with the model-free `hashing-384` embedder.  The CLI is driven in-process
through `mountd.cli.main` (as `clawfs bench hnsw` runs it), checking exit codes and the
`clawfs: ...` messages on stderr.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clawfs.errors import UserError
from clawfs.index import engine
from clawfs.index.embedder import HASHING_NAME
from clawfs.index.tuning import config, corpus, datasets, measure, recommend, report, sweep
from clawfs.index.tuning.config import Config
from clawfs.index.tuning.recommend import Row
from clawfs.index.tuning.timing import NO_PROGRESS
from clawfs.keys import Credentials
from clawfs.store import ROOT, Store, StoreLock
from clawfs.vfs import VFS, Ctx
from mountd import cli

PW = b"bench passphrase"
TINY = config.Grid(M=(8, 16), ef_construction=(64,), ef=(10, 20, 80, 160))
LIGHTHOUSE = ("Old Quillfeatherby keeps the lighthouse on the cliff; the lamp oil is stored in the shed below, "
              "and the fog horn sounds every night when the sea mist rolls in over the harbour rocks.")


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`clawfs bench ARGS` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", *args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.fixture
def tiny_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """--quick sweeps the tiny grid (the two anchors' graphs are always added)."""
    monkeypatch.setattr(config, "QUICK_GRID", TINY)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One small sweep, written out: synthetic 2,000 vectors of 64 dimensions."""
    cfg = Config(sizes=(2000,), quick=True, custom_grid=TINY)
    sizes, queries = config.plan(None, cfg.sizes, config.QUICK_SIZES, cfg)
    data = datasets.synthetic(config.needed(sizes[-1], queries), dim=64, seed=cfg.seed)
    doc = sweep.run(data, sizes, queries, cfg)
    out = tmp_path_factory.mktemp("bench")
    report.write_outputs(doc, out)
    return doc, out


# ---- the sweep -----------------------------------------------------------------------------------------------
def test_results_json_is_complete_and_sane(swept: tuple[dict[str, Any], Path]) -> None:
    _, out = swept
    doc = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert {"bench", "machine", "config", "dataset", "sizes", "recommendation", "files", "timing"} <= doc.keys()
    size = doc["sizes"][0]
    assert (size["n"], size["queries"], size["replacements"], size["dim"]) == (2000, 200, 200, 64)
    rows = size["rows"]
    for row in rows:
        assert set(row) == set(report.CSV_FIELDS)
        assert 0.0 <= row["recall"] <= 1.0
        assert row["qps_single"] > 0 and row["qps_batch"] > 0 and row["build_s"] >= 0
        assert row["memory_bytes"] >= 2000 * 64 * 4 and row["bytes_per_vector"] >= 64 * 4
    exact = [r for r in rows if r["kind"] == "exact"]
    assert len(exact) == 1 and exact[0]["recall"] == 1.0 and exact[0]["recall_after_churn"] == 1.0
    assert exact[0]["graph_bytes"] == 0
    for row in (r for r in rows if r["kind"] == "hnsw"):
        assert row["graph_bytes"] > 0 and row["memory_bytes"] > exact[0]["memory_bytes"]
        assert 0 < row["add_ms_p50"] <= row["add_ms_p99"]


def test_the_sweep_covers_the_grid_and_stops_where_recall_saturates(swept: tuple[dict[str, Any], Path]) -> None:
    """Every graph of the grid is built; a graph's search stops at the first ef reaching recall 0.999, except
    on the anchors' graphs, which are searched at every ef."""
    rows = [r for r in swept[0]["sizes"][0]["rows"] if r["kind"] == "hnsw"]
    graphs = {(m, c) for m in TINY.M for c in TINY.ef_construction} | {(16, 64), (16, 200)}
    stopped_early = False
    assert {(r["M"], r["ef_construction"]) for r in rows} == graphs
    for m, efc in graphs:
        efs = [r["ef"] for r in rows if (r["M"], r["ef_construction"]) == (m, efc)]
        recalls = [r["recall"] for r in rows if (r["M"], r["ef_construction"]) == (m, efc)]
        if not config.anchor_graph(m, efc) and max(recalls) >= config.SATURATED:
            assert efs == TINY.efs(m, efc)[: len(efs)]
            assert recalls[-1] >= config.SATURATED and all(r < config.SATURATED for r in recalls[:-1])
            stopped_early = len(efs) < len(TINY.efs(m, efc))
        else:
            assert efs == TINY.efs(m, efc)
    assert stopped_early, "no graph saturated before the last ef: the stop went untested"


def test_the_delete_test_runs_on_the_anchors_and_the_recommended(swept: tuple[dict[str, Any], Path]) -> None:
    rows = [r for r in swept[0]["sizes"][0]["rows"] if r["kind"] == "hnsw"]
    rec = next(r for r in rows if r["recommended"])
    tested = {(16, 64), (16, 200), (rec["M"], rec["ef_construction"])}
    for row in rows:
        if (row["M"], row["ef_construction"]) in tested:
            assert 0.0 <= row["recall_after_churn"] <= 1.0
            assert 0 < row["replace_ms_p50"] <= row["replace_ms_p99"]
        else:
            assert row["recall_after_churn"] is None and row["replace_ms_p50"] is None


def test_builds_follow_pgvectors_rule_cheapest_first() -> None:
    builds = config.FULL_GRID.builds()
    assert (64, 64) not in builds and all(c >= 2 * m for m, c in builds)
    assert {m for m, _ in builds} == {8, 16, 32, 64} and {c for _, c in builds} == {64, 200, 400}
    assert builds == sorted(builds, key=lambda b: (b[1], b[0])) and len(builds) == 11


def test_anchor_rows_are_always_there(swept: tuple[dict[str, Any], Path]) -> None:
    rows = swept[0]["sizes"][0]["rows"]
    anchors = {r["anchor"]: (r["M"], r["ef_construction"], r["ef"]) for r in rows if r["anchor"]}
    assert anchors == {"pgvector defaults": (16, 64, 40), "hnswlib defaults": (16, 200, 10)}


def test_recall_rises_with_ef(swept: tuple[dict[str, Any], Path]) -> None:
    rows = [r for r in swept[0]["sizes"][0]["rows"] if r["kind"] == "hnsw"]
    rising = 0
    for m, efc in {(r["M"], r["ef_construction"]) for r in rows}:
        mine = sorted((r for r in rows if (r["M"], r["ef_construction"]) == (m, efc)), key=lambda r: r["ef"])
        recalls = [r["recall"] for r in mine]
        assert all(b >= a - 0.01 for a, b in itertools.pairwise(recalls)), (m, efc, recalls)
        assert recalls[-1] >= recalls[0]
        rising += recalls[-1] > recalls[0]
    assert rising, "the data is too easy: recall is 1.0 at every ef"


def test_csv_matches_json(swept: tuple[dict[str, Any], Path]) -> None:
    doc, out = swept
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["sizes"][0]["rows"])
    assert rows[0]["dataset"] == "synthetic" and rows[0]["kind"] == "exact"


def test_plots_are_valid_pngs(swept: tuple[dict[str, Any], Path]) -> None:
    import matplotlib.image

    for name in ("recall_qps.png", "build_memory.png"):
        path = swept[1] / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500


def test_ground_truth_and_recall_definition() -> None:
    rng = np.random.default_rng(1)
    base = datasets.unit_rows(rng.standard_normal((500, 16)), "base")
    queries = datasets.unit_rows(rng.standard_normal((20, 16)), "queries")
    ids, dists = measure.exact_knn(base, queries, 5)
    brute = np.argsort(1.0 - queries @ base.T, axis=1, kind="stable")[:, :5]
    assert (ids == brute).all() and (np.diff(dists, axis=1) >= 0).all()
    perfect = [[(int(i), 0.0) for i in row] for row in ids]
    assert measure.recall_at_k(perfect, base, queries, dists[:, -1], 5) == 1.0
    # a far neighbour in place of the 5th is a miss; a tie within 1e-3 of the 5th distance is a hit
    worst = np.argsort(queries @ base.T, axis=1)[:, 0]
    swapped = [[*row[:4], (int(w), 0.0)] for row, w in zip(perfect, worst, strict=True)]
    assert measure.recall_at_k(swapped, base, queries, dists[:, -1], 5) == pytest.approx(0.8)
    twin = np.vstack([base, base[ids[:, 4]]])  # copies of each query's 5th neighbour, ids 500..519
    tied = [[*row[:4], (500 + i, 0.0)] for i, row in enumerate(perfect)]
    assert measure.recall_at_k(tied, twin, queries, dists[:, -1], 5) == 1.0


# ---- the recommendation --------------------------------------------------------------------------------------
def make_row(kind: str, recall: float, qps: float, memory: int, m: int | None = 16, ef: int | None = 40) -> Row:
    return Row(50_000, kind, m, 200 if m else None, ef, None, recall, recall, qps, qps * 3, 1.0, memory,
               memory // 2, memory / 50_000, 0.1, 0.2, 0.3, 0.4)


def rows_for_recommend() -> list[Row]:
    return [make_row("exact", 1.0, 100, 80_000_000, None, None),
            make_row("hnsw", 0.95, 9000, 150_000_000, 8, 10),
            make_row("hnsw", 0.985, 5000, 150_000_000, 8, 80),
            make_row("hnsw", 0.99, 7000, 300_000_000, 32, 40),
            make_row("hnsw", 0.999, 3000, 300_000_000, 32, 160)]


def test_recommendation_obeys_target_and_budget() -> None:
    rows = rows_for_recommend()
    rec = recommend.recommend(rows, 50_000, Config(None, recall_target=0.98), exact_below=20_000)
    assert rec["status"] == "ok" and rec["setting"] == {"M": 32, "ef_construction": 200, "ef": 40}
    assert rec["speedup_vs_exact"] == 70.0 and not rec["exact_better"]
    rows = rows_for_recommend()
    rec = recommend.recommend(rows, 50_000, Config(None, recall_target=0.98, memory_budget=200_000_000), 20_000)
    assert rec["setting"] == {"M": 8, "ef_construction": 200, "ef": 80}
    assert [r.recommended for r in rows] == [False, False, True, False, False]
    rec = recommend.recommend(rows_for_recommend(), 50_000, Config(None, recall_target=0.995), 20_000)
    assert rec["setting"] == {"M": 32, "ef_construction": 200, "ef": 160}


def test_recommendation_when_nothing_qualifies() -> None:
    rec = recommend.recommend(rows_for_recommend(), 50_000, Config(None, recall_target=0.9999), 20_000)
    assert rec["status"] == "unreachable" and rec["setting"] is None
    assert rec["best_found"] == {"M": 32, "ef_construction": 200, "ef": 160} and rec["best_found_recall"] == 0.999
    assert "the best found is M=32 ef_construction=200 ef=160 with recall 0.999" in rec["reason"]
    rec = recommend.recommend(rows_for_recommend(), 50_000, Config(None, recall_target=0.99, memory_budget=200_000_000),
                       20_000)
    assert rec["status"] == "over_budget" and "within 190.7 MiB" in rec["reason"]
    rec = recommend.recommend(rows_for_recommend(), 50_000, Config(None, memory_budget=1000), 20_000)
    assert rec["status"] == "over_budget" and "no HNSW setting fits" in rec["reason"]


def test_exact_is_named_the_better_choice_when_it_is() -> None:
    rows = rows_for_recommend()
    rec = recommend.recommend(rows, 5_000, Config(None, recall_target=0.98), exact_below=20_000)
    assert rec["exact_better"] and "below exact_below=20,000" in rec["exact_reason"]
    rows = [make_row("exact", 1.0, 20_000, 1_000_000, None, None), make_row("hnsw", 0.99, 9000, 3_000_000)]
    rec = recommend.recommend(rows, 50_000, Config(None, recall_target=0.98), exact_below=20_000)
    assert rec["exact_better"] and "as fast or faster" in rec["exact_reason"]


def test_a_build_is_skipped_only_when_its_lower_ef_construction_rules_it_out() -> None:
    """(8, 400) is bounded by (8, 200)'s QPS and its recall plus (8, 200)'s gain over (8, 64) per doubling."""
    def row(m: int, efc: int, ef: int, recall: float, qps: float) -> Row:
        return Row(50_000, "hnsw", m, efc, ef, None, recall, None, qps, qps, 1.0, 10**8, 10**7, 2000.0, 0.1, 0.1,
                   None, None)

    def rows(recall_at_80: float) -> list[Row]:
        return [row(8, 64, 40, 0.90, 8000), row(8, 64, 80, 0.95, 5000), row(8, 200, 40, 0.93, 8000),
                row(8, 200, 80, recall_at_80, 5000), row(32, 200, 40, 0.985, 4000),
                row(16, 64, 40, 0.90, 8000), row(16, 200, 40, 0.93, 8000)]

    cfg = Config(None, recall_target=0.98)
    # gain 0.02 at ef=80, times 0.61 doublings: 0.982 >= 0.98 at 5,000 QPS could beat 4,000: built
    assert sweep.dominated(8, 400, rows(0.97), cfg) is None
    why = sweep.dominated(8, 400, rows(0.96), cfg)  # 0.966 at best: it cannot reach the target faster
    assert why is not None and "faster than M=32 ef_construction=200 ef=40 (4,000 QPS)" in why
    assert sweep.dominated(16, 400, rows(0.96), cfg) is None  # the anchors' M spans every ef_construction
    assert sweep.dominated(32, 400, rows(0.96), cfg) is None  # one lower ef_construction only: no gain to go by
    assert sweep.dominated(8, 400, rows(0.96), Config(None, recall_target=0.999)) is None  # nothing to beat yet


# ---- datasets ------------------------------------------------------------------------------------------------
def test_plan_checks_sizes_and_k() -> None:
    cfg = Config(None, quick=True)
    assert config.plan(None, None, config.QUICK_SIZES, cfg) == ([2000], 200)
    assert config.plan(5000, None, config.QUICK_SIZES, cfg) == ([4800], 200)
    assert config.plan(300, None, config.QUICK_SIZES, cfg) == ([270], 30)
    with pytest.raises(UserError, match="size 5,000 needs 5,200 vectors"):
        config.plan(5000, (5000,), config.QUICK_SIZES, cfg)
    with pytest.raises(UserError, match="--k 50 is larger than the dataset"):
        config.plan(None, (20,), config.QUICK_SIZES, Config(None, k=50))


def test_synthetic_is_seeded_and_unit_length() -> None:
    a, b = datasets.synthetic(3000, dim=32, seed=7), datasets.synthetic(3000, dim=32, seed=7)
    assert np.array_equal(a.vectors, b.vectors) and a.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(a.vectors, datasets.synthetic(3000, dim=32, seed=8).vectors)


def test_troff_and_paragraphs(tmp_path: Path) -> None:
    src = ('.TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH DESCRIPTION\n.\\" a comment\n.PP\n'
           "List information about the \\fBFILEs\\fR (the current directory by default), sorting entries "
           "alphabetically\nif none of \\fB\\-cftuvSUX\\fR is given.\n.TP\n.B \\-a\nshort\n")
    paras = corpus.troff_paragraphs(src)
    assert ("List information about the FILEs (the current directory by default), sorting entries "
            "alphabetically if none of -cftuvSUX is given.") in paras
    assert not any("\\" in p or "fB" in p for p in paras)
    text = "First paragraph is here, long enough to count as text worth embedding at all.\n\n-----\n\nshort\n"
    (tmp_path / "README").write_text(text)
    assert [p for p in corpus.paragraphs_of(tmp_path / "README") if corpus.good_paragraph(p)] == [text.split("\n")[0]]


def test_debian_docs_embeds_once_then_reads_the_cache(tmp_path: Path) -> None:
    docs = tmp_path / "doc" / "pkg"
    docs.mkdir(parents=True)
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "kernel", "socket", "file", "mount", "index", "vector", "store"]
    for i in range(6):
        paras = [" ".join(rng.choice(words) for _ in range(14)) + f" number {i}-{j}." for j in range(10)]
        (docs / f"README-{i}").write_text("\n\n".join(paras))
    files = corpus.corpus_files(tmp_path / "doc", tmp_path / "man")
    cache = tmp_path / "cache"
    first = datasets.debian_docs(50, HASHING_NAME, files=files, directory=cache)
    assert first.vectors.shape == (50, 384) and first.info["embedded_now"] == 50
    assert len(list(cache.glob("debian-docs-hashing-384-*.npz"))) == 1
    again = datasets.debian_docs(50, HASHING_NAME, files=files, directory=cache)
    assert again.info["embedded_now"] == 0 and np.array_equal(first.vectors, again.vectors)
    with pytest.raises(UserError, match="debian-docs has 60 paragraphs"):
        datasets.debian_docs(100, HASHING_NAME, files=files, directory=cache)


class _RecordingEmbedder:
    """Stands in for the model: vectors from the text's length, and a record of every call."""

    name, dim, max_tokens, special_tokens = "recording", 8, 6, 2

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        self.calls.append(list(texts))
        return np.array([[len(t.split()), *range(7)] for t in texts], dtype=np.float32)


def test_paragraphs_are_embedded_longest_in_tokens_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks hold paragraphs of like length in tokens (capped at the model's limit), so batches pad little;
    every paragraph's vector reaches the caller in its own place."""
    monkeypatch.setattr(datasets, "EMBED_CHUNK", 3)
    texts = ["a " * n for n in (1, 9, 3, 2, 7, 4, 1)]  # 9 and 7 words are both over the 4-token cap
    got: dict[int, float] = {}

    def checkpoint(positions: Any, vectors: Any) -> None:
        got.update(zip(positions, vectors[:, 0].tolist(), strict=True))

    embedder = _RecordingEmbedder()
    datasets._embed_missing(texts, embedder, NO_PROGRESS, checkpoint)  # type: ignore[arg-type]
    assert [[len(t.split()) for t in call] for call in embedder.calls] == [[9, 7, 4], [3, 2, 1], [1]]
    assert got == {i: float(len(t.split())) for i, t in enumerate(texts)}


def test_single_exact_queries_run_blas_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """vectors.py: one exact query limits numpy's BLAS to one thread while it runs, and restores it; a batch
    keeps every thread (on a busy machine BLAS threads made single queries many times slower)."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    from clawfs.index import vectors

    seen: list[int] = []
    search_exact = vectors.VectorIndex._search_exact

    def spy(self: vectors.VectorIndex, q: Any, k: int) -> Any:
        seen.append(ThreadpoolController().select(user_api="blas").info()[0]["num_threads"])
        return search_exact(self, q, k)

    monkeypatch.setattr(vectors.VectorIndex, "_search_exact", spy)
    rng = np.random.default_rng(0)
    index = vectors.VectorIndex.rebuild(np.arange(500), rng.standard_normal((500, 16)), graph=False)
    with threadpool_limits(limits=2, user_api="blas"):
        index.search(rng.standard_normal(16), 5)
        index.search_batch(rng.standard_normal((4, 16)), 5)
        after = ThreadpoolController().select(user_api="blas").info()[0]["num_threads"]
    assert seen == [1, 2] and after == 2


# ---- the command line: bad input -----------------------------------------------------------------------------
def test_unknown_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli("hnsw", "--dataset", "wikipedia", "--out", str(tmp_path), capsys=capsys)
    assert code == 1 and "clawfs: unknown dataset 'wikipedia'" in err


@pytest.mark.parametrize("array", [np.zeros((100, 8), dtype=np.float64), np.ones(100, dtype=np.float32),
                                   np.ones((100, 8, 2), dtype=np.float32)])
def test_npy_of_wrong_dtype_or_shape(array: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", array)
    code, _, err = run_cli("hnsw", "--dataset", str(tmp_path / "v.npy"), "--out", str(tmp_path), capsys=capsys)
    assert code == 1 and "expected float32 vectors of shape (n, d)" in err


def test_npy_that_is_not_npy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "v.npy").write_text("not numpy")
    code, _, err = run_cli("hnsw", "--dataset", str(tmp_path / "v.npy"), capsys=capsys)
    assert code == 1 and "is not a readable .npy file" in err
    code, _, err = run_cli("hnsw", "--dataset", str(tmp_path / "missing.npy"), capsys=capsys)
    assert code == 1 and "no such file" in err


def test_npy_with_nan_rows(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    v = np.ones((100, 8), dtype=np.float32)
    v[3, 2] = np.nan
    np.save(tmp_path / "v.npy", v)
    code, _, err = run_cli("hnsw", "--dataset", str(tmp_path / "v.npy"), capsys=capsys)
    assert code == 1 and "must be finite" in err


def test_k_larger_than_the_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32))
    code, _, err = run_cli("hnsw", "--dataset", str(tmp_path / "v.npy"), "--k", "100", capsys=capsys)
    assert code == 1 and "--k 100 is larger than the dataset (50 vectors" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--recall-target", "1.5"], "--recall-target 1.5 must be above 0 and at most 1"),
    (["--sizes", "10q"], "cannot read --sizes '10q'"),
    (["--memory-budget", "lots"], "cannot read size 'lots'"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--apply"], "--apply needs --store STORE"),
    (["--dataset", "synthetic", "--sizes", "2M"], "synthetic goes up to 1,000,000 vectors"),
])
def test_bad_options(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli("hnsw", *args, capsys=capsys)
    assert code == 1 and f"clawfs: {message}" in err


def test_unreachable_target_says_the_best_found(tiny_grid: None, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Uniform random 256-d vectors searched with ef=10 (so at k=50, hnswlib's ef is 50): recall stays well
    below 0.999 for every setting."""
    monkeypatch.setattr(config, "QUICK_GRID", config.Grid(M=(8,), ef_construction=(64,), ef=(10,)))
    np.save(tmp_path / "v.npy", np.random.default_rng(0).standard_normal((3000, 256)).astype(np.float32))
    code, _, err = run_cli("hnsw", "--dataset", str(tmp_path / "v.npy"), "--quick", "--k", "50",
                             "--recall-target", "0.999", "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 1 and "clawfs: no setting reaches recall@50 >= 0.999: the best found is M=" in err
    assert (tmp_path / "out" / "results.json").exists()  # the results are kept


def test_memory_budget_too_small(tiny_grid: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli("hnsw", "--dataset", "synthetic", "--sizes", "1000", "--quick", "--memory-budget", "1K",
                           "--out", str(tmp_path), capsys=capsys)
    assert code == 1 and "clawfs: no HNSW setting fits within 1.0 KiB" in err


def test_quick_synthetic_run_writes_everything(tiny_grid: None, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    code, out, _ = run_cli("hnsw", "--dataset", "synthetic", "--sizes", "1500", "--quick", "--out", str(tmp_path),
                           capsys=capsys)
    assert code == 0
    assert "n=1,500: recommended: M=" in out and "exact search is the better choice" in out
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.csv", "recall_qps.png",
                                                     "build_memory.png"}
    timing = json.loads((tmp_path / "results.json").read_text())["timing"]
    assert [p["phase"] for p in timing["phases"]] == [
        "generating synthetic vectors", "n=1,500: exact ground truth", "n=1,500: exact search row",
        "n=1,500: HNSW builds and searches", "n=1,500: delete test", "plots and results files"]
    assert all(p["wall_s"] >= 0 and len(p["load_start"]) == len(p["load_end"]) == 3 for p in timing["phases"])
    assert timing["wall_s"] >= sum(p["wall_s"] for p in timing["phases"]) - 0.5


# ---- a real store ------------------------------------------------------------------------------------------------
def _words(rng: random.Random, n: int) -> str:
    vocab = ["garden", "compiler", "invoice", "harbour", "recipe", "violin", "satellite", "glacier", "ledger",
             "orchard", "cathedral", "telescope", "marathon", "vaccine", "dentist", "kernel", "tax", "river"]
    return " ".join(rng.choice(vocab) for _ in range(n))


@pytest.fixture
def indexed_store(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A store of 60 notes (about 300 chunks) indexed with hashing-384, its settings off the sweep's grid."""
    path, passfile = tmp_path / "agent.claw", tmp_path / "pass"
    passfile.write_bytes(PW + b"\n")
    Store.create(str(path), [("passphrase", PW)], block_size=4096, kdf="scrypt")
    store = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        vfs, ctx, rng = VFS(store), Ctx(uid=0, gid=0), random.Random(5)
        notes = vfs.mkdir(ROOT, b"notes", 0o755, ctx).ino
        texts = {f"note{i}.md": "\n\n".join(_words(rng, 120) for _ in range(5)) for i in range(59)}
        texts["lighthouse.md"] = LIGHTHOUSE
        core = engine.IndexCore.load(store, HASHING_NAME)
        with store.transaction():
            tables = store.index
            tables.set_meta("hnsw_m", 12)
            tables.set_meta("hnsw_ef_construction", 100)
        for name, text in texts.items():
            fh, attr = vfs.create(notes, name.encode(), 0o644, os.O_RDWR, ctx)
            vfs.write(fh, 0, text.encode())
            vfs.release(fh)
            engine.index_file(store, core, attr.ino)
        engine.save_snapshot(store, core)
        store.sync()
    finally:
        store.close()
    yield path, passfile


def _settings(path: Path) -> tuple[dict[str, int], tuple[int, int, int], list[bytes]]:
    store = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        tables = store.index
        settings = {k: int(tables.meta(k) or v) for k, v in engine.SETTINGS.items()}
        core = engine.IndexCore.load(store)
        p = core.vectors.params
        hits = engine.search(store, core, "lighthouse lamp oil fog horn", k=3).hits
        return settings, (p.M, p.ef_construction, p.ef), [h.path for h in hits]
    finally:
        store.close()


@pytest.mark.slow
def test_apply_changes_the_settings_and_search_still_works(
        indexed_store: tuple[Path, Path], tiny_grid: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path, passfile = indexed_store
    before, graph, hits = _settings(path)
    assert (before["hnsw_m"], before["hnsw_ef_construction"]) == (12, 100) and graph[:2] == (12, 100)
    assert hits[0] == b"notes/lighthouse.md"
    code, out, err = run_cli("hnsw", "--store", str(path), "--passphrase-file", str(passfile), "--quick",
                             "--recall-target", "0.95", "--apply", "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["dataset"]["name"] == "store:agent.claw" and doc["dataset"]["embedder"] == HASHING_NAME
    want = doc["recommendation"]["setting"]
    after, graph, hits = _settings(path)
    assert (after["hnsw_m"], after["hnsw_ef_construction"], after["hnsw_ef"]) == (
        want["M"], want["ef_construction"], want["ef"])
    assert graph == (want["M"], want["ef_construction"], want["ef"])  # the saved graph was rebuilt with them
    assert hits[0] == b"notes/lighthouse.md"
    assert f"applied to {path}: M={want['M']}" in out and "was M=12 ef_construction=100" in out
    assert "exact search is the better choice" in out  # ~300 vectors: far below exact_below


@pytest.mark.slow
def test_apply_refuses_a_mounted_store(indexed_store: tuple[Path, Path], tiny_grid: None,
                                       capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path, passfile = indexed_store
    lock = StoreLock(str(path))  # what a mount holds
    try:
        code, _, err = run_cli("hnsw", "--store", str(path), "--passphrase-file", str(passfile), "--quick",
                               "--apply", "--out", str(tmp_path), capsys=capsys)
        assert code == 1 and "is mounted or in use by another clawfs process: --apply" in err
        code, _, err = run_cli("hnsw", "--store", str(path), "--passphrase-file", str(passfile), "--quick",
                               "--recall-target", "0.95", "--out", str(tmp_path), capsys=capsys)
        assert code == 0, err  # without --apply the bench only reads the store
    finally:
        lock.release()
    assert _settings(path)[0]["hnsw_m"] == 12


def test_store_without_index(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path, passfile = tmp_path / "empty.claw", tmp_path / "pass"
    passfile.write_bytes(PW + b"\n")
    Store.create(str(path), [("passphrase", PW)], block_size=4096, kdf="scrypt")
    code, _, err = run_cli("hnsw", "--store", str(path), "--passphrase-file", str(passfile), capsys=capsys)
    assert code == 1 and f"clawfs: {path} has no index yet" in err
    code, _, err = run_cli("hnsw", "--store", str(tmp_path / "nope.claw"), "--passphrase-file", str(passfile),
                           capsys=capsys)
    assert code == 1 and "no such store" in err


def test_nothing_plaintext_leaves_the_store(indexed_store: tuple[Path, Path], tiny_grid: None,
                                            capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Benching a store writes only metrics: no vector of it appears in the outputs or the cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path, passfile = indexed_store
    code, _, err = run_cli("hnsw", "--store", str(path), "--passphrase-file", str(passfile), "--quick",
                           "--recall-target", "0.9", "--out", str(tmp_path / "out"), capsys=capsys)
    assert code == 0, err
    assert not (tmp_path / "cache").exists()
    assert {p.suffix for p in (tmp_path / "out").iterdir()} == {".json", ".csv", ".png"}
    assert not _float_arrays(json.loads((tmp_path / "out" / "results.json").read_text()))


def _float_arrays(node: Any) -> list[list[Any]]:
    """Lists of 16 or more floats anywhere in a JSON document (a vector would be one)."""
    if isinstance(node, dict):
        return [a for v in node.values() for a in _float_arrays(v)]
    if isinstance(node, list):
        mine = [node] if len(node) >= 16 and all(isinstance(v, float) for v in node) else []
        return mine + [a for v in node for a in _float_arrays(v)]
    return []


def test_apply_refuses_vectors_of_another_dimension(indexed_store: tuple[Path, Path], tiny_grid: None,
                                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path, passfile = indexed_store
    np.save(tmp_path / "v.npy", np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32))
    code, _, err = run_cli("hnsw", "--store", str(path), "--passphrase-file", str(passfile), "--dataset",
                           str(tmp_path / "v.npy"), "--quick", "--apply", "--out", str(tmp_path / "out"),
                           capsys=capsys)
    assert code == 1 and "the dataset has 8 dimensions and" in err and "index 384" in err
    assert not (tmp_path / "out").exists()  # refused before the sweep
