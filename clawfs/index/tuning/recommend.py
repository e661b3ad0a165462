"""Rows of the sweep and the choice among them: the Pareto front, the recommended setting, and whether exact
search is the better choice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import Config


@dataclass
class Row:
    """One setting at one size.  Graph figures (build, memory, adds) are shared by the rows of one graph; the
    delete test's figures are None for graphs it did not run on (it runs on the anchors' and the recommended)."""

    size: int
    kind: str  # "exact" or "hnsw"
    M: int | None
    ef_construction: int | None
    ef: int | None
    anchor: str | None
    recall: float
    recall_after_churn: float | None
    qps_single: float
    qps_batch: float
    build_s: float
    memory_bytes: int
    graph_bytes: int
    bytes_per_vector: float
    add_ms_p50: float  # single add() of a new id into a fresh slot
    add_ms_p99: float
    replace_ms_p50: float | None  # single add() of a new id into a deleted slot (replace_deleted)
    replace_ms_p99: float | None
    pareto: bool = False
    recommended: bool = False

    @property
    def setting(self) -> str:
        if self.kind == "exact":
            return "exact"
        return f"M={self.M} ef_construction={self.ef_construction} ef={self.ef}"

    @property
    def graph(self) -> tuple[int, int] | None:
        return None if self.M is None or self.ef_construction is None else (self.M, self.ef_construction)


def mark_pareto(rows: Sequence[Row]) -> None:
    """Rows no other row beats on both recall and single-query QPS (ann-benchmarks' frontier)."""
    for r in rows:
        r.pareto = not any(o.recall >= r.recall and o.qps_single >= r.qps_single
                           and (o.recall > r.recall or o.qps_single > r.qps_single) for o in rows)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def within_budget(rows: Sequence[Row], cfg: Config) -> list[Row]:
    return [r for r in rows if r.kind == "hnsw" and (cfg.memory_budget is None or r.memory_bytes <= cfg.memory_budget)]


def best_row(rows: Sequence[Row], cfg: Config) -> Row | None:
    """The row `recommend` picks: the highest single-query QPS meeting the recall target within the budget."""
    meets = [r for r in within_budget(rows, cfg) if r.recall >= cfg.recall_target]
    return max(meets, key=lambda r: (r.qps_single, -r.memory_bytes)) if meets else None


def recommend(rows: Sequence[Row], n: int, cfg: Config, exact_below: int) -> dict[str, Any]:
    """The highest single-query QPS among HNSW settings meeting the recall target within the memory budget."""
    exact = next(r for r in rows if r.kind == "exact")
    hnsw = [r for r in rows if r.kind == "hnsw"]
    fits = within_budget(rows, cfg)
    meets = [r for r in fits if r.recall >= cfg.recall_target]
    budget = "" if cfg.memory_budget is None else f" within {fmt_bytes(cfg.memory_budget)}"
    best = best_row(rows, cfg)
    if best is None:
        return _unmet(hnsw, fits, exact, cfg, budget)
    best.recommended = True
    speedup = best.qps_single / exact.qps_single
    reason = (f"{best.setting}: recall@{cfg.k} {best.recall:.3f} at {best.qps_single:,.0f} QPS "
              f"({speedup:.1f}x exact), {fmt_bytes(best.memory_bytes)}; the fastest of the {len(meets)} "
              f"settings reaching recall@{cfg.k} >= {cfg.recall_target}{budget}")
    out = {"status": "ok", "setting": _setting(best), "recall": best.recall, "qps_single": best.qps_single,
           "exact_qps_single": exact.qps_single, "speedup_vs_exact": round(speedup, 2),
           "memory_bytes": best.memory_bytes, "reason": reason}
    return out | _exact_verdict(exact, best, n, exact_below)


def _setting(r: Row) -> dict[str, int | None]:
    return {"M": r.M, "ef_construction": r.ef_construction, "ef": r.ef}


def _unmet(hnsw: Sequence[Row], fits: Sequence[Row], exact: Row, cfg: Config, budget: str) -> dict[str, Any]:
    """No setting qualifies: say the best found, and whether the target or the budget is to blame."""
    target = f"recall@{cfg.k} >= {cfg.recall_target}"
    reachable = any(r.recall >= cfg.recall_target for r in hnsw)
    best = max(fits or hnsw, key=lambda r: (r.recall, r.qps_single))
    if not fits:
        reason = f"no HNSW setting fits{budget}: the smallest needs {fmt_bytes(min(r.memory_bytes for r in hnsw))}"
    elif reachable:
        reason = (f"no setting reaches {target}{budget}: the best within the budget is {best.setting} with recall "
                  f"{best.recall:.3f} ({fmt_bytes(best.memory_bytes)})")
    else:
        reason = (f"no setting reaches {target}: the best found is {best.setting} with recall {best.recall:.3f} "
                  f"at {best.qps_single:,.0f} QPS")
    reason += f"; exact search gives recall 1.0 at {exact.qps_single:,.0f} QPS ({fmt_bytes(exact.memory_bytes)})"
    return {"status": "unreachable" if fits and not reachable else "over_budget", "setting": None,
            "best_found": _setting(best), "best_found_recall": best.recall, "exact_qps_single": exact.qps_single,
            "reason": reason, "exact_better": True,
            "exact_reason": "exact search is the only setting meeting the target"}


def _exact_verdict(exact: Row, best: Row, n: int, exact_below: int) -> dict[str, Any]:
    """Is exact search the better choice at this size?"""
    if exact.qps_single >= best.qps_single:
        why = (f"exact search is the better choice here: it is as fast or faster ({exact.qps_single:,.0f} vs "
               f"{best.qps_single:,.0f} QPS) with recall 1.0 and {fmt_bytes(exact.memory_bytes)}")
    elif n < exact_below:
        why = (f"exact search is the better choice at this size: n={n:,} is below exact_below={exact_below:,}, "
               f"so the store searches exactly anyway (recall 1.0 at {exact.qps_single:,.0f} QPS against HNSW's "
               f"{best.qps_single:,.0f}); the HNSW setting takes effect once the store grows past exact_below")
    else:
        return {"exact_better": False, "exact_reason": None}
    return {"exact_better": True, "exact_reason": why}


