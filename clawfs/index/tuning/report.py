"""The results of a run as a person reads them: results.json and results.csv, two PNG plots (matplotlib,
an optional extra, imported only here and only when plotting), a rich table per size, and a summary."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ANCHORS, PGVECTOR
from .recommend import Row, fmt_bytes
from .timing import Phases

if TYPE_CHECKING:
    from rich.console import Console

# ---- outputs -----------------------------------------------------------------------------------------------

CSV_FIELDS = [f.name for f in Row.__dataclass_fields__.values()]


def all_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for size in doc["sizes"] for row in size["rows"]]


def write_outputs(doc: dict[str, Any], out: Path, phases: Phases | None = None) -> dict[str, str]:
    """The two PNG plots, results.csv and results.json (last, so that its timing includes the plots)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "csv": out / "results.csv", "recall_qps": out / "recall_qps.png",
             "build_memory": out / "build_memory.png"}
    doc["files"] = {k: str(v) for k, v in files.items()}
    with (phases or Phases())("plots and results files"):
        plot_recall_qps(doc, files["recall_qps"])
        plot_build_memory(doc, files["build_memory"])
        with files["csv"].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["dataset", *CSV_FIELDS])
            writer.writeheader()
            for row in all_rows(doc):
                writer.writerow({"dataset": doc["dataset"]["name"], **row})
    if phases is not None:
        doc["timing"] = phases.doc()
    files["json"].write_text(json.dumps(doc, indent=2) + "\n")
    return doc["files"]  # type: ignore[no-any-return]


