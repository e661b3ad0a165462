"""The vectors a sweep runs on: a .npy file, synthetic clusters, or debian-docs embedded (and cached); each
shuffled with a fixed seed and L2-normalised.  A store's own vectors are read in storage.py."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from clawfs.errors import UserError

from .config import DEFAULT_EXACT_BELOW, FULL_SIZES, QUICK_SIZES, SEED, SYNTHETIC_MAX, Config, needed, plan
from .corpus import DOC_ROOT, MAN_ROOT, corpus_files, corpus_fingerprint, corpus_paragraphs
from .timing import NO_PROGRESS, Phases, Progress

if TYPE_CHECKING:
    from clawfs.index.embedder import Embedder

F32 = NDArray[np.float32]

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


EMBED_CHUNK = 512  # paragraphs per embedder call (it splits them into its own batches)
SAVE_EVERY = 120.0  # seconds between saves of the embedding cache

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
    task = "embedding"
    progress.start(task, int(lengths.sum()),
                   f"embedding {len(texts):,} paragraphs ({int(lengths.sum()):,} tokens)")
    for start in range(0, len(order), EMBED_CHUNK):
        rows = order[start : start + EMBED_CHUNK]
        checkpoint(rows, embedder.embed([texts[i] for i in rows]))
        progress.advance(task, int(lengths[rows].sum()),
                        description=f"embedding paragraphs, {min(start + EMBED_CHUNK, len(order)):,} of {len(order):,}")


def debian_docs(need: int, embedder_name: str, *, seed: int = SEED, progress: Progress | None = None,
                files: Sequence[Path] | None = None, directory: Path | None = None,
                phases: Phases | None = None) -> Dataset:
    """`need` distinct paragraphs of the local docs and man pages, embedded (from the cache where possible)."""
    from clawfs.index.embedder import get_embedder

    progress, phases = progress or NO_PROGRESS, phases or Phases()
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
    task = "reading docs and man pages"
    progress.start(task, need)
    paras: list[tuple[bytes, str]] = []
    for item in corpus_paragraphs(files, need, seed):
        paras.append(item)
        if len(paras) % 1000 == 0:
            progress.advance(task, 1000)
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


# ---- choosing the dataset ----------------------------------------------------------------------------------




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


