"""The sweep: the exact row, one HNSW graph per (M, ef_construction) searched at rising ef (skipping graphs
that cannot win), the delete test, every size, and the results document."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clawfs.index.vectors import IndexParams, VectorIndex

from .config import ANCHORS, DELETE_SHARE, EPSILON, SATURATED, Config, anchor_graph
from .datasets import Dataset
from .measure import (
    Searched,
    Split,
    Truth,
    churn,
    fresh_adds,
    ground_truth,
    measure_search,
    recall_after_churn,
    split,
)
from .recommend import Row, best_row, mark_pareto, recommend, within_budget
from .timing import NO_PROGRESS, Phases, Progress, machine


def _row(s: Split, index: VectorIndex, build_s: float, setting: tuple[int | None, int | None, int | None],
         found: Searched) -> Row:
    m, efc, ef = setting
    graph = index.memory_bytes()
    memory = graph + index.matrix_bytes()  # read before the delete test: the graph plus the exact matrix
    anchor = ANCHORS.get((m, efc, ef)) if m is not None and efc is not None and ef is not None else None
    return Row(s.n, "exact" if m is None else "hnsw", m, efc, ef, anchor, round(found.recall, 5), None,
               round(found.qps_single, 1), round(found.qps_batch, 1), round(build_s, 3), int(memory), int(graph),
               round(memory / s.n, 1), 0.0, 0.0, None, None)


def _latencies(rows: Sequence[Row], add_ms: Sequence[float], replace_ms: Sequence[float] | None) -> None:
    add = np.asarray(add_ms or [0.0])
    for row in rows:
        row.add_ms_p50, row.add_ms_p99 = (round(float(np.percentile(add, q)), 4) for q in (50, 99))
        if replace_ms is not None:
            replace = np.asarray(replace_ms or [0.0])
            row.replace_ms_p50, row.replace_ms_p99 = (round(float(np.percentile(replace, q)), 4) for q in (50, 99))


Step = Callable[[str], None]


def bench_exact(s: Split, truth: Truth, cfg: Config, step: Step) -> Row:
    """The exact row, with its delete test (cheap without a graph): numpy over VectorIndex's matrix."""
    step(f"n={s.n:,}: exact search")
    t0 = time.perf_counter()
    index = VectorIndex.rebuild(np.arange(s.n), s.base, params=IndexParams(s.base.shape[1], exact_below=s.n + 1),
                                graph=False, num_threads=cfg.num_threads)
    build_s = time.perf_counter() - t0
    row = _row(s, index, build_s, (None, None, None), measure_search(index, s, truth.kth, cfg, exact=True))
    replace_ms = churn(index, s)
    row.recall_after_churn = round(recall_after_churn(index, s, truth, cfg, exact=True), 5)
    _latencies([row], fresh_adds(index, s), replace_ms)
    return row


@dataclass
class Graph:
    """One HNSW graph and its rows, kept in memory while it may still get the delete test."""

    index: VectorIndex
    rows: list[Row]


def build_graph(s: Split, truth: Truth, m: int, efc: int, cfg: Config, step: Step) -> Graph:
    """Build one graph, then search it at rising ef.  The search stops once recall@k reaches SATURATED (and the
    target): larger ef only buys the last 0.1% at a lower QPS.  The anchors' graphs are searched at every ef,
    so the sweep always spans the grid's ef range."""
    step(f"n={s.n:,}: building M={m} ef_construction={efc}")
    params = IndexParams(s.base.shape[1], M=m, ef_construction=efc, ef=cfg.grid.efs(m, efc)[0], exact_below=0)
    t0 = time.perf_counter()
    index = VectorIndex.rebuild(np.arange(s.n), s.base, params=params, num_threads=cfg.num_threads)
    build_s = time.perf_counter() - t0
    rows: list[Row] = []
    for ef in cfg.grid.efs(m, efc):
        step(f"n={s.n:,}: M={m} ef_construction={efc}, searching ef={ef}")
        index.set_ef(ef)
        rows.append(_row(s, index, build_s, (m, efc, ef), measure_search(index, s, truth.kth, cfg, exact=False)))
        if rows[-1].recall >= max(SATURATED, cfg.recall_target) and not anchor_graph(m, efc):
            break
    return Graph(index, rows)


