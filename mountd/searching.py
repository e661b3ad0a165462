"""`clawfs search` (a query, or `--similar PATH`) and `clawfs reindex`: through a live mount (its `.clawfs/search/`
and `.clawfs/similar/` trees) or an unmounted store."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from clawfs import control
from clawfs.errors import StoreBusy, UserError
from clawfs.index import engine
from clawfs.index.engine import IndexCore
from clawfs.keys import Credentials
from clawfs.store import Store, StoreLock
from kernel import mounts

from .ui import Progress

NAME_MAX = 255


def _query_name(query: str) -> tuple[str, bool]:
    """A directory name for the query: '/' cannot appear in one; longer than NAME_MAX bytes is cut."""
    name = query.replace("/", " ").strip()
    raw = name.encode()
    if len(raw) <= NAME_MAX:
        return name, False
    return raw[:NAME_MAX].decode("utf-8", "ignore"), True


def _prefix_bytes(prefix: str | None) -> bytes | None:
    return (prefix.strip("/").encode("utf-8", "surrogateescape") or None) if prefix else None


def _mounted_results(mountpoint: str, parts: tuple[str, str], k: int,
                     prefix: str | None) -> tuple[str, list[dict[str, Any]]]:
    """(mount root, the first `k` hits under `prefix` in result directory `.clawfs/<parts>/`) of a live mount:
    its `.results.json` where that has them all, else the daemon's answer to `.results?k=N&path=P`."""
    entry = mounts.find_by_mountpoint(mountpoint)
    if entry is None or entry.fstype != "fuse.clawfs":
        raise UserError(f"{mountpoint} is not a ClawFS mount")
    name = ".results.json"
    if prefix or k > control.MAX_HITS:
        if k > control.MAX_K:
            raise UserError(f"a live mount lists at most {control.MAX_K} hits; ask for fewer with -k")
        raw = control.results_name(k, _prefix_bytes(prefix))
        if len(raw) > NAME_MAX:
            raise UserError(f"--path {prefix} is too long to pass through the mount; search the unmounted "
                            "store with --store")
        name = raw.decode("ascii")
    results_file = os.path.join(entry.mountpoint, ".clawfs", *parts, name)
    try:
        with open(results_file, encoding="utf-8", errors="surrogateescape") as f:
            hits: list[dict[str, Any]] = json.load(f)[:k]
    except OSError as e:
        raise _no_results(entry.mountpoint, mountpoint, parts, e) from None
    return entry.mountpoint, hits


def _no_results(root: str, mountpoint: str, parts: tuple[str, str], err: OSError) -> UserError:
    """Why a live mount gave no results, from its `.clawfs/status` (a daemon says whether and why its index is
    off, and how its model fared)."""
    with open(os.path.join(root, ".clawfs", "status"), encoding="utf-8") as f:
        st = json.load(f)
    if st.get("index_off") or st.get("settings", {}) is None:  # the second: a daemon from before `index_off`
        return UserError(f"the mount at {mountpoint} has no semantic index: {st.get('index_off') or 'see its log'}")
    model = st.get("model") or ""
    if model.startswith("failed"):
        return UserError(f"the mount at {mountpoint} cannot search: its embedding model {model}; then remount "
                         "(changes made meanwhile stay queued for the index)")
    if parts[0] == "similar" and isinstance(err, FileNotFoundError):
        return UserError(f"{parts[1]} is not an indexed file of the mount at {mountpoint}")
    return UserError(f"the mount at {mountpoint} could not answer ({err.strerror}); its log says why")


def _pending(root: str) -> int | None:
    """Files a live mount has still to index (its `.clawfs/status`), None if it does not say."""
    try:
        with open(os.path.join(root, ".clawfs", "status"), encoding="utf-8") as f:
            pending = json.load(f).get("pending")
    except (OSError, ValueError):
        return None
    return pending if isinstance(pending, int) else None


def via_mount(mountpoint: str, query: str, k: int, prefix: str | None) -> dict[str, Any]:
    name, cut = _query_name(query)
    if not name:
        raise UserError("the query is empty")
    root, hits = _mounted_results(mountpoint, ("search", name), k, prefix)
    for rank, hit in enumerate(hits, 1):
        hit["rank"] = rank
    return {"query": query, "hits": hits, "truncated": cut, "max_tokens": None, "source": "mount",
            "pending": _pending(root)}


def similar_via_mount(mountpoint: str, path: str, k: int, prefix: str | None) -> dict[str, Any]:
    """The files most like `path` (relative to the mount root, or an absolute path inside the mount)."""
    root = os.path.realpath(mountpoint)
    if os.path.isabs(path) and (path + "/").startswith(root + "/"):
        path = path[len(root):]
    root, hits = _mounted_results(mountpoint, ("similar", path.strip("/")), k, prefix)
    for rank, hit in enumerate(hits, 1):
        hit["rank"] = rank
    return {"similar": path, "hits": hits, "truncated": False, "max_tokens": None, "source": "mount",
            "pending": _pending(root)}


@contextlib.contextmanager
def _unmounted_index(store_path: str, creds: Credentials) -> Iterator[tuple[Store, IndexCore]]:
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
        yield store, core
    finally:
        store.close()


def _hit_dicts(hits: list[engine.Hit]) -> list[dict[str, Any]]:
    return [h.to_json(i) for i, h in enumerate(hits, 1)]


def via_store(store_path: str, creds: Credentials, query: str, k: int, prefix: str | None) -> dict[str, Any]:
    with _unmounted_index(store_path, creds) as (store, core):
        result = engine.search(store, core, query, k, _prefix_bytes(prefix))
        pending = engine.status(store, core)["pending"]
    return {"query": query, "hits": _hit_dicts(result.hits), "truncated": result.truncated,
            "query_tokens": result.query_tokens, "max_tokens": core.embedder.max_tokens, "source": "store",
            "pending": pending}


def similar_via_store(store_path: str, creds: Credentials, path: str, k: int, prefix: str | None) -> dict[str, Any]:
    with _unmounted_index(store_path, creds) as (store, core):
        row = engine.lookup_path(store, path.strip("/").encode("utf-8", "surrogateescape"))
        hits = engine.similar(store, core, row.id, k, _prefix_bytes(prefix)) if row is not None else None
        pending = engine.status(store, core)["pending"]
    if hits is None:
        raise UserError(f"{path} is not an indexed file of {store_path}")
    return {"similar": path, "hits": _hit_dicts(hits), "truncated": False, "max_tokens": None, "source": "store",
            "pending": pending}


def reindex(store: Store, embedder: str | None, *, show_progress: bool) -> int:
    """Drop the index, record the embedder, index every regular file (progress bar on a terminal)."""
    tables = store.index
    with store.transaction():
        name = embedder or tables.meta("embedder")
        tables.clear()
    core = IndexCore.load(store, name)
    files = tables.all_regular_files()
    with Progress(show_progress, transient=True) as bar:
        bar.start("indexing", len(files))
        for ino in files:
            engine.index_file(store, core, ino)
            bar.advance("indexing")
    with store.transaction():
        for ino in files:
            tables.dequeue_all(ino)
    engine.save_snapshot(store, core)
    return len(files)
