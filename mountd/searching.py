"""`clawfs search` and `clawfs reindex`: through a live mount (its `.clawfs/search/` tree) or an unmounted store."""

from __future__ import annotations

import json
import os
from typing import Any

from clawfs.errors import StoreBusy, UserError
from clawfs.index import engine
from clawfs.index.engine import IndexCore
from clawfs.keys import Credentials
from clawfs.store import Store, StoreLock
from kernel import mounts

NAME_MAX = 255


def _query_name(query: str) -> tuple[str, bool]:
    """A directory name for the query: '/' cannot appear in one; longer than NAME_MAX bytes is cut."""
    name = query.replace("/", " ").strip()
    raw = name.encode()
    if len(raw) <= NAME_MAX:
        return name, False
    return raw[:NAME_MAX].decode("utf-8", "ignore"), True


def _under(path: str, prefix: str | None) -> bool:
    if not prefix:
        return True
    p = prefix.strip("/")
    return path == p or path.startswith(p + "/")


def via_mount(mountpoint: str, query: str, k: int, prefix: str | None) -> dict[str, Any]:
    entry = mounts.find_by_mountpoint(mountpoint)
    if entry is None or entry.fstype != "fuse.clawfs":
        raise UserError(f"{mountpoint} is not a ClawFS mount")
    name, cut = _query_name(query)
    if not name:
        raise UserError("the query is empty")
    results_file = os.path.join(entry.mountpoint, ".clawfs", "search", name, ".results.json")
    try:
        with open(results_file, encoding="utf-8", errors="surrogateescape") as f:
            hits = json.load(f)
    except FileNotFoundError:
        raise UserError(f"the mount at {mountpoint} has no semantic index (mounted with noindex, or the "
                        "model is missing: see its log)") from None
    hits = [h for h in hits if _under(h["path"], prefix)][:k]
    for rank, hit in enumerate(hits, 1):
        hit["rank"] = rank
    return {"query": query, "hits": hits, "truncated": cut, "max_tokens": None, "source": "mount"}


def via_store(store_path: str, creds: Credentials, query: str, k: int, prefix: str | None) -> dict[str, Any]:
    try:
        if os.path.isfile(store_path):
            StoreLock(store_path).release()
    except StoreBusy:
        where = mounts.find_by_source(store_path, "fuse.clawfs")
        hint = f" at {where[0].mountpoint}; use --mount {where[0].mountpoint}" if where else ""
        raise UserError(f"{store_path} is in use{hint}") from None
    store = Store.open(store_path, creds, readonly=True)
    try:
        core = IndexCore.load(store)
        if not len(core.vectors):
            raise UserError(f"{store_path} has no index yet: mount it (files are indexed as they are written) "
                            f"or run `clawfs reindex {store_path}`")
        result = engine.search(store, core, query, k, prefix.strip("/").encode() if prefix else None)
    finally:
        store.close()
    hits = [{"rank": i, "score": h.score, "similarity": h.similarity,
             "path": h.path.decode("utf-8", "surrogateescape"), "snippet": h.snippet}
            for i, h in enumerate(result.hits, 1)]
    return {"query": query, "hits": hits, "truncated": result.truncated, "query_tokens": result.query_tokens,
            "max_tokens": core.embedder.max_tokens, "source": "store"}


def reindex(store: Store, embedder: str | None, *, show_progress: bool) -> int:
    """Drop the index, record the embedder, index every regular file (progress bar on a terminal)."""
    from clawfs.db.index_tables import IndexTables

    tables = IndexTables(store.db)
    with store.transaction():
        name = embedder or tables.meta("embedder")
        tables.clear()
    core = IndexCore.load(store, name)
    files = tables.all_regular_files()
    if show_progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("indexing", total=len(files))
            for ino in files:
                engine.index_file(store, core, ino)
                bar.advance(task)
    else:
        for ino in files:
            engine.index_file(store, core, ino)
    with store.transaction():
        for ino in files:
            tables.dequeue_all(ino)
    engine.save_snapshot(store, core)
    return len(files)
