"""The engine of `clawfs bench hnsw`: which M / ef_construction / ef should a store use, and what does it cost?

Datasets (each shuffled with a fixed seed, rows L2-normalised, so cosine = dot product):
    * `--store`: the store's own vectors, decrypted in memory only (nothing plaintext is ever written out);
    * `debian-docs`: paragraphs of /usr/share/doc (README, changelog, copyright, ... gz allowed) and the man pages
      (troff stripped), embedded with the store's embedder (default all-MiniLM-L6-v2) and cached under
      ~/.cache/clawfs/bench/ keyed by corpus fingerprint and model (public text only);
    * a `.npy` file of float32 (n, d) vectors;
    * `synthetic`: seeded clustered vectors of low intrinsic dimension (like embeddings), up to 1M.

For each size n the dataset is split into n indexed vectors and held-out queries (never in the index): a 100k
run embeds 101k paragraphs.  Ground truth is exact numpy top-k, computed once per size.  The sweep builds one HNSW
graph per (M, ef_construction) with ef_construction >= 2*M (pgvector's own rule), cheapest first, always including
the two anchors (pgvector's defaults m=16, ef_construction=64, ef_search=40, and hnswlib's M=16,
ef_construction=200, ef=10), and searches each at rising ef until recall@k reaches 0.999 (the anchors' graphs at
every ef): recall@k as ann-benchmarks defines it (a returned neighbour is a hit when its distance is within the
true k-th neighbour's distance + 1e-3), single-query and batch QPS; per graph: build time, memory and single-vector
add latency.  The delete test (10% of the vectors `mark_deleted`, then added back under new ids into the freed
slots: recall afterwards, and the latency of each re-add) runs on the exact index, the anchors' graphs and the
recommended graph, which are kept in memory until the sweep ends; every other graph is freed once searched.
Exact search is always a row.  results.json records the wall time of every phase and the load average at its
start and end (other work on the machine slows a run down; the load says by how much).

hnswlib is driven only through `clawfs.index.vectors.VectorIndex`, the project's one hnswlib importer.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import hashlib
import json
import math
import os
import platform
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from clawfs.errors import StoreBusy, UserError
from clawfs.index.engine import SETTINGS
from clawfs.index.vectors import IndexParams, VectorIndex

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress

    from clawfs.index.embedder import Embedder
    from clawfs.keys import Credentials

F32 = NDArray[np.float32]
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
        return self.threads or os.cpu_count() or 1

    @property
    def time_budget(self) -> float:
        """Seconds at most spent timing single queries for one row (at least MIN_TIMED queries run)."""
        return 0.5 if self.quick else 1.0


# ---- progress ----------------------------------------------------------------------------------------------


class Progress:
    """Progress on stderr: a rich progress bar on a terminal; elsewhere (CI logs) a plain line when a task starts
    and at most every `LINE_EVERY` seconds; nothing with `enabled=False` (tests)."""

    LINE_EVERY = 15.0

    def __init__(self, enabled: bool = True) -> None:
        self._bar: RichProgress | None = None
        self._console: Console | None = None
        self._lines: dict[int, list[Any]] = {}  # task -> [description, completed, total]
        self._last_line = 0.0
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True)
            if self._console.is_terminal:
                self._bar = _rich_bar(self._console)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def task(self, description: str, total: float | None) -> int:
        if self._bar is not None:
            return int(self._bar.add_task(description, total=total))
        if self._console is None:
            return -1
        task = len(self._lines)
        self._lines[task] = [description, 0.0, total]
        self._line(task, force=True)
        return task

    def update(self, task: int, *, advance: float = 0, description: str | None = None) -> None:
        if self._bar is not None and task >= 0:
            from rich.progress import TaskID

            self._bar.update(TaskID(task), advance=advance, description=description)
        elif task in self._lines:
            state = self._lines[task]
            state[0], state[1] = description or state[0], state[1] + advance
            self._line(task)

    def finish(self, task: int) -> None:
        """Show the task complete (its total was an estimate, or None for a spinner)."""
        if self._bar is not None and task >= 0:
            from rich.progress import TaskID

            done = next(t for t in self._bar.tasks if t.id == task)
            total = done.total or max(done.completed, 1)
            self._bar.update(TaskID(task), total=total, completed=total)

    def log(self, message: str) -> None:
        if self._console is not None:
            self._console.print(message, markup=False, highlight=False, soft_wrap=True)

    def _line(self, task: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_line >= self.LINE_EVERY:
            self._last_line = now
            description, completed, total = self._lines[task]
            of = f" ({completed:,.0f}/{total:,.0f})" if total else ""
            self.log(f"{time.strftime('%H:%M:%S')} {description}{of}")


class Phases:
    """Wall time of each phase of a run, with the load average at its start and end: other work may share the
    machine, and the load says how much of a slow phase is the machine's rather than the bench's."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start, load = time.perf_counter(), os.getloadavg()
        try:
            yield
        finally:
            self.rows.append({"phase": name, "wall_s": round(time.perf_counter() - start, 1),
                              "load_start": _load(load), "load_end": _load(os.getloadavg())})

    def doc(self) -> dict[str, Any]:
        """Whole seconds since this object was made (the command's start), and every phase so far."""
        return {"wall_s": round(time.perf_counter() - self._t0, 1), "phases": self.rows}