def _frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(recall, qps) points no other beats on both, by increasing recall."""
    best_qps, front = -1.0, []
    for recall, qps in sorted(points, key=lambda p: (-p[0], -p[1])):
        if qps > best_qps:
            front.append((recall, qps))
            best_qps = qps
    return sorted(front)


def plot_recall_qps(doc: dict[str, Any], path: Path) -> None:
    """Recall against single-query QPS (log), one Pareto line per M, ann-benchmarks style; one panel per size."""
    from matplotlib.figure import Figure

    sizes = doc["sizes"]
    fig = Figure(figsize=(6.5 * len(sizes), 5.2), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes, strict=True):
        _recall_panel(ax, size, doc["config"])
    fig.suptitle(f"clawfs bench hnsw: {doc['dataset']['name']} ({doc['dataset']['dim']}-d), "
                 f"recall@{doc['config']['k']} vs queries/s (1 thread)")
    fig.savefig(path, dpi=110)


def _recall_panel(ax: Any, size: dict[str, Any], config: dict[str, Any]) -> None:
    rows = size["rows"]
    hnsw = [r for r in rows if r["kind"] == "hnsw"]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for colour, m in zip(colours * 4, sorted({r["M"] for r in hnsw}), strict=False):
        mine = [(r["recall"], r["qps_single"]) for r in hnsw if r["M"] == m]
        ax.scatter(*zip(*mine, strict=True), s=10, color=colour, alpha=0.3)
        ax.plot(*zip(*_frontier(mine), strict=True), "-o", ms=4, color=colour, label=f"HNSW M={m}")
    exact = next(r for r in rows if r["kind"] == "exact")
    ax.axhline(exact["qps_single"], color="black", ls="--", lw=1)
    ax.plot([exact["recall"]], [exact["qps_single"]], "k*", ms=12, label="exact (numpy)")
    for r, marker in ((r, "s" if r["anchor"] == ANCHORS[PGVECTOR] else "D") for r in hnsw if r["anchor"]):
        ax.plot([r["recall"]], [r["qps_single"]], marker, ms=9, mfc="none", mec="black", label=r["anchor"])
    for r in (r for r in hnsw if r["recommended"]):
        ax.plot([r["recall"]], [r["qps_single"]], "*", ms=18, color="gold", mec="black", label="recommended")
    ax.axvline(config["recall_target"], color="grey", ls=":", lw=1)
    low = min(r["recall"] for r in rows)
    ax.set_xlim(max(0.0, low - 0.02), 1.005)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{config['k']}")
    ax.set_ylabel("queries per second (log)")
    ax.set_title(f"n={size['n']:,}, {size['queries']:,} held-out queries")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")


def plot_build_memory(doc: dict[str, Any], path: Path) -> None:
    """Build time and index memory against M: one line per ef_construction (and size)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogFormatter

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    styles, colours = ["-", "--", "-.", ":"], ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    efcs = sorted({r["ef_construction"] for r in all_rows(doc) if r["kind"] == "hnsw"})
    for i, size in enumerate(doc["sizes"]):
        style, colour = styles[i % 4], colours[i % 5]
        graphs = {(r["M"], r["ef_construction"]): r for r in size["rows"] if r["kind"] == "hnsw"}
        for efc in sorted({c for _, c in graphs}):
            ms = sorted(m for m, c in graphs if c == efc)
            left.plot(ms, [graphs[m, efc]["build_s"] for m in ms], style, marker="o",
                      color=colours[efcs.index(efc) % 5], label=f"n={size['n']:,}, ef_construction={efc}")
        ms = sorted({m for m, _ in graphs})
        mem = [max(r["memory_bytes"] for (m2, _), r in graphs.items() if m2 == m) / 2**20 for m in ms]
        right.plot(ms, mem, style, marker="o", color=colour, label=f"n={size['n']:,}: HNSW + matrix")
        exact = next(r for r in size["rows"] if r["kind"] == "exact")
        right.axhline(exact["memory_bytes"] / 2**20, color=colour, ls=":", lw=1,
                      label=f"n={size['n']:,}: exact (matrix only)")
    if doc["config"]["memory_budget"]:
        right.axhline(doc["config"]["memory_budget"] / 2**20, color="red", lw=1, label="--memory-budget")
    all_m = sorted({r["M"] for r in all_rows(doc) if r["kind"] == "hnsw"})
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax, what in ((left, "build time (s, log)"), (right, "index memory (MiB, log)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_m, [str(m) for m in all_m])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # labels minor ticks only on short axes
        ax.set_xlabel("M")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"clawfs bench hnsw: {doc['dataset']['name']}, {doc['config']['threads']} build threads")
    fig.savefig(path, dpi=110)


def _shown(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows worth a terminal line: exact, the anchors, the Pareto front and the recommendation."""
    keep = [r for r in rows if r["kind"] == "exact" or r["anchor"] or r["pareto"] or r["recommended"]]
    return sorted(keep, key=lambda r: (r["kind"] != "exact", -r["recall"], -r["qps_single"]))


def render_table(doc: dict[str, Any], console: Console) -> None:
    """One rich table per size (exact, anchors, Pareto front, recommended); every row is in results.csv."""
    from rich.table import Table

    k = doc["config"]["k"]
    for size in doc["sizes"]:
        exact_qps = next(r for r in size["rows"] if r["kind"] == "exact")["qps_single"]
        shown = _shown(size["rows"])
        table = Table(title=f"{doc['dataset']['name']}: n={size['n']:,}, {size['dim']}-d, {size['queries']:,} "
                            f"held-out queries, k={k}: exact, anchors and the Pareto front ({len(shown)} of "
                            f"{len(size['rows'])} rows; all in results.csv); churned = recall after 10% deleted "
                            "and added back (exact, anchors' and recommended graph)")
        for name in ("M/efc/ef", "", f"recall@{k}", "churned", "QPS 1 thr", "QPS batch", "x exact", "build s",
                     "memory", "B/vec", "add ms p50/99", "replace ms p50/99"):
            table.add_column(name, justify="left" if name in ("M/efc/ef", "") else "right", no_wrap=True)
        for r in shown:
            note = ", ".join(x for x in (r["anchor"], "recommended" if r["recommended"] else None) if x)
            setting = "exact" if r["kind"] == "exact" else f"{r['M']}/{r['ef_construction']}/{r['ef']}"
            table.add_row(setting, note, f"{r['recall']:.4f}", _opt(r["recall_after_churn"], "{:.4f}"),
                          f"{r['qps_single']:,.0f}", f"{r['qps_batch']:,.0f}", f"{r['qps_single'] / exact_qps:.1f}",
                          f"{r['build_s']:.2f}", fmt_bytes(r["memory_bytes"]), f"{r['bytes_per_vector']:,.0f}",
                          f"{r['add_ms_p50']:.2f}/{r['add_ms_p99']:.2f}",
                          _opt(r["replace_ms_p50"], "{:.2f}") + "/" + _opt(r["replace_ms_p99"], "{:.2f}"),
                          style="bold" if r["recommended"] else None)
        console.print(table)


def _opt(value: float | None, fmt: str) -> str:
    """A figure of the delete test, or a dash where it did not run."""
    return "-" if value is None else fmt.format(value)


def summary(doc: dict[str, Any]) -> list[str]:
    """The recommendation (and the exact-search verdict) of every size, one line each."""
    lines = []
    for size in doc["sizes"]:
        rec = size["recommendation"]
        lines.append(f"n={size['n']:,}: {'recommended' if rec['status'] == 'ok' else 'none'}: {rec['reason']}")
        if rec["status"] == "ok" and rec["exact_better"]:
            lines.append(f"n={size['n']:,}: {rec['exact_reason']}")
    return lines


