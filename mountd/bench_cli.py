"""`clawfs bench`: benchmarks that answer a user's question about their own store.

`clawfs bench hnsw` answers "which M / ef_construction / ef should my store use, and what does it cost?"; the
tuner itself is the library clawfs.index.tuning, imported when the command runs (it pulls in numpy and the index
engine, which `clawfs --help` need not pay for).  This module only reads the options and shows the results;
mountd/cli.py registers the group.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from clawfs.errors import UserError

from .keyopts import with_key_options
from .ui import Progress, parse_counts, parse_size

if TYPE_CHECKING:
    from clawfs.index.tuning.config import Config
    from clawfs.keys import Credentials


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmarks on your store or on real data: measured answers, with plots."""


@bench.command("hnsw")
@click.option("--store", type=click.Path(), help="Bench this store's own vectors (decrypted in memory only).")
@with_key_options
@click.option("--dataset", metavar="NAME_OR_NPY",
              help="debian-docs (the default: paragraphs of /usr/share/doc and the man pages, embedded and "
                   "cached), synthetic (clustered, up to 1M), or a .npy file of float32 (n, d) vectors.")
@click.option("--sizes", metavar="10k,100k",
              help="Index sizes (default 10k,100k; 2k with --quick; with --store alone, all its vectors).")
@click.option("--k", "k", type=int, default=10, show_default=True, help="Neighbours per query (recall@k).")
@click.option("--recall-target", type=float, default=0.98, show_default=True,
              help="The recall@k the recommended setting must reach.")
@click.option("--memory-budget", metavar="SIZE", help="Most index memory allowed, e.g. 512M or 2G.")
@click.option("--threads", type=int, help="Threads for building and batch search (default: every core).")
@click.option("--out", type=click.Path(file_okay=False), default="hnsw-bench", show_default=True,
              help="Directory for results.json, results.csv and the PNG plots.")
@click.option("--quick", is_flag=True, help="A smaller sweep that finishes in under 2 minutes.")
@click.option("--apply", "apply_", is_flag=True,
              help="Write the recommended setting into the store and rebuild its index (needs --store).")
def hnsw(store: str | None, creds: Credentials, dataset: str | None, sizes: str | None, k: int,
         recall_target: float, memory_budget: str | None, threads: int | None, out: str, quick: bool,
         apply_: bool) -> int:
    """Find the best HNSW setting (M, ef_construction, ef) for a store, and what it costs.

    Sweeps M, ef_construction and ef; measures recall@k against exact search, queries per second, build
    time, memory, add latency and recall after deletes; recommends the fastest setting that reaches
    --recall-target within --memory-budget, or says when exact search is the better choice."""
    cfg = _config(sizes, k, recall_target, memory_budget, threads, quick)
    if apply_ and not store:
        raise UserError("--apply needs --store STORE: the setting is written into that store")
    return run_hnsw(store, creds, dataset, cfg, out, apply_)


def _config(sizes: str | None, k: int, recall_target: float, memory_budget: str | None, threads: int | None,
            quick: bool) -> Config:
    from clawfs.index.tuning.config import Config

    if not 0.0 < recall_target <= 1.0:
        raise UserError(f"--recall-target {recall_target} must be above 0 and at most 1")
    if threads is not None and threads < 1:
        raise UserError("--threads must be at least 1")
    budget = parse_size(memory_budget) if memory_budget else None
    if budget is not None and budget < 1:
        raise UserError("--memory-budget must be positive")
    return Config(parse_counts(sizes, "--sizes", "vectors"), k, recall_target, budget, threads or 0, quick)


def run_hnsw(store: str | None, creds: Credentials, dataset: str | None, cfg: Config, out: str,
             apply_: bool) -> int:
    """The command's work: check, bench, report, and apply when asked."""
    from rich.console import Console

    from clawfs.index.tuning import datasets, report, storage, sweep
    from clawfs.index.tuning.timing import Phases

    if apply_ and store:
        storage.check_unmounted(store)
    phases = Phases()
    with Progress() as progress:
        own = None
        if store:
            with phases("reading the store"):
                own = storage.read_store(store, creds, vectors=dataset is None, seed=cfg.seed, progress=progress)
        data, plan, queries = datasets.open_dataset(dataset, own, cfg, progress, phases)
        if apply_ and own is not None and own.dim != data.dim:
            raise UserError(f"the dataset has {data.dim} dimensions and {store}'s index {own.dim}: a setting "
                            "tuned on other vectors is not applied; bench the store itself (--store without "
                            "--dataset) or a dataset embedded with its embedder")
        doc = sweep.run(data, plan, queries, cfg, progress, phases)
    report.render_table(doc, Console() if sys.stdout.isatty() else Console(width=180))
    files = report.write_outputs(doc, Path(out), phases)
    for line in report.summary(doc):
        click.echo(line)
    click.echo(f"results: {', '.join(files.values())}")
    rec = doc["recommendation"]
    if rec["status"] != "ok":
        raise UserError(f"{rec['reason']} (results in {out})")
    if apply_ and store:
        _apply(store, creds, rec)
    return 0


def _apply(store: str, creds: Credentials, rec: dict[str, Any]) -> None:
    from clawfs.index.tuning import storage

    with Progress() as progress:
        done = storage.apply_setting(store, creds, rec["setting"], progress)
    a, b = done["after"], done["before"]
    click.echo(f"applied to {store}: M={a['hnsw_m']} ef_construction={a['hnsw_ef_construction']} "
               f"ef={a['hnsw_ef']} (was M={b['hnsw_m']} ef_construction={b['hnsw_ef_construction']} "
               f"ef={b['hnsw_ef']}); " + (f"graph of {done['vectors']:,} vectors rebuilt in {done['rebuild_s']} s"
                                          if done["rebuilt"] else "same graph, new ef (no rebuild needed)"))
    if rec.get("exact_better"):
        click.echo(f"note: {rec['exact_reason']}")
