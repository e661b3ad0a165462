"""Everything the tuner reads from or writes to a store: its vectors and index settings (decrypted in memory
only), whether it is free for --apply, and --apply itself."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from clawfs.errors import StoreBusy, UserError
from clawfs.index.engine import SETTINGS

from .config import SEED
from .datasets import F32, Dataset, shuffled, unit_rows
from .timing import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from clawfs.keys import Credentials

def store_dataset(path: str, creds: Credentials, *, seed: int = SEED, progress: Progress | None = None,
                  ) -> Dataset:
    """The vectors of a store's index, decrypted in memory only (the store may be mounted: read-only access)."""
    from clawfs.store import Store

    progress = progress or NO_PROGRESS
    store = Store.open(path, creds, readonly=True, lock=False)
    try:
        tables = store.index
        embedder, count = tables.meta("embedder"), tables.counts()["vectors"]
        if embedder is None or not count:
            raise UserError(f"{path} has no index yet: mount it (files are indexed as they are written) or run "
                            f"`clawfs reindex {path}`")
        settings = {k: int(tables.meta(k) or v) for k, v in SETTINGS.items()}
        task = "decrypting"
        progress.start(task, count, f"decrypting {count:,} vectors")
        rows: list[F32] = []
        for _, digest, sealed in tables.vectors():
            rows.append(np.frombuffer(store.index.open_vector(digest, sealed), dtype=np.float32))
            if len(rows) % 1024 == 0:
                progress.advance(task, 1024)
        progress.finish(task)
    finally:
        store.close()
    vectors = shuffled(unit_rows(np.stack(rows), path), seed)
    info = {"path": os.path.abspath(path), "vectors": len(rows), "settings": settings}
    return Dataset(f"store:{os.path.basename(path)}", vectors, str(embedder), settings["exact_below"], info)


def read_store(path: str, creds: Credentials, *, vectors: bool, seed: int = SEED,
               progress: Progress | None = None) -> Dataset:
    """The store's index settings, and (with `vectors`) its vectors; refuses a store with no index."""
    if vectors:
        return store_dataset(path, creds, seed=seed, progress=progress)
    from clawfs.store import Store

    store = Store.open(path, creds, readonly=True, lock=False)
    try:
        tables = store.index
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
    from clawfs.index import engine
    from clawfs.index.embedder import get_embedder
    from clawfs.store import Store

    try:
        store = Store.open(path, creds)
    except StoreBusy:
        raise _busy(path) from None
    try:
        tables = store.index
        name, count = tables.meta("embedder"), tables.counts()["vectors"]
        if name is None or not count:
            raise UserError(f"{path} has no index yet: nothing to apply the setting to")
        get_embedder(str(name))  # an unavailable model fails here, before anything is written
        before = {k: int(tables.meta(k) or v) for k, v in engine.SETTINGS.items()}
        new = {"hnsw_m": setting["M"], "hnsw_ef_construction": setting["ef_construction"], "hnsw_ef": setting["ef"]}
        task = "applying"
        progress.start(task, 3, "writing the settings")
        with store.transaction():
            for key, value in new.items():
                tables.set_meta(key, int(value))
        progress.advance(task, 1, description=f"rebuilding the HNSW graph of {count:,} vectors")
        t0 = time.perf_counter()
        core = engine.IndexCore.load(store)
        rebuild_s = time.perf_counter() - t0
        progress.advance(task, 1, description="saving the encrypted snapshot")
        engine.save_snapshot(store, core)
        store.sync()
        progress.advance(task, 1, description="applied")
        p = core.vectors.params
    finally:
        store.close()
    return {"store": os.path.abspath(path), "before": before, "after": new, "vectors": len(core.vectors),
            "graph": {"M": p.M, "ef_construction": p.ef_construction, "ef": p.ef}, "rebuild_s": round(rebuild_s, 2),
            "rebuilt": (before["hnsw_m"], before["hnsw_ef_construction"]) != (new["hnsw_m"],
                                                                              new["hnsw_ef_construction"])}

