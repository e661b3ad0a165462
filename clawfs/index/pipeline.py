"""The indexing pipeline: a file read and chunked, its new chunks embedded in groups, its chunks, vectors and
blind tokens committed.

Durability: a change to a file queues it in `index_queue` in the same transaction as the change; the indexer
commits a file's chunks, vectors and blind tokens in one transaction and dequeues it there.  The mount's
indexer thread is the only writer of index tables.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .. import home
from ..store import Store
from . import chunker
from .loading import IndexCore

log = logging.getLogger("clawfs.index")

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Text files larger than this are not indexed (logs and dumps; the agent's notes are far smaller)."""

def file_text(store: Store, ino: int) -> tuple[int, str | None]:
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
    generation, text = file_text(store, ino)
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