def _load(avg: tuple[float, float, float]) -> list[float]:
    return [round(x, 2) for x in avg]


def _rich_bar(console: Console) -> RichProgress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


# ---- datasets ----------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Unit-length float32 vectors in a fixed shuffled order, and where they came from."""

    name: str
    vectors: F32
    embedder: str | None = None
    exact_below: int = DEFAULT_EXACT_BELOW
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def unit_rows(vectors: NDArray[Any], what: str) -> F32:
    """float32 rows scaled to length 1; refuses NaN, inf and zero rows (no direction: no cosine)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise UserError(f"{what}: vectors must be finite (found NaN or inf)")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise UserError(f"{what}: {int((norms == 0).sum())} vectors are all zeros (no direction for cosine)")
    out: F32 = (arr / norms).astype(np.float32)
    return out


def shuffled(vectors: F32, seed: int) -> F32:
    out: F32 = vectors[np.random.default_rng(seed).permutation(len(vectors))]
    return out


def load_npy(path: str, seed: int = SEED) -> Dataset:
    """A `.npy` file holding a float32 array of shape (n, d)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable .npy file ({e})") from None
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(f"{path} holds {arr.dtype} of shape {arr.shape}; expected float32 vectors of shape "
                        "(n, d), e.g. np.save(path, vectors.astype(np.float32))")
    vectors = shuffled(unit_rows(arr, path), seed)
    return Dataset(f"npy:{os.path.basename(path)}", vectors, info={"path": os.path.abspath(path)})


def synthetic(n: int, dim: int = 384, seed: int = SEED) -> Dataset:
    """Clustered vectors of low intrinsic dimension: each cluster a random 12-dimensional patch around its centre
    (embeddings of real text vary along few directions; uniform noise in 384 dimensions is unrealistically hard)."""
    if n > SYNTHETIC_MAX + SYNTHETIC_MAX // 10 + 1000:
        raise UserError(f"synthetic goes up to {SYNTHETIC_MAX:,} indexed vectors")
    rng = np.random.default_rng(seed)
    clusters, rank = max(8, n // 500), 12
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(clusters)))
    out = np.empty((n, dim), dtype=np.float32)
    row = 0
    for c, size in enumerate(sizes.tolist()):
        basis = rng.standard_normal((rank, dim), dtype=np.float32) * 0.6
        z = rng.standard_normal((size, rank), dtype=np.float32)
        noise = rng.standard_normal((size, dim), dtype=np.float32) * 0.15
        out[row : row + size] = centres[c] + z @ basis + noise
        row += size
    info = {"clusters": clusters, "intrinsic_dim": rank, "seed": seed}
    return Dataset("synthetic", shuffled(unit_rows(out, "synthetic"), seed), info=info)


# ---- debian-docs: a real corpus every Debian machine has offline -------------------------------------------