def finish_graph(g: Graph, s: Split, truth: Truth, cfg: Config, step: Step, *, deletes: bool) -> None:
    """The delete test (when asked: recall at every ef searched after 10% are deleted and added back), then
    single adds of fresh ids.  The graph is of no further use after this."""
    replace_ms = None
    if deletes:
        m, efc = g.rows[0].graph or (0, 0)
        step(f"n={s.n:,}: M={m} ef_construction={efc}, delete and re-add 10%")
        replace_ms = churn(g.index, s)
        for row in g.rows:
            g.index.set_ef(row.ef or 1)
            row.recall_after_churn = round(recall_after_churn(g.index, s, truth, cfg, exact=False), 5)
    _latencies(g.rows, fresh_adds(g.index, s), replace_ms)


@dataclass
class Sweep:
    """The rows of every graph searched, the graphs kept for the delete test, and the builds skipped (why)."""

    rows: list[Row] = field(default_factory=list)
    kept: dict[tuple[int, int], Graph] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def sweep_graphs(s: Split, truth: Truth, cfg: Config, step: Step) -> Sweep:
    """Every graph of the grid not `dominated`, searched.  Kept for the delete test: the anchors' graphs and the
    one holding the best setting so far (what `recommend` will pick); every other graph is finished and freed as
    soon as it cannot be recommended any more."""
    sweep = Sweep()
    for m, efc in cfg.grid.builds():
        why = dominated(m, efc, sweep.rows, cfg)
        if why is not None:
            step(f"n={s.n:,}: skipping M={m} ef_construction={efc}")
            sweep.skipped.append({"M": m, "ef_construction": efc, "reason": why})
            continue
        g = build_graph(s, truth, m, efc, cfg, step)
        sweep.rows += g.rows
        sweep.kept[m, efc] = g
        best = best_row(sweep.rows, cfg)
        for key in [key for key in sweep.kept if not anchor_graph(*key) and (best is None or key != best.graph)]:
            finish_graph(sweep.kept.pop(key), s, truth, cfg, step, deletes=False)
    return sweep


def dominated(m: int, efc: int, rows: Sequence[Row], cfg: Config) -> str | None:
    """Why graph (M, efc) cannot beat the best setting found so far, or None when it might (or must be built).

    Raising ef_construction at a fixed M, the graphs measured so far behave alike: at the same ef the new graph
    is no faster (its neighbour lists are fuller), and the recall it gains per doubling of ef_construction
    shrinks.  So with (M, lo) and (M, lower) already searched, (M, efc) at each ef has at most (M, lo)'s QPS and
    at most (M, lo)'s recall plus (M, lo)'s gain over (M, lower), scaled by doublings.  If no ef then reaches the
    recall target faster than the best so far, the build is skipped.  The anchors' M is never skipped: its
    graphs span every ef_construction of the grid."""
    best = best_row(rows, cfg)
    lower = sorted(c for g, c in {r.graph or (0, 0) for r in rows} if g == m and c < efc)
    if best is None or len(lower) < 2 or m in {am for am, _, _ in ANCHORS}:
        return None
    lo, below = lower[-1], lower[-2]
    before = {r.ef: r.recall for r in rows if r.graph == (m, below)}
    doublings = math.log2(efc / lo) / math.log2(lo / below)
    for r in within_budget([r for r in rows if r.graph == (m, lo)], cfg):
        # a search that stopped at recall 0.999 before this ef had at least its last recall here
        gain = max(0.0, r.recall - before.get(r.ef or 0, max(before.values())))
        if min(1.0, r.recall + gain * doublings) >= cfg.recall_target and r.qps_single > best.qps_single:
            return None
    return (f"dominated: at no ef could it reach recall@{cfg.k} {cfg.recall_target} faster than {best.setting} "
            f"({best.qps_single:,.0f} QPS), judging from M={m} with ef_construction {below} and {lo}")



