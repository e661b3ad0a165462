"""The semantic index of one store: loading it, indexing one file, hybrid search.

`IndexCore` is what every thread shares: the embedder, the in-memory vector index (thread-safe) and the
settings.  Each thread talks to the database through its own `Store` (connection); the mount's indexer thread
is the only writer of index tables.

Durability: a change to a file queues it in `index_queue` in the same transaction as the change; the indexer
commits a file's chunks, vectors and blind tokens in one transaction and dequeues it there.  Vectors live
encrypted in `vectors`, so the in-memory HNSW graph can always be rebuilt without embedding again; its
encrypted snapshot only saves that rebuild time at mount, and the vectors added or removed since the snapshot
are found by comparing ids (the vectors table is the log).
"""

from __future__ import annotations

import concurrent.futures
import logging
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import home
from ..db import InodeRow
from ..errors import IntegrityError, UserError
from ..index_storage import IndexStorage
from ..store import ROOT, Store
from . import chunker, tokens
from .embedder import DEFAULT_EMBEDDER, Embedder, get_embedder, torch_threads
from .vectors import IndexParams, SnapshotError, VectorIndex

log = logging.getLogger("clawfs.index")

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Text files larger than this are not indexed (logs and dumps; the agent's notes are far smaller)."""
CANDIDATES = 50  # per side of the hybrid search, before Reciprocal Rank Fusion (k=60)
MIN_SIMILARITY = 0.2
"""Vector candidates less similar than this are dropped (MiniLM puts unrelated text at about 0.0-0.15), so a
search lists what matches, not every file of the store."""
SETTINGS = {"hnsw_m": 16, "hnsw_ef_construction": 200, "hnsw_ef": 64, "exact_below": 20_000}
"""Index parameters, kept per store in index_meta (`clawfs bench hnsw --apply` changes them)."""


@dataclass
class Hit:
    ino: int
    path: bytes
    score: float
    similarity: float | None
    snippet: str


@dataclass
class SearchResult:
    hits: list[Hit]
    query_tokens: int
    truncated: bool


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


def _vector_of(store: Store, digest: bytes, sealed: bytes) -> npt.NDArray[np.float32]:
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
        rows = [(vid, _vector_of(store, d, s)) for vid, d, s in tables.vectors()]
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
        index.add([v for v, _ in found], np.stack([_vector_of(store, *d) for _, d in found]))
    return index, stale


def _params(dim: int, settings: dict[str, int]) -> IndexParams:
    return IndexParams(dim, settings["hnsw_m"], settings["hnsw_ef_construction"], settings["hnsw_ef"],
                       settings["exact_below"])


def save_snapshot(store: Store, core: IndexCore) -> None:
    image = core.vectors.to_bytes()
    with store.transaction():
        store.index.save_snapshot(image)


# -- indexing one file ------------------------------------------------------------------------------------------
def _file_text(store: Store, ino: int) -> tuple[int, str | None]:
    """(generation, indexable text or None) of a live regular file; (0, None) when gone or not a file."""
    row = store.find(ino)
    if row is None or row.nlink == 0 or not stat.S_ISREG(row.mode):
        return 0, None
    if home.is_secret(row.flags):
        return row.generation, None  # a secret's value is never read for the index (clawfs/home.py)
    if row.size > MAX_FILE_BYTES:
        return row.generation, None
    return row.generation, chunker.is_indexable(store.read(row, 0, row.size), max_bytes=MAX_FILE_BYTES)


class Interrupted(Exception):
    """Indexing stopped between embedding batches (unmount); files not committed yet stay queued."""


GROUP_CHUNKS = 512
"""New chunks one `index_files` call embeds, across its files: model batches are then texts of similar length
from many files (a one-paragraph file alone runs MiniLM at a fraction of its batched speed; 512 paragraphs
sorted by length pad 4% in batches of 16, 128 would pad 14%).  Files still commit as soon as their own chunks
are embedded, so a big group delays no file more than a small one would."""


@dataclass(eq=False)  # compared by identity: `in` over a group must not compare whole texts
class _Pending:
    """A file read and chunked, waiting for its new chunks' vectors."""

    ino: int
    queued_ns: int | None
    generation: int
    text: str | None
    pieces: list[chunker.Chunk]
    digests: list[bytes]


def _read_and_chunk(store: Store, core: IndexCore, ino: int, queued_ns: int | None) -> _Pending:
    store.drop_cache()  # the mount's connection may have rewritten blocks this connection has cached
    generation, text = _file_text(store, ino)
    pieces = [] if text is None else chunker.chunk_text(
        text, max_tokens=core.embedder.chunk_tokens, overlap_tokens=core.embedder.overlap_tokens,
        count_tokens=core.embedder.count_tokens)
    digests = [store.index.digest(p.text.encode("utf-8", "surrogatepass")) for p in pieces]
    return _Pending(ino, queued_ns, generation, text, pieces, digests)


def _read_group(store: Store, core: IndexCore, files: Sequence[tuple[int, int | None]],
                max_chunks: int) -> tuple[list[_Pending], dict[bytes, int | None], dict[bytes, str]]:
    """The first files holding about `max_chunks` new chunks (at least one file); each digest's stored vector
    id (None: new); the text of each new digest."""
    tables = store.index
    group: list[_Pending] = []
    known: dict[bytes, int | None] = {}
    texts: dict[bytes, str] = {}
    for ino, queued_ns in dict(files).items():  # one entry per inode (the queue has one anyway)
        if len(texts) >= max_chunks:
            break
        group.append(pending := _read_and_chunk(store, core, ino, queued_ns))
        for digest, piece in zip(pending.digests, pending.pieces, strict=True):
            if digest not in known:
                known[digest] = tables.vector_by_digest(digest)
                if known[digest] is None:
                    texts[digest] = piece.text
    return group, known, texts


def _plan(group: list[_Pending], texts: dict[bytes, str], size: int) -> list[list[bytes]]:
    """Batches of `size` new texts of similar length (sorted by length: least padding), in the order the
    group's files need them, so the files in front complete (and commit) first."""
    by_length = sorted(texts, key=lambda d: -len(texts[d]))
    batches = [by_length[i:i + size] for i in range(0, len(by_length), size)]
    batch_of = {d: i // size for i, d in enumerate(by_length)}
    needed = dict.fromkeys(batch_of[d] for p in group for d in p.digests if d in batch_of)
    return [batches[i] for i in needed]


def _hands_over(store: Store, group: list[_Pending], known: dict[bytes, int | None]) -> bool:
    """Does a file of the group drop a vector another file of it takes up?  Then the group commits in one
    transaction, which adds every new chunk before dropping any old one: that vector never reaches 0 refs."""
    tables = store.index
    users: dict[int, set[int]] = {}
    for p in group:
        for d in p.digests:
            if (vid := known[d]) is not None:
                users.setdefault(vid, set()).add(p.ino)
    return any(users.get(vid, set()) - {p.ino} for p in group for _, vid in tables.chunks_of(p.ino))


def index_file(store: Store, core: IndexCore, ino: int, queued_ns: int | None = None,
               stop: Callable[[], bool] | None = None) -> int:
    """Bring the index of one file up to date; returns how many chunks it now has (see `index_files`)."""
    return index_files(store, core, [(ino, queued_ns)], stop)[0]


def index_files(store: Store, core: IndexCore, files: Sequence[tuple[int, int | None]],
                stop: Callable[[], bool] | None = None, max_chunks: int = GROUP_CHUNKS) -> list[int]:
    """Bring the index of the first of `files` (ino, queued_ns or None) up to date, as many as hold about
    `max_chunks` new chunks (at least one file); returns their chunk counts, so `len(result)` files are done
    and the caller passes the rest again.  Embeds outside any transaction (the slow part, interruptible by
    `stop` between batches); each file commits its chunks, vectors, tokens and dequeue in one transaction as
    soon as its chunks have vectors."""
    t0 = time.perf_counter()
    group, known, texts = _read_group(store, core, files, max_chunks)
    one_commit = _hands_over(store, group, known)
    vectors: dict[bytes, npt.NDArray[np.float32]] = {}
    waiting = group
    t1, embedding = time.perf_counter(), 0.0
    for batch in _plan(group, texts, core.embedder.batch_size):
        if stop and stop():
            raise Interrupted()
        t = time.perf_counter()
        vectors.update(zip(batch, core.embedder.embed([texts[d] for d in batch]), strict=True))
        embedding += time.perf_counter() - t
        if not one_commit:
            done = [p for p in waiting if all(d in vectors or known[d] is not None for d in p.digests)]
            waiting = [p for p in waiting if p not in done]
            _commit(store, core, done, known, vectors)
    _commit(store, core, waiting, known, vectors)
    log.debug("indexed %d files, %d new chunks: read and chunked in %.3f s, embedded in %.3f s, committed in "
              "%.3f s", len(group), len(texts), t1 - t0, embedding, time.perf_counter() - t1 - embedding)
    return [len(p.pieces) for p in group]


def _commit(store: Store, core: IndexCore, files: list[_Pending], known: dict[bytes, int | None],
            vectors: dict[bytes, npt.NDArray[np.float32]]) -> None:
    """One transaction for `files`, then the in-memory index.  `known` stays true between reading and here
    because this thread is the only writer of index tables; it learns the ids of the vectors added."""
    if not files:
        return
    core.committing = len(files)
    try:
        added, dropped = _commit_rows(store, core, files, known, vectors)
        if added:
            core.vectors.add(list(added), np.stack(list(added.values())))
        for vid in dropped:
            core.vectors.remove(vid)
    finally:
        core.committing = 0
    core.last_indexed_ns = time.time_ns()


def _commit_rows(store: Store, core: IndexCore, files: list[_Pending], known: dict[bytes, int | None],
                 vectors: dict[bytes, npt.NDArray[np.float32]]) -> tuple[dict[int, npt.NDArray[np.float32]],
                                                                        list[int]]:
    """The transaction of `_commit`; returns the vectors it added (by id) and the ids it dropped."""
    tables = store.index
    added: dict[int, npt.NDArray[np.float32]] = {}
    dropped: list[int] = []
    with store.transaction():
        old = {p.ino: tables.chunks_of(p.ino) for p in files}
        for p in files:
            for seq, (digest, piece) in enumerate(zip(p.digests, p.pieces, strict=True)):
                vid = known[digest]
                if vid is None:
                    vec = vectors[digest]
                    vid = known[digest] = tables.add_sealed_vector(digest, vec.tobytes())
                    added[vid] = vec
                elif tables.ref_vector(vid, +1) <= 1:
                    raise RuntimeError(f"vector {vid} vanished while indexing (a second index writer?)")
                tables.add_chunk(p.ino, seq, piece.start, piece.end, vid,
                                 core.blinder.text(piece.text))
        for p in files:  # old chunks last: a vector one file lets go of may be one another file now uses
            tables.drop_chunks([cid for cid, _ in old[p.ino]])
            dropped += [vid for _, vid in old[p.ino] if tables.ref_vector(vid, -1) <= 0]
            if p.text is None and p.generation == 0:
                tables.drop_file(p.ino)
            else:
                tables.set_file(p.ino, p.generation, time.time_ns(), len(p.pieces))
            if p.queued_ns is not None:
                tables.dequeue(p.ino, p.queued_ns)
    return added, dropped


# -- search -----------------------------------------------------------------------------------------------------
MAX_CANDIDATES = CANDIDATES * 4**4
"""How deep (per side) a filtered search digs for candidates its filter keeps: 12,800 chunks."""
SCOPE_CHUNKS = MAX_CANDIDATES
"""A search confined to a path holding at most this many chunks compares them all (`_scope`): exact, and
cheaper than digging as deep.  (Found out by walking the path: at most ~this many chunks' rows are read.)"""


class _Files:
    """Which files a search may return (under `prefix`; earlier versions only if `versions`), each file's path
    looked up once.  `dropped` says whether any candidate was refused (filtered out, or gone since)."""

    def __init__(self, store: Store, tables: IndexStorage, prefix: bytes | None, *, versions: bool) -> None:
        self.store, self.tables, self.versions = store, tables, versions
        self.prefix = prefix.strip(b"/") + b"/" if prefix and prefix.strip(b"/") else None
        self.dropped = False
        self._paths: dict[int, bytes | None] = {}

    def path(self, ino: int) -> bytes | None:
        """The path of file `ino` if the search may return it, else None."""
        if ino not in self._paths:
            path = self.store.path_of(ino)
            if path is not None and self.prefix is not None and not (path + b"/").startswith(self.prefix):
                path = None
            if path is not None and not self.versions and home.is_version(path):
                path = None
            self._paths[ino] = path
            self.dropped = self.dropped or path is None
        return self._paths[ino]

    def keeps_chunk(self, cid: int) -> bool:
        found = self.tables.chunk(cid)
        return found is not None and self.path(found[0]) is not None


def search(store: Store, core: IndexCore, query: str, k: int = 10, path_prefix: bytes | None = None) -> SearchResult:
    """Hybrid search: vector and BM25 candidates (CANDIDATES a side) fused by Reciprocal Rank Fusion, best file
    first.  Earlier versions (clawfs/home.py) are left out unless `path_prefix` is inside a `.versions/`.

    A search confined to a path that holds at most SCOPE_CHUNKS chunks ranks those chunks alone, exactly
    (`_scope`): the answer a store of those files alone would give, however far down the whole store's rankings
    they lie.  A wider one filters the whole store's rankings (`_dig`)."""
    tables = store.index
    match = core.blinder.query(query)
    files = _Files(store, tables, path_prefix,
                   versions=bool(path_prefix and home.is_version(path_prefix.rstrip(b"/") + b"/")))
    # The text side (the path's walk, BM25) reads the database while this thread embeds the query: SQLite and
    # torch both let go of the GIL, so they overlap, the embedding a torch thread short to leave a core for
    # SQLite.  `store` is not thread-safe: nothing here touches it until the text side is done.
    text_side = _TEXT_SIDE.submit(_text_side, store, tables, files, match)
    try:
        q = core.embedder.embed_query(query, threads=max(1, torch_threads() - 1))
    finally:
        concurrent.futures.wait([text_side])
    scope, text = text_side.result()
    if scope is None:
        hits = _dig(store, core, tables, files, q.vector, match, k, text)
    else:
        rankings, similarity = _scoped_candidates(core, scope, q.vector, text)
        hits = _fuse(store, tables, files, rankings, similarity, k)
    return SearchResult(hits, q.tokens, q.truncated)


_TEXT_SIDE = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="clawfs-search-text")


def _text_side(store: Store, tables: IndexStorage, files: _Files,
               match: str) -> tuple[list[tuple[int, int, int]] | None, list[int]]:
    """A search's path scope (`_scope`) and its first BM25 ranking: of the scope's chunks, else of the whole
    store, CANDIDATES deep."""
    scope = _scope(store, tables, files, SCOPE_CHUNKS)
    if not match or scope == []:
        return scope, []
    if scope is None:
        return None, tables.bm25(match, CANDIDATES)
    return scope, tables.bm25_among(match, {cid for _, cid, _ in scope}, CANDIDATES)


def _dig(store: Store, core: IndexCore, tables: IndexStorage, files: _Files, query: npt.NDArray[np.float32],
         match: str, k: int, text: list[int]) -> list[Hit]:
    """The k best files of the whole store's rankings (BM25's first CANDIDATES: `text`) that `files` keeps.
    When the filter leaves fewer than k and candidates were refused, dig deeper (x4 per round, up to
    MAX_CANDIDATES a side), counting a side's CANDIDATES among the chunks the filter keeps."""
    depth = CANDIDATES
    rankings, similarity, exhausted = _candidates(core, tables, query, match, depth, text)
    hits = _fuse(store, tables, files, rankings, similarity, k)
    while len(hits) < k and files.dropped and depth < MAX_CANDIDATES and not all(exhausted):
        depth *= 4
        rankings, similarity, exhausted = _candidates(core, tables, query, match, depth)
        rankings = [[c for c in side if files.keeps_chunk(c)][:CANDIDATES] for side in rankings]
        hits = _fuse(store, tables, files, rankings, similarity, k)
        # a side with its full count inside the filter is done too: its deeper ranks would not enter
        exhausted = [done or len(side) >= CANDIDATES for side, done in zip(rankings, exhausted, strict=True)]
    return hits


def _scope(store: Store, tables: IndexStorage, files: _Files, limit: int) -> list[tuple[int, int, int]] | None:
    """(file, chunk id, vector id) of every chunk under `files.prefix` in a file the search may return; None
    when there is no prefix, or more than `limit` chunks under it.  Walked by inode numbers, no name decrypted
    on the way down: an earlier-versions directory is found by looking its name up."""
    if files.prefix is None:
        return None
    top = lookup_path(store, files.prefix)
    found: list[tuple[int, int, int]] = []
    pending = [] if top is None else [top.id]  # files and directories still to look at
    seen: set[int] = set()  # a file with two names under the prefix counts once
    while pending:
        ino = pending.pop()
        if ino in seen:
            continue
        seen.add(ino)
        if own := tables.chunks_of(ino):
            if files.path(ino) is not None:
                found += [(ino, cid, vid) for cid, vid in own]
                if len(found) > limit:
                    return None
        elif store.has_entries(ino):
            versions = None if files.versions else store.lookup(ino, home.VERSIONS)
            pending += [child for child in store.child_inodes(ino) if child != versions]
    return found


def _scoped_candidates(core: IndexCore, scope: list[tuple[int, int, int]], query: npt.NDArray[np.float32],
                       text: list[int]) -> tuple[list[list[int]], dict[int, float]]:
    """The vector ranking (CANDIDATES) of the chunks of `scope` alone beside their BM25 ranking `text`, and the
    vector side's similarities.  Every chunk's vector is compared with the query; a vector not yet in memory is
    left out, as the whole store's search leaves it out."""
    held, sims = core.vectors.similarities(query, [vid for _, _, vid in scope])
    sim_of = dict(zip(held, sims[0].tolist(), strict=True))
    ranked = sorted((-sim_of[vid], cid) for _, cid, vid in scope if sim_of.get(vid, -1.0) >= MIN_SIMILARITY)
    vec = [cid for _, cid in ranked[:CANDIDATES]]
    return [vec, text], {cid: -neg for neg, cid in ranked[:CANDIDATES]}


def _candidates(core: IndexCore, tables: IndexStorage, query: npt.NDArray[np.float32], match: str,
                n: int, text: list[int] | None = None) -> tuple[list[list[int]], dict[int, float], list[bool]]:
    """The vector and BM25 rankings of chunks, `n` deep each (BM25's: `text` if already read), the vector
    side's similarities, and for each side whether it holds every candidate there is."""
    vec, similarity, vec_done = _vector_candidates(core, tables, query, n)
    if text is None:
        text = tables.bm25(match, n) if match else []
    return [vec, text], similarity, [vec_done, len(text) < n]


def _vector_candidates(core: IndexCore, tables: IndexStorage, query: npt.NDArray[np.float32],
                       n: int) -> tuple[list[int], dict[int, float], bool]:
    """The chunks of the `n` nearest vectors at MIN_SIMILARITY or more (copies of a text share a vector: each
    copy is a candidate), their similarities, and whether there are no more to find."""
    found = core.vectors.search(query, min(n, len(core.vectors))) if len(core.vectors) else []
    chunks: list[int] = []
    similarity: dict[int, float] = {}
    for vid, sim in found:  # best first
        if sim < MIN_SIMILARITY:
            return chunks, similarity, True
        for cid in tables.chunks_with_vector(vid):
            chunks.append(cid)
            similarity[cid] = sim
    return chunks, similarity, len(found) < n


def _fuse(store: Store, tables: IndexStorage, files: _Files, rankings: list[list[int]],
          similarity: dict[int, float], k: int) -> list[Hit]:
    """The first k files of the chunk rankings fused by RRF, each at its best chunk, those `files` refuses left
    out."""
    hits: list[Hit] = []
    seen: set[int] = set()
    for cid, score in tokens.rrf_fuse(rankings):
        found = tables.chunk(cid)
        if found is None or found[0] in seen:
            continue
        ino, start, end, _ = found
        path = files.path(ino)
        if path is None:
            continue
        seen.add(ino)
        hits.append(Hit(ino, path, score, similarity.get(cid), _snippet(store, ino, start, end)))
        if len(hits) >= k:
            break
    return hits


def _snippet(store: Store, ino: int, start: int, end: int, width: int = 160) -> str:
    _, text = _file_text(store, ino)
    if text is None:
        return ""
    return " ".join(text[start:end].split())[:width]


# -- files like a file -----------------------------------------------------------------------------------------
SIMILAR_CHUNKS = 32
"""At most this many of a file's chunks, spread evenly over it, look for neighbours (bounds a 4 MiB file)."""


def lookup_path(store: Store, path: bytes) -> InodeRow | None:
    """The inode at `path` (relative to the root, '/'-separated, symlinks not followed), or None."""
    row = store.find(ROOT)
    for name in (n for n in path.split(b"/") if n and n != b"."):
        if row is None or not stat.S_ISDIR(row.mode):
            return None
        ino = store.lookup(row.id, name)
        row = None if ino is None else store.find(ino)
    return row


def similar(store: Store, core: IndexCore, ino: int, k: int = 10,
            path_prefix: bytes | None = None) -> list[Hit] | None:
    """The files most similar in meaning to file `ino` (under `path_prefix` if given), best first and without
    it; None when it has no indexed chunks.  Nothing is embedded: the file's own stored chunk vectors are the
    queries.

    Each chunk asks for its nearest chunks, and a file scores the mean, over the asking chunks, of its best
    match (0 where none reached MIN_SIMILARITY).  Not the normalised mean of the chunks as one query: a note
    covering several topics averages into a vector near none of them, and a file matching one section well
    would be lost; per chunk each section finds its own neighbours, and the mean ranks first the files that
    cover most of this one.  `similarity` is a hit's single best chunk match, its snippet that chunk.  Earlier
    versions of files (clawfs/home.py) are left out, unless `ino` is one itself.  When the filter leaves fewer
    than k files, each chunk asks for 4x more neighbours, up to MAX_CANDIDATES (as `search` digs); under a path
    of at most SCOPE_CHUNKS chunks, each chunk is compared with all of them instead (as `search` does)."""
    tables = store.index
    own = [vid for _, vid in tables.chunks_of(ino)]
    if not own:
        return None
    picked = [own[i * len(own) // SIMILAR_CHUNKS] for i in range(SIMILAR_CHUNKS)] if len(own) > SIMILAR_CHUNKS \
        else own
    queries = np.stack([_stored_vector(store, core, v) for v in picked])
    # a file's own history only for an old version
    files = _Files(store, tables, path_prefix, versions=home.is_version(store.path_of(ino) or b""))
    scope = _scope(store, tables, files, SCOPE_CHUNKS)
    if scope is not None:
        best, where = _scoped_neighbour_files(core, ino, queries, scope)
        return _best_files(store, tables, files, best, where, k)
    # The file's own vectors come back too (itself, its neighbouring sections): ask for that many more.
    n = min(len(core.vectors), CANDIDATES + min(len(set(own)), 3 * CANDIDATES))
    while True:
        best, where, more = _neighbour_files(tables, core, ino, queries, n)
        hits = _best_files(store, tables, files, best, where, k)
        if len(hits) >= k or not files.dropped or not more or n >= min(len(core.vectors), MAX_CANDIDATES):
            return hits
        n = min(4 * n, len(core.vectors), MAX_CANDIDATES)


def _best_files(store: Store, tables: IndexStorage, files: _Files, best: dict[int, list[float]],
                where: dict[int, tuple[float, int]], k: int) -> list[Hit]:
    """The k files of `best` with the highest mean match, those `files` refuses left out."""
    hits: list[Hit] = []
    for other, per in sorted(best.items(), key=lambda item: -sum(item[1])):
        path = files.path(other)
        found_chunk = tables.chunk(where[other][1])
        if path is None or found_chunk is None:
            continue
        snippet = _snippet(store, other, found_chunk[1], found_chunk[2])
        hits.append(Hit(other, path, sum(per) / len(per), where[other][0], snippet))
        if len(hits) >= k:
            break
    return hits


def _neighbour_files(tables: IndexStorage, core: IndexCore, ino: int, queries: npt.NDArray[np.float32],
                     n: int) -> tuple[dict[int, list[float]], dict[int, tuple[float, int]], bool]:
    """For every other file among the `n` nearest chunks of any query: its best similarity per query, and its
    best (similarity, chunk id) overall; and whether a deeper look could find more (a query's `n` neighbours
    all reached MIN_SIMILARITY)."""
    best: dict[int, list[float]] = {}
    where: dict[int, tuple[float, int]] = {}
    more = False
    for q, found in enumerate(core.vectors.search_batch(queries, n) if n else []):
        more = more or (len(found) == n and found[-1][1] >= MIN_SIMILARITY)
        for vid, sim in found:
            if sim < MIN_SIMILARITY:
                continue
            for cid in tables.chunks_with_vector(vid):  # copies of a text share a vector: every file counts
                chunk = tables.chunk(cid)
                if chunk is None or chunk[0] == ino:
                    continue
                per = best.setdefault(chunk[0], [0.0] * len(queries))
                per[q] = max(per[q], sim)
                if sim > where.get(chunk[0], (-1.0, 0))[0]:
                    where[chunk[0]] = (sim, cid)
    return best, where, more


def _scoped_neighbour_files(core: IndexCore, ino: int, queries: npt.NDArray[np.float32],
                            scope: list[tuple[int, int, int]]) -> tuple[dict[int, list[float]],
                                                                       dict[int, tuple[float, int]]]:
    """As `_neighbour_files`, with every chunk of `scope` (but `ino`'s own) compared with every query."""
    held, sims = core.vectors.similarities(queries, [vid for _, _, vid in scope])
    column = {vid: j for j, vid in enumerate(held)}
    tops = sims.max(axis=0)  # each chunk's best match over the queries
    matches = np.where(sims >= MIN_SIMILARITY, sims, 0.0)  # per query: 0 where it did not match
    best: dict[int, list[float]] = {}
    where: dict[int, tuple[float, int]] = {}
    for other, cid, vid in scope:
        j = column.get(vid)
        if other == ino or j is None or tops[j] < MIN_SIMILARITY:
            continue
        best[other] = np.maximum(best.get(other, 0.0), matches[:, j]).tolist()
        if tops[j] > where.get(other, (-1.0, 0))[0]:
            where[other] = (float(tops[j]), cid)
    return best, where


def _stored_vector(store: Store, core: IndexCore, vid: int) -> npt.NDArray[np.float32]:
    """A chunk's vector from memory, or from the vectors table when the indexer has committed it but not yet
    added it to the in-memory index."""
    vec = core.vectors.vector(vid)
    if vec is None:
        data = store.index.vector_data(vid)
        if data is None:
            raise IntegrityError(f"vector {vid} of an indexed chunk is missing")
        vec = _vector_of(store, *data)
    return vec


def status(store: Store, core: IndexCore | None, off: str | None = None) -> dict[str, Any]:
    """`.clawfs/status`: what is indexed and pending, and whether search works (`index_off`: why a mount has
    no index; `model`: the embedder's state, "failed: ..." naming the problem and the fix)."""
    tables = store.index
    counts = tables.counts()
    if core is not None:  # read after the queue: a file leaves the queue before its vectors reach memory
        counts["pending"] += core.committing
    return {
        "embedder": tables.meta("embedder"), "dim": tables.meta("dim"), **counts,
        "vectors_in_memory": len(core.vectors) if core and core.loaded else None,
        "search_mode": core.vectors.mode if core and core.loaded else None,
        "loaded": core.loaded if core else False,
        "last_indexed_ns": core.last_indexed_ns if core else None,
        "settings": core.settings if core else None,
        "model": core.embedder.state if core else None,
        "index_off": None if core else off or "no index",
    }