DOC_ROOT = Path("/usr/share/doc")
MAN_ROOT = Path("/usr/share/man")
CORPUS_VERSION = 1  # bump when the extraction below changes (it is part of the cache key)
MAN_FAMILY_CAP = 300  # at most this many pages of one generated family (16k gcloud_* pages would dominate)
_DOC_NAME = re.compile(r"^(readme|changelog|changes|news|copyright|authors|thanks|todo|faq|bugs|history|"
                       r"contributing|install|usage)([._-].*)?$|\.(txt|md|rst)$", re.IGNORECASE)
_TROFF_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_TROFF_ESC = re.compile(r"\\\*(\[[^\]]*\]|\(..|.)|\\[sn][+-]?(\(..|\[[^\]]*\]|\d+|.)|\\[ck&%|^:/,~0]")
_TROFF_CHAR = re.compile(r"\\\((..)|\\\[([^\]]*)\]")
_TROFF_CHARS = {"aq": "'", "lq": '"', "rq": '"', "oq": "'", "cq": "'", "em": "-", "en": "-", "hy": "-",
                "bu": "*", "co": "(c)", "dq": '"', "ti": "~", "ha": "^", "rs": "\\", "mi": "-", "pl": "+"}
_BREAKS = {"PP", "P", "LP", "TP", "TQ", "IP", "HP", "sp", "SH", "SS", "RS", "RE", "EX", "EE", "nf", "fi", "TH",
           "Sh", "Ss", "Pp", "Bl", "El", "It", "Bd", "Ed", "Dl", "D1"}
_TEXT_MACROS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "Nm", "Nd", "Ar", "Fl", "Pa", "Xr",
                "Em", "Sy", "Li", "Dq", "Qq", "Ql", "Va", "Ev", "Cm", "Ic", "Fn", "Ft", "Op"}
_WS = re.compile(r"\s+")
EMBED_CHUNK = 512  # paragraphs per embedder call (it splits them into its own batches)
SAVE_EVERY = 120.0  # seconds between saves of the embedding cache