# ---- one size, and the recommendation ----------------------------------------------------------------------


def steps_per_size(cfg: Config) -> int:
    """An estimate (the search at rising ef stops early on saturated graphs): builds, searches, delete tests."""
    return 2 + sum(1 + len(cfg.grid.efs(m, c)) for m, c in cfg.grid.builds()) + len(ANCHORS) + 1


def bench_size(data: Dataset, n: int, queries: int, cfg: Config, step: Step, phases: Phases) -> dict[str, Any]:
    """Every row at one size, marked Pareto-optimal and recommended, and the recommendation."""
    s = split(data.vectors, n, queries, cfg.seed)
    with phases(f"n={n:,}: exact ground truth"):
        step(f"n={n:,}: exact ground truth")
        truth = ground_truth(s, cfg.k)
    with phases(f"n={n:,}: exact search row"):
        rows = [bench_exact(s, truth, cfg, step)]
    with phases(f"n={n:,}: HNSW builds and searches"):
        sweep = sweep_graphs(s, truth, cfg, step)
    rows += sweep.rows
    mark_pareto(rows)
    rec = recommend(rows, n, cfg, data.exact_below)
    with phases(f"n={n:,}: delete test"):
        for g in sweep.kept.values():
            finish_graph(g, s, truth, cfg, step, deletes=True)
    return {"n": n, "queries": queries, "replacements": len(s.deleted), "dim": data.dim,
            "ground_truth_s": round(truth.seconds, 3), "recommendation": rec, "skipped_graphs": sweep.skipped,
            "rows": [asdict(r) for r in rows]}

# ---- the whole run -----------------------------------------------------------------------------------------


def run(data: Dataset, sizes: Sequence[int], queries: int, cfg: Config, progress: Progress | None = None,
        phases: Phases | None = None) -> dict[str, Any]:
    """Bench every size; the results document (what results.json holds)."""
    progress, phases = progress or NO_PROGRESS, phases or Phases()
    t0 = time.perf_counter()
    task = "sweep"
    progress.start(task, steps_per_size(cfg) * len(sizes))

    def step(description: str) -> None:
        progress.advance(task, 1, description=description)

    results = [bench_size(data, n, queries, cfg, step, phases) for n in sizes]
    progress.finish(task)
    return {"bench": "clawfs bench hnsw", "version": 2, "created": dt.datetime.now(dt.UTC).isoformat(),
            "machine": machine(), "config": config_doc(cfg, queries), "dataset": dataset_doc(data),
            "sizes": results, "recommendation": results[-1]["recommendation"] | {"size": sizes[-1]},
            "elapsed_s": round(time.perf_counter() - t0, 1), "timing": phases.doc()}


def config_doc(cfg: Config, queries: int) -> dict[str, Any]:
    return {"k": cfg.k, "recall_target": cfg.recall_target, "memory_budget": cfg.memory_budget,
            "threads": cfg.num_threads, "quick": cfg.quick, "seed": cfg.seed, "queries": queries,
            "delete_share": DELETE_SHARE, "epsilon": EPSILON, "grid": asdict(cfg.grid),
            "graphs": [list(g) for g in cfg.grid.builds()], "ef_stops_at_recall": max(SATURATED, cfg.recall_target),
            "delete_test_on": "exact, the anchors' graphs and the recommended graph",
            "anchors": {name: dict(zip(("M", "ef_construction", "ef"), s, strict=True))
                        for s, name in ANCHORS.items()},
            "single_query_time_budget_s": cfg.time_budget}


def dataset_doc(data: Dataset) -> dict[str, Any]:
    return {"name": data.name, "vectors": len(data.vectors), "dim": data.dim, "embedder": data.embedder,
            "exact_below": data.exact_below, **data.info}


