"""Measuring one index: the split into indexed vectors and held-out queries, exact ground truth, recall@k,
queries per second, and the delete-and-re-add test."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from clawfs.index.vectors import VectorIndex

from .config import EPSILON, TIMED_ADDS, Config, replacements
from .datasets import F32


@dataclass
class Split:
    """One size's share of the dataset: ids 0..n-1 are indexed; the delete test removes the `deleted` ids and
    adds the same vectors back under the new ids n..n+r-1 (as a file rewritten with the same text, or renamed,
    comes back: new chunk ids, other graph slots).  The indexed vectors are then the same set as before, so one
    ground truth serves both measurements, and no corpus paragraph is embedded only for the delete test."""

    base: F32
    queries: F32
    deleted: NDArray[np.int64]

    @property
    def n(self) -> int:
        return len(self.base)

    @property
    def replacements(self) -> F32:
        out: F32 = self.base[self.deleted]
        return out

    def by_id(self) -> F32:
        """Every vector ever indexed, row = id."""
        out: F32 = np.concatenate([self.base, self.replacements])
        return out


def split(vectors: F32, n: int, queries: int, seed: int) -> Split:
    """The first n rows are indexed, the queries are the dataset's last rows (the same at every size)."""
    deleted = np.sort(np.random.default_rng(seed + n).choice(n, size=replacements(n), replace=False))
    return Split(vectors[:n], vectors[len(vectors) - queries :], deleted.astype(np.int64))


# ---- ground truth and recall -------------------------------------------------------------------------------


def exact_knn(base: F32, queries: F32, k: int) -> tuple[NDArray[np.int64], F32]:
    """Row numbers (nq, k) and cosine distances (nq, k) of the true nearest neighbours, nearest first (numpy)."""
    k = min(k, len(base))
    ids = np.empty((len(queries), k), dtype=np.int64)
    dists = np.empty((len(queries), k), dtype=np.float32)
    block = max(1, (1 << 24) // max(1, len(base)))
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ base.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(base) else np.argsort(-sims, axis=1)
        top = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        ids[start : start + block] = np.take_along_axis(part, order, axis=1)
        dists[start : start + block] = 1.0 - np.take_along_axis(top, order, axis=1)
    return ids, dists


def recall_at_k(found: Sequence[Sequence[tuple[int, float]]], by_id: F32, queries: F32, kth: F32, k: int) -> float:
    """ann-benchmarks' recall: a returned id is a hit when its distance (recomputed from the data) is at most
    the true k-th neighbour's distance + 1e-3; missing results are misses."""
    hits = 0
    for i, result in enumerate(found):
        ids = np.fromiter((r[0] for r in result[:k]), dtype=np.int64, count=min(k, len(result)))
        dist = 1.0 - by_id[ids] @ queries[i]
        hits += int((dist <= kth[i] + EPSILON).sum())
    return hits / (k * len(found)) if found else 0.0


@dataclass
class Truth:
    """The k-th true distance per query (the same after the delete test, which re-adds what it deletes)."""

    kth: F32
    seconds: float


def ground_truth(s: Split, k: int) -> Truth:
    """Exact numpy top-k of every query, once per size: blocks of queries against the whole matrix."""
    t0 = time.perf_counter()
    _, dists = exact_knn(s.base, s.queries, k)
    return Truth(dists[:, -1].copy(), time.perf_counter() - t0)


# ---- measuring ---------------------------------------------------------------------------------------------

MIN_TIMED = 20  # single queries timed at least, whatever the time budget


@dataclass
class Searched:
    recall: float
    qps_single: float
    qps_batch: float


def measure_search(index: VectorIndex, s: Split, kth: F32, cfg: Config, *, exact: bool) -> Searched:
    """Recall from one batch (best of two timings for batch QPS), then single queries against a time budget
    (VectorIndex keeps numpy's BLAS on one thread for a single exact query itself)."""
    batch_s = float("inf")
    found: list[list[tuple[int, float]]] = []
    with threadpool_limits(limits=cfg.num_threads, user_api="blas"):
        for _ in range(2):
            t0 = time.perf_counter()
            found = index.search_batch(s.queries, cfg.k, exact=exact)
            batch_s = min(batch_s, time.perf_counter() - t0)
    recall = recall_at_k(found, s.by_id(), s.queries, kth, cfg.k)
    return Searched(recall, single_qps(index, s.queries, cfg, exact=exact), len(s.queries) / batch_s)


def single_qps(index: VectorIndex, queries: F32, cfg: Config, *, exact: bool) -> float:
    """Queries per second, one query per call on one thread (as the agent searches): the best of up to three
    passes within the time budget (a busy machine only ever slows a pass down, as in ann-benchmarks)."""
    for q in queries[:3]:
        index.search(q, cfg.k, exact=exact)
    best, spent = 0.0, 0.0
    for _ in range(3):
        done, t0 = 0, time.perf_counter()
        for q in queries:
            index.search(q, cfg.k, exact=exact)
            done += 1
            if done >= MIN_TIMED and time.perf_counter() - t0 >= cfg.time_budget:
                break
        elapsed = time.perf_counter() - t0
        best, spent = max(best, done / elapsed), spent + elapsed
        if spent >= cfg.time_budget:
            break
    return best


def churn(index: VectorIndex, s: Split) -> list[float]:
    """Delete 10% (mark_deleted), then add the same vectors back under new ids: the first ones one at a time
    (timed, each reusing a deleted slot: what a rewritten file costs), the rest in one batch.  Returns the ms."""
    for vid in s.deleted.tolist():
        index.remove(vid)
    new_ids, again = s.n + np.arange(len(s.deleted)), s.replacements
    timed = min(TIMED_ADDS, len(new_ids))
    replace_ms: list[float] = []
    for i in range(timed):
        t0 = time.perf_counter()
        index.add([int(new_ids[i])], again[i : i + 1])
        replace_ms.append((time.perf_counter() - t0) * 1e3)
    if timed < len(new_ids):
        index.add(new_ids[timed:], again[timed:])
    return replace_ms


def fresh_adds(index: VectorIndex, s: Split) -> list[float]:
    """ms of single adds of new ids into fresh slots (the index grows: a new file), timed once all measuring is
    done (the vectors added are the queries, which must stay out of the index until then)."""
    first = s.n + len(s.deleted)
    add_ms: list[float] = []
    for i in range(min(TIMED_ADDS // 5, len(s.queries))):
        t0 = time.perf_counter()
        index.add([first + i], s.queries[i : i + 1])
        add_ms.append((time.perf_counter() - t0) * 1e3)
    return add_ms


def recall_after_churn(index: VectorIndex, s: Split, truth: Truth, cfg: Config, *, exact: bool) -> float:
    found = index.search_batch(s.queries, cfg.k, exact=exact)
    return recall_at_k(found, s.by_id(), s.queries, truth.kth, cfg.k)