def corpus_files(doc_root: Path = DOC_ROOT, man_root: Path = MAN_ROOT) -> list[Path]:
    """Plain-text docs and English man pages, sorted (symlinks not followed, generated families capped)."""
    docs = sorted(Path(d) / f for d, _, files in os.walk(doc_root) for f in files
                  if _DOC_NAME.search(f.removesuffix(".gz")) and not (Path(d) / f).is_symlink())
    pages = sorted(p for p in man_root.glob("man[0-9]*/*.gz") if not p.is_symlink())
    families: dict[str, list[Path]] = {}
    for p in pages:
        families.setdefault(p.name.split("_")[0] if "_" in p.name else p.name, []).append(p)
    kept: list[Path] = []
    for members in families.values():
        step = max(1, -(-len(members) // MAN_FAMILY_CAP))
        kept += members[::step]
    return docs + sorted(kept)


def corpus_fingerprint(files: Sequence[Path], seed: int) -> str:
    """Changes when any source file is added, removed or modified, or the extraction changes."""
    h = hashlib.sha256(f"debian-docs v{CORPUS_VERSION} seed {seed}\n".encode())
    for p in files:
        with contextlib.suppress(OSError):
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def read_text(path: Path, limit: int = 4 << 20) -> str | None:
    """A text file's contents (gunzipped), or None when it is not UTF-8 text."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read(limit)
        else:
            with path.open("rb") as f:
                raw = f.read(limit)
        return None if b"\0" in raw else raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None


def troff_inline(s: str) -> str:
    """Running text of one troff line: font changes, strings and escapes dropped, special characters mapped."""
    s = _TROFF_FONT.sub("", s)
    s = _TROFF_CHAR.sub(lambda m: _TROFF_CHARS.get(m.group(1) or m.group(2), ""), s)
    s = _TROFF_ESC.sub("", s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").replace('\\"', "")
    return s.replace("\\", "")


def troff_paragraphs(src: str) -> list[str]:
    """A man page's paragraphs: macros dropped (their text kept for font and mdoc text macros)."""
    paras: list[str] = []
    cur: list[str] = []
    for line in src.splitlines():
        if line.startswith((".\\\"", "'\\\"", '."')):
            continue
        if line.startswith((".", "'")):
            macro, _, args = line[1:].strip().partition(" ")
            if macro in _BREAKS and cur:
                paras.append(" ".join(cur))
                cur = []
            if macro in _TEXT_MACROS and args:
                cur.append(troff_inline(args.replace('"', "")))
        elif line.strip():
            cur.append(troff_inline(line))
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return paras


def good_paragraph(p: str) -> bool:
    """Text worth embedding: 10+ words, 60+ characters, mostly letters (not tables, code or rulers)."""
    if len(p) < 60 or len(p.split()) < 10:
        return False
    visible = sum(not c.isspace() for c in p)
    return sum(c.isalpha() for c in p) >= 0.65 * visible


def paragraphs_of(path: Path) -> list[str]:
    text = read_text(path)
    if text is None or text.startswith(".so "):
        return []
    raw = troff_paragraphs(text) if path.is_relative_to(MAN_ROOT) or ".TH " in text[:4096] \
        else re.split(r"\n[ \t]*\n", text)
    return [_WS.sub(" ", p).strip()[:2000] for p in raw]


def corpus_paragraphs(files: Sequence[Path], need: int, seed: int) -> Iterator[tuple[bytes, str]]:
    """(digest, text) of distinct good paragraphs, file by file in a seeded random file order, `need` at most."""
    order = list(files)
    random.Random(seed).shuffle(order)
    seen: set[bytes] = set()
    for path in order:
        for p in paragraphs_of(path):
            digest = hashlib.sha256(p.lower().encode("utf-8", "surrogatepass")).digest()[:16]
            if digest in seen or not good_paragraph(p):
                continue
            seen.add(digest)
            yield digest, p
            if len(seen) >= need:
                return


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clawfs" / "bench"


def _cache_name(model: str, fingerprint: str) -> str:
    return f"debian-docs-{re.sub(r'[^A-Za-z0-9.-]+', '_', model)}-{fingerprint[:16]}.npz"


def _load_cached(directory: Path, model: str) -> dict[bytes, F32]:
    """digest -> vector from every cache file of this model (an older corpus shares most paragraphs)."""
    known: dict[bytes, F32] = {}
    for path in sorted(directory.glob(_cache_name(model, "*"))):
        with contextlib.suppress(OSError, ValueError, KeyError, EOFError):
            with np.load(path, allow_pickle=False) as z:
                digests, vectors = z["digests"], z["vectors"]
            # numpy's S16 drops trailing NUL bytes when a digest is read back: pad them again
            known.update(zip((bytes(d).ljust(16, b"\0") for d in digests), vectors, strict=True))
    return known


def _save_cache(path: Path, digests: Sequence[bytes], vectors: F32) -> None:
    """Atomically (write beside, rename); public corpus embeddings only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"  # not matched by the cache glob while being written
    with tmp.open("wb") as f:
        np.savez(f, digests=np.array(list(digests), dtype="S16"), vectors=vectors)
    os.replace(tmp, path)


def _embed_missing(texts: Sequence[str], embedder: Embedder, progress: Progress,
                   checkpoint: Callable[[Sequence[int], F32], None]) -> None:
    """Embed `texts` in order of their length in tokens, longest first, 512 at a time (the embedder batches
    them): a batch is padded to its longest text, and neighbours in this order are as long as each other.
    The embedder's own sort within a call goes by characters, which truncation to 256 tokens makes a poor proxy;
    on these paragraphs (median 45 tokens, 4% over 256), in batches of 64, this order pads 6.97M tokens, not 10.45M.
    `checkpoint(positions, vectors)` receives each finished chunk; the caller saves the cache every 2 minutes."""
    cap = embedder.max_tokens - embedder.special_tokens
    lengths = np.fromiter((min(cap, embedder.count_tokens(t)) for t in texts), dtype=np.int64, count=len(texts))
    order = np.argsort(-lengths, kind="stable").tolist()
    task = progress.task(f"embedding {len(texts):,} paragraphs ({int(lengths.sum()):,} tokens)", int(lengths.sum()))
    for start in range(0, len(order), EMBED_CHUNK):
        rows = order[start : start + EMBED_CHUNK]
        checkpoint(rows, embedder.embed([texts[i] for i in rows]))
        progress.update(task, advance=int(lengths[rows].sum()),
                        description=f"embedding paragraphs, {min(start + EMBED_CHUNK, len(order)):,} of {len(order):,}")


def debian_docs(need: int, embedder_name: str, *, seed: int = SEED, progress: Progress | None = None,
                files: Sequence[Path] | None = None, directory: Path | None = None,
                phases: Phases | None = None) -> Dataset:
    """`need` distinct paragraphs of the local docs and man pages, embedded (from the cache where possible)."""
    from clawfs.index.embedder import get_embedder

    progress, phases = progress or Progress(enabled=False), phases or Phases()
    with phases("reading docs, man pages and the embedding cache"):
        files = corpus_files() if files is None else files
        if not files:
            raise UserError(f"no documentation found under {DOC_ROOT} or {MAN_ROOT}: use --dataset synthetic")
        fingerprint = corpus_fingerprint(files, seed)
        paras = read_paragraphs(files, need, seed, progress)
        directory = directory or cache_dir()
        known = _load_cached(directory, embedder_name)
    missing = [i for i, (d, _) in enumerate(paras) if d not in known]
    path = directory / _cache_name(embedder_name, fingerprint)
    if missing:
        with phases("embedding"):
            _embed_and_cache(paras, missing, known, get_embedder(embedder_name), path, progress)
        for old in directory.glob(_cache_name(embedder_name, "*")):
            if old != path:
                old.unlink(missing_ok=True)
    vectors = np.stack([known[d] for d, _ in paras])
    info = {"paragraphs": need, "source_files": len(files), "fingerprint": fingerprint[:16],
            "cache": str(path), "embedded_now": len(missing)}
    return Dataset("debian-docs", shuffled(unit_rows(vectors, "debian-docs"), seed), embedder_name, info=info)


def read_paragraphs(files: Sequence[Path], need: int, seed: int, progress: Progress) -> list[tuple[bytes, str]]:
    """Exactly `need` paragraphs (digest, text), or a UserError saying the machine has fewer."""
    task = progress.task("reading docs and man pages", need)
    paras: list[tuple[bytes, str]] = []
    for item in corpus_paragraphs(files, need, seed):
        paras.append(item)
        if len(paras) % 1000 == 0:
            progress.update(task, advance=1000)
    progress.finish(task)
    if len(paras) < need:
        raise UserError(f"debian-docs has {len(paras):,} paragraphs on this machine, fewer than the {need:,} "
                        "these sizes need (indexed + queries): use smaller --sizes or --dataset synthetic")
    return paras


def _embed_and_cache(paras: Sequence[tuple[bytes, str]], missing: Sequence[int], known: dict[bytes, F32],
                     embedder: Embedder, path: Path, progress: Progress) -> None:
    """Embed the missing paragraphs into `known`, saving the cache every `SAVE_EVERY` seconds and at the end
    (an interrupted run keeps most of its work; saving after every chunk would rewrite 150 MB 200 times)."""
    progress.log(f"embedding {len(missing):,} paragraphs with {embedder.name} (once: cached in {path.parent})")
    saved = time.monotonic()

    def checkpoint(positions: Sequence[int], vectors: F32) -> None:
        nonlocal saved
        known.update(zip((paras[missing[i]][0] for i in positions), vectors, strict=True))
        if time.monotonic() - saved >= SAVE_EVERY:
            _save_cache(path, list(known), np.stack(list(known.values())))
            saved = time.monotonic()

    _embed_missing([paras[i][1] for i in missing], embedder, progress, checkpoint)
    _save_cache(path, list(known), np.stack(list(known.values())))


def store_dataset(path: str, creds: Credentials, *, seed: int = SEED, progress: Progress | None = None,
                  ) -> Dataset:
    """The vectors of a store's index, decrypted in memory only (the store may be mounted: read-only access)."""
    from clawfs.db.index_tables import IndexTables
    from clawfs.store import Store

    progress = progress or Progress(enabled=False)
    store = Store.open(path, creds, readonly=True, lock=False)
    try:
        tables = IndexTables(store.db)
        embedder, count = tables.meta("embedder"), tables.counts()["vectors"]
        if embedder is None or not count:
            raise UserError(f"{path} has no index yet: mount it (files are indexed as they are written) or run "
                            f"`clawfs reindex {path}`")
        settings = {k: int(tables.meta(k) or v) for k, v in SETTINGS.items()}
        task = progress.task(f"decrypting {count:,} vectors", count)
        rows: list[F32] = []
        for _, digest, sealed in tables.vectors():
            rows.append(np.frombuffer(store.env.open_vector(bytes(digest), bytes(sealed)), dtype=np.float32))
            if len(rows) % 1024 == 0:
                progress.update(task, advance=1024)
        progress.finish(task)
    finally:
        store.close()
    vectors = shuffled(unit_rows(np.stack(rows), path), seed)
    info = {"path": os.path.abspath(path), "vectors": len(rows), "settings": settings}
    return Dataset(f"store:{os.path.basename(path)}", vectors, str(embedder), settings["exact_below"], info)


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
        best = _best(sweep.rows, cfg)
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
    best = _best(rows, cfg)
    lower = sorted(c for g, c in {r.graph or (0, 0) for r in rows} if g == m and c < efc)
    if best is None or len(lower) < 2 or m in {am for am, _, _ in ANCHORS}:
        return None
    lo, below = lower[-1], lower[-2]
    before = {r.ef: r.recall for r in rows if r.graph == (m, below)}
    doublings = math.log2(efc / lo) / math.log2(lo / below)
    for r in _fits([r for r in rows if r.graph == (m, lo)], cfg):
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


def mark_pareto(rows: Sequence[Row]) -> None:
    """Rows no other row beats on both recall and single-query QPS (ann-benchmarks' frontier)."""
    for r in rows:
        r.pareto = not any(o.recall >= r.recall and o.qps_single >= r.qps_single
                           and (o.recall > r.recall or o.qps_single > r.qps_single) for o in rows)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _fits(rows: Sequence[Row], cfg: Config) -> list[Row]:
    return [r for r in rows if r.kind == "hnsw" and (cfg.memory_budget is None or r.memory_bytes <= cfg.memory_budget)]


def _best(rows: Sequence[Row], cfg: Config) -> Row | None:
    """The row `recommend` picks: the highest single-query QPS meeting the recall target within the budget."""
    meets = [r for r in _fits(rows, cfg) if r.recall >= cfg.recall_target]
    return max(meets, key=lambda r: (r.qps_single, -r.memory_bytes)) if meets else None


def recommend(rows: Sequence[Row], n: int, cfg: Config, exact_below: int) -> dict[str, Any]:
    """The highest single-query QPS among HNSW settings meeting the recall target within the memory budget."""
    exact = next(r for r in rows if r.kind == "exact")
    hnsw = [r for r in rows if r.kind == "hnsw"]
    fits = _fits(rows, cfg)
    meets = [r for r in fits if r.recall >= cfg.recall_target]
    budget = "" if cfg.memory_budget is None else f" within {_fmt_bytes(cfg.memory_budget)}"
    best = _best(rows, cfg)
    if best is None:
        return _unmet(hnsw, fits, exact, cfg, budget)
    best.recommended = True
    speedup = best.qps_single / exact.qps_single
    reason = (f"{best.setting}: recall@{cfg.k} {best.recall:.3f} at {best.qps_single:,.0f} QPS "
              f"({speedup:.1f}x exact), {_fmt_bytes(best.memory_bytes)}; the fastest of the {len(meets)} "
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
        reason = f"no HNSW setting fits{budget}: the smallest needs {_fmt_bytes(min(r.memory_bytes for r in hnsw))}"
    elif reachable:
        reason = (f"no setting reaches {target}{budget}: the best within the budget is {best.setting} with recall "
                  f"{best.recall:.3f} ({_fmt_bytes(best.memory_bytes)})")
    else:
        reason = (f"no setting reaches {target}: the best found is {best.setting} with recall {best.recall:.3f} "
                  f"at {best.qps_single:,.0f} QPS")
    reason += f"; exact search gives recall 1.0 at {exact.qps_single:,.0f} QPS ({_fmt_bytes(exact.memory_bytes)})"
    return {"status": "unreachable" if fits and not reachable else "over_budget", "setting": None,
            "best_found": _setting(best), "best_found_recall": best.recall, "exact_qps_single": exact.qps_single,
            "reason": reason, "exact_better": True,
            "exact_reason": "exact search is the only setting meeting the target"}


def _exact_verdict(exact: Row, best: Row, n: int, exact_below: int) -> dict[str, Any]:
    """Is exact search the better choice at this size?"""
    if exact.qps_single >= best.qps_single:
        why = (f"exact search is the better choice here: it is as fast or faster ({exact.qps_single:,.0f} vs "
               f"{best.qps_single:,.0f} QPS) with recall 1.0 and {_fmt_bytes(exact.memory_bytes)}")
    elif n < exact_below:
        why = (f"exact search is the better choice at this size: n={n:,} is below exact_below={exact_below:,}, "
               f"so the store searches exactly anyway (recall 1.0 at {exact.qps_single:,.0f} QPS against HNSW's "
               f"{best.qps_single:,.0f}); the HNSW setting takes effect once the store grows past exact_below")
    else:
        return {"exact_better": False, "exact_reason": None}
    return {"exact_better": True, "exact_reason": why}


# ---- the whole run -----------------------------------------------------------------------------------------


def run(data: Dataset, sizes: Sequence[int], queries: int, cfg: Config, progress: Progress | None = None,
        phases: Phases | None = None) -> dict[str, Any]:
    """Bench every size; the results document (what results.json holds)."""
    progress, phases = progress or Progress(enabled=False), phases or Phases()
    t0 = time.perf_counter()
    task = progress.task("sweep", steps_per_size(cfg) * len(sizes))

    def step(description: str) -> None:
        progress.update(task, advance=1, description=description)

    results = [bench_size(data, n, queries, cfg, step, phases) for n in sizes]
    progress.finish(task)
    return {"bench": "clawfs bench hnsw", "version": 2, "created": dt.datetime.now(dt.UTC).isoformat(),
            "machine": machine(), "config": config_doc(cfg, queries), "dataset": dataset_doc(data),
            "sizes": results, "recommendation": results[-1]["recommendation"] | {"size": sizes[-1]},
            "elapsed_s": round(time.perf_counter() - t0, 1), "timing": phases.doc()}


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        hnswlib_version = version("hnswlib")
    except PackageNotFoundError:
        hnswlib_version = "unknown"
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "hnswlib": hnswlib_version, "load_average": list(os.getloadavg())}


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
                          f"{r['build_s']:.2f}", _fmt_bytes(r["memory_bytes"]), f"{r['bytes_per_vector']:,.0f}",
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


# ---- choosing the dataset ----------------------------------------------------------------------------------

DATASETS = ("debian-docs", "synthetic")
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (2_000,)


def open_dataset(name: str | None, store: Dataset | None, cfg: Config, progress: Progress,
                 phases: Phases | None = None) -> tuple[Dataset, list[int], int]:
    """The dataset, its sizes and query count.  Cheap checks run before anything slow (embedding, building)."""
    phases = phases or Phases()
    default = QUICK_SIZES if cfg.quick else FULL_SIZES
    if name is None and store is not None:
        sizes, queries = plan(len(store.vectors), cfg.sizes, default, cfg)
        return store, sizes, queries
    if name in (None, "debian-docs", "synthetic"):
        sizes, queries = plan(None, cfg.sizes, default, cfg)
        if name == "synthetic":
            if sizes[-1] > SYNTHETIC_MAX:
                raise UserError(f"synthetic goes up to {SYNTHETIC_MAX:,} vectors, not {sizes[-1]:,}")
            with phases("generating synthetic vectors"):
                data = synthetic(needed(sizes[-1], queries), store.dim if store else 384, cfg.seed)
        else:
            from clawfs.index.embedder import DEFAULT_EMBEDDER

            embedder = store.embedder if store and store.embedder else DEFAULT_EMBEDDER
            data = debian_docs(needed(sizes[-1], queries), embedder, seed=cfg.seed, progress=progress,
                               phases=phases)
    elif name.endswith(".npy") or os.path.exists(name):
        with phases("loading the .npy file"):
            data = load_npy(name, cfg.seed)
        sizes, queries = plan(len(data.vectors), cfg.sizes, default, cfg)
    else:
        raise UserError(f"unknown dataset {name!r}: use debian-docs, synthetic, or the path of a .npy file of "
                        "float32 vectors of shape (n, d)")
    if store is not None:
        data.exact_below = store.exact_below
    return data, sizes, queries


def read_store(path: str, creds: Credentials, *, vectors: bool, seed: int = SEED,
               progress: Progress | None = None) -> Dataset:
    """The store's index settings, and (with `vectors`) its vectors; refuses a store with no index."""
    if vectors:
        return store_dataset(path, creds, seed=seed, progress=progress)
    from clawfs.db.index_tables import IndexTables
    from clawfs.store import Store

    store = Store.open(path, creds, readonly=True, lock=False)
    try:
        tables = IndexTables(store.db)
        embedder, dim = tables.meta("embedder"), tables.meta("dim")
        if embedder is None or not tables.counts()["vectors"]:
            raise UserError(f"{path} has no index yet: mount it (files are indexed as they are written) or run "
                            f"`clawfs reindex {path}`")
        settings = {k: int(tables.meta(k) or v) for k, v in SETTINGS.items()}
    finally:
        store.close()
    empty = np.zeros((0, int(dim)), dtype=np.float32)
    return Dataset(f"store:{os.path.basename(path)}", empty, str(embedder), settings["exact_below"],
                   {"path": os.path.abspath(path), "settings": settings})


# ---- --apply -----------------------------------------------------------------------------------------------


def _busy(path: str) -> UserError:
    from kernel import mounts

    where = mounts.find_by_source(path, "fuse.clawfs")
    at = f" at {where[0].mountpoint}" if where else ""
    return UserError(f"{path} is mounted{at} or in use by another clawfs process: --apply rebuilds its index and "
                     f"needs it unmounted (`clawfs umount {where[0].mountpoint if where else 'MOUNTPOINT'}`); "
                     "without --apply the bench only reads it")


def check_unmounted(path: str) -> None:
    """Fail before a long bench, not after it, when --apply could not take the store."""
    from clawfs.store import StoreLock

    if os.path.isfile(path):
        try:
            StoreLock(path).release()
        except StoreBusy:
            raise _busy(path) from None



def apply_setting(path: str, creds: Credentials, setting: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Write M / ef_construction / ef into the store's index_meta (one transaction), rebuild the graph
    (`IndexCore.load` rebuilds when M or ef_construction changed) and save its encrypted snapshot.  Should this
    stop half-way, the next mount sees the new settings and rebuilds by itself."""
    from clawfs.db.index_tables import IndexTables
    from clawfs.index import engine
    from clawfs.index.embedder import get_embedder
    from clawfs.store import Store

    try:
        store = Store.open(path, creds)
    except StoreBusy:
        raise _busy(path) from None
    try:
        tables = IndexTables(store.db)
        name, count = tables.meta("embedder"), tables.counts()["vectors"]
        if name is None or not count:
            raise UserError(f"{path} has no index yet: nothing to apply the setting to")
        get_embedder(str(name))  # an unavailable model fails here, before anything is written
        before = {k: int(tables.meta(k) or v) for k, v in engine.SETTINGS.items()}
        new = {"hnsw_m": setting["M"], "hnsw_ef_construction": setting["ef_construction"], "hnsw_ef": setting["ef"]}
        task = progress.task("writing the settings", 3)
        with store.transaction():
            for key, value in new.items():
                tables.set_meta(key, int(value))
        progress.update(task, advance=1, description=f"rebuilding the HNSW graph of {count:,} vectors")
        t0 = time.perf_counter()
        core = engine.IndexCore.load(store)
        rebuild_s = time.perf_counter() - t0
        progress.update(task, advance=1, description="saving the encrypted snapshot")
        engine.save_snapshot(store, core)
        store.sync()
        progress.update(task, advance=1, description="applied")
        p = core.vectors.params
    finally:
        store.close()
    return {"store": os.path.abspath(path), "before": before, "after": new, "vectors": len(core.vectors),
            "graph": {"M": p.M, "ef_construction": p.ef_construction, "ef": p.ef}, "rebuild_s": round(rebuild_s, 2),
            "rebuilt": (before["hnsw_m"], before["hnsw_ef_construction"]) != (new["hnsw_m"],
                                                                              new["hnsw_ef_construction"])}
