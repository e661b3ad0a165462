"""Loading a store's index: `IndexCore` (what every thread shares: the embedder, the in-memory vector index and
the settings), the vectors brought up from the encrypted snapshot and the vectors table, and saving the snapshot.

Vectors live encrypted in `vectors`, so the in-memory HNSW graph can always be rebuilt without embedding again;
its encrypted snapshot only saves that rebuild time at mount, and the vectors added or removed since the
snapshot are found by comparing ids (the vectors table is the log).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..errors import IntegrityError, UserError
from ..index_storage import IndexStorage
from ..store import Store
from . import tokens
from .embedder import DEFAULT_EMBEDDER, Embedder, get_embedder
from .vectors import IndexParams, SnapshotError, VectorIndex

log = logging.getLogger("clawfs.index")

SETTINGS = {"hnsw_m": 16, "hnsw_ef_construction": 200, "hnsw_ef": 64, "exact_below": 20_000}
"""Index parameters, kept per store in index_meta (`clawfs bench hnsw --apply` changes them)."""

LOAD_TIMEOUT = 120.0


@dataclass
class IndexCore:
    """The shared part of a store's index.  `open` is instant; the vectors load with `load_vectors` (a mount
    does that in the indexer thread, so the mount is live at once) and `vectors` waits for them."""

    embedder: Embedder
    blinder: tokens.Blinder
    settings: dict[str, int] = field(default_factory=dict)
    last_indexed_ns: int = 0
    snapshot_stale: bool = False  # rebuilt or caught up at load: worth saving again soon
    committing: int = 0  # files committed (dequeued) whose vectors are not in memory yet: still pending
    _vectors: VectorIndex | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _load_error: str | None = None

    @property
    def loaded(self) -> bool:
        return self._ready.is_set() and self._vectors is not None

    @property
    def vectors(self) -> VectorIndex:
        if not self._ready.wait(LOAD_TIMEOUT) or self._vectors is None:
            raise UserError(f"the index is not loaded ({self._load_error or 'still loading'})")
        return self._vectors

    def load_vectors(self, store: Store) -> None:
        try:
            self._vectors, self.snapshot_stale = _load_vectors(store, store.index, self.embedder.dim,
                                                               self.settings)
        except Exception as e:
            self._load_error = str(e)
            raise
        finally:
            self._ready.set()

    @classmethod
    def load(cls, store: Store, embedder_name: str | None = None) -> IndexCore:
        """`open` and `load_vectors` at once (the CLI's way)."""
        core = cls.open(store, embedder_name)
        core.load_vectors(store)
        return core

    @classmethod
    def open(cls, store: Store, embedder_name: str | None = None) -> IndexCore:
        """Open the index of `store` (which must be writable the first time, to record the embedder)."""
        tables = store.index
        configured = tables.meta("embedder")
        name = embedder_name or configured or DEFAULT_EMBEDDER
        if configured and name != configured:
            raise UserError(f"this store's index was built with {configured}, not {name}; "
                            f"`clawfs reindex STORE --embedder {name}` switches it")
        embedder = get_embedder(name)
        if configured is None and not store.readonly:
            with store.transaction():
                tables.set_meta("embedder", name)
                tables.set_meta("dim", embedder.dim)
        settings = {k: int(tables.meta(k) or v) for k, v in SETTINGS.items()}
        return cls(embedder, tokens.Blinder(store.index.token_key), settings)


def vector_of(store: Store, digest: bytes, sealed: bytes) -> npt.NDArray[np.float32]:
    return np.frombuffer(store.index.open_vector(digest, sealed), dtype=np.float32)


def _load_vectors(store: Store, tables: IndexStorage, dim: int,
                  settings: dict[str, int]) -> tuple[VectorIndex, bool]:
    """The snapshot brought up to date with the vectors table, or a rebuild from stored vectors; and whether
    the stored snapshot is out of date."""
    index: VectorIndex | None = None
    blob = tables.meta("snapshot")
    if blob is not None:
        try:
            image = tables.snapshot()
            assert image is not None
            index = VectorIndex.from_bytes(image, ef=settings["hnsw_ef"], exact_below=settings["exact_below"])
        except (IntegrityError, SnapshotError) as e:
            log.warning("index snapshot unusable (%s); rebuilding it from the stored vectors", e)
    live = tables.vector_ids()
    wanted = _params(dim, settings)
    if index is not None and (index.params.M, index.params.ef_construction) != (wanted.M, wanted.ef_construction):
        index = None  # the settings changed (`clawfs bench hnsw --apply`): the graph must be built anew
    if index is None or index.dim != dim:
        rows = [(vid, vector_of(store, d, s)) for vid, d, s in tables.vectors()]
        if not rows:
            return VectorIndex(dim, M=settings["hnsw_m"], ef_construction=settings["hnsw_ef_construction"],
                               ef=settings["hnsw_ef"], exact_below=settings["exact_below"]), False
        if blob is None:
            log.warning("no index snapshot; rebuilt it from %d stored vectors", len(rows))
        return VectorIndex.rebuild([r[0] for r in rows], np.stack([r[1] for r in rows]), params=wanted), True
    present = {int(i) for i in index.ids()}
    for vid in present - live:
        index.remove(vid)
    stale = bool(present ^ live)
    found = [(vid, data) for vid in sorted(live - present) if (data := tables.vector_data(vid)) is not None]
    if found:
        index.add([v for v, _ in found], np.stack([vector_of(store, *d) for _, d in found]))
    return index, stale


def _params(dim: int, settings: dict[str, int]) -> IndexParams:
    return IndexParams(dim, settings["hnsw_m"], settings["hnsw_ef_construction"], settings["hnsw_ef"],
                       settings["exact_below"])


def save_snapshot(store: Store, core: IndexCore) -> None:
    image = core.vectors.to_bytes()
    with store.transaction():
        store.index.save_snapshot(image)
