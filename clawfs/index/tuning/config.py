"""The tuner's settings: the parameter grid and its anchors, one run's configuration, and the index sizes
and query counts a dataset allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clawfs.errors import UserError
from clawfs.index.engine import SETTINGS
from kernel import sysinfo

SEED = 20240605
EPSILON = 1e-3  # ann-benchmarks' distance slack for a hit
DEFAULT_EXACT_BELOW = SETTINGS["exact_below"]  # a new store searches exactly below this many vectors
PGVECTOR = (16, 64, 40)
HNSWLIB = (16, 200, 10)
ANCHORS = {PGVECTOR: "pgvector defaults", HNSWLIB: "hnswlib defaults"}
SYNTHETIC_MAX = 1_000_000
DELETE_SHARE = 0.1
TIMED_ADDS = 1000  # single-vector re-adds timed per graph; the rest of the deleted vectors go back in one batch
SATURATED = 0.999  # recall@k from which a graph's larger ef values are skipped (anchors' graphs excepted)


@dataclass(frozen=True)
class Grid:
    """The parameter sweep: one graph per (M, ef_construction), searched at rising ef."""

    M: tuple[int, ...] = (8, 16, 32, 64)
    ef_construction: tuple[int, ...] = (64, 200, 400)
    ef: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 800)

    def builds(self) -> list[tuple[int, int]]:
        """The grid's (M, ef_construction) with ef_construction >= 2*M, plus the anchors' graphs; cheapest
        first (by ef_construction, then M).  Below 2*M a node's candidates cannot fill its 2*M level-0 links,
        which is why pgvector refuses such a setting (here it drops only M=64 with ef_construction=64)."""
        pairs = {(m, c) for m in self.M for c in self.ef_construction if c >= 2 * m}
        pairs |= {(m, c) for m, c, _ in ANCHORS}
        return sorted(pairs, key=lambda p: (p[1], p[0]))

    def efs(self, m: int, efc: int) -> list[int]:
        """The ef values searched on one graph (the grid's, plus an anchor's own ef)."""
        return sorted(set(self.ef) | {ef for am, ac, ef in ANCHORS if (am, ac) == (m, efc)})


def anchor_graph(m: int, efc: int) -> bool:
    return any((am, ac) == (m, efc) for am, ac, _ in ANCHORS)


FULL_GRID = Grid()
QUICK_GRID = Grid(M=(8, 16, 32), ef_construction=(64, 200), ef=(10, 20, 40, 80, 160, 400))


@dataclass(frozen=True)
class Config:
    """One bench run."""

    sizes: tuple[int, ...] | None  # None: the dataset's default sizes
    k: int = 10
    recall_target: float = 0.98
    memory_budget: int | None = None
    threads: int = 0  # 0: every core
    quick: bool = False
    seed: int = SEED
    custom_grid: Grid | None = None  # tests sweep less

    @property
    def grid(self) -> Grid:
        return self.custom_grid or (QUICK_GRID if self.quick else FULL_GRID)

    @property
    def queries(self) -> int:
        return 200 if self.quick else 1000

    @property
    def num_threads(self) -> int:
        return self.threads or sysinfo.cpu_count()

    @property
    def time_budget(self) -> float:
        """Seconds at most spent timing single queries for one row (at least MIN_TIMED queries run)."""
        return 0.5 if self.quick else 1.0


# ---- sizes and splits --------------------------------------------------------------------------------------


def replacements(n: int) -> int:
    """How many vectors the delete test removes and adds back (10%)."""
    return max(1, int(n * DELETE_SHARE))


def needed(n: int, queries: int) -> int:
    """Dataset vectors one size uses: indexed, and held-out queries (the delete test re-adds deleted vectors)."""
    return n + queries


def plan(available: int | None, requested: Sequence[int] | None, default: Sequence[int],
         cfg: Config) -> tuple[list[int], int]:
    """(sizes, query count).  `available` None: the dataset is generated or embedded on demand."""
    queries = cfg.queries if available is None else min(cfg.queries, max(10, available // 10))
    if requested:
        sizes = sorted(set(requested))
        if available is not None and needed(sizes[-1], queries) > available:
            raise UserError(f"size {sizes[-1]:,} needs {needed(sizes[-1], queries):,} vectors ({sizes[-1]:,} "
                            f"indexed + {queries:,} queries); the dataset has {available:,}: use smaller --sizes")
    elif available is None:
        sizes = sorted(set(default))
    else:
        sizes = [available - queries]
    if cfg.k < 1:
        raise UserError("--k must be at least 1")
    if cfg.k > sizes[0]:
        raise UserError(f"--k {cfg.k} is larger than the dataset ({sizes[0]:,} vectors indexed at the smallest "
                        "size): lower --k or use larger --sizes")
    return sizes, queries


DATASETS = ("debian-docs", "synthetic")
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (2_000,)

