"""Search, similar files and status of a store's index.

One `Query` object holds a search's state -- the store (its connection), the shared `IndexCore`, the index
tables, and which files it may return (under a path prefix; earlier versions or not), each file's path looked
up once -- so the steps below are its methods rather than functions handed the same four things.
"""

from __future__ import annotations

import concurrent.futures
import stat
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import home
from ..db import InodeRow
from ..errors import IntegrityError
from ..store import ROOT, Store
from . import tokens
from .embedder import torch_threads
from .hits import Hit, SearchResult
from .loading import IndexCore, vector_of
from .pipeline import file_text

CANDIDATES = 50  # per side of the hybrid search, before Reciprocal Rank Fusion (k=60)
MIN_SIMILARITY = 0.2
"""Vector candidates less similar than this are dropped (MiniLM puts unrelated text at about 0.0-0.15), so a
search lists what matches, not every file of the store."""
MAX_CANDIDATES = CANDIDATES * 4**4
"""How deep (per side) a filtered search digs for candidates its filter keeps: 12,800 chunks."""
SCOPE_CHUNKS = MAX_CANDIDATES
"""A search confined to a path holding at most this many chunks compares them all (`Query.scope`): exact, and
cheaper than digging as deep.  (Found out by walking the path: at most ~this many chunks' rows are read.)"""
SIMILAR_CHUNKS = 32
"""At most this many of a file's chunks, spread evenly over it, look for neighbours (bounds a 4 MiB file)."""

_TEXT_SIDE = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="clawfs-search-text")

Scope = list[tuple[int, int, int]]
"""(file, chunk id, vector id) of each chunk a path-confined query compares."""


class Query:
    """One search or similarity query over `store`'s index: which files it may return (under `prefix`; earlier
    versions only if `versions`), each file's path looked up once.  `dropped` says whether any candidate was
    refused (filtered out, or gone since)."""

    def __init__(self, store: Store, core: IndexCore, prefix: bytes | None, *, versions: bool) -> None:
        self.store, self.core, self.tables, self.versions = store, core, store.index, versions
        self.prefix = prefix.strip(b"/") + b"/" if prefix and prefix.strip(b"/") else None
        self.dropped = False
        self._paths: dict[int, bytes | None] = {}

    # -- which files ------------------------------------------------------------------------------------------
    def path(self, ino: int) -> bytes | None:
        """The path of file `ino` if the query may return it, else None."""
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

    def scope(self, limit: int) -> Scope | None:
        """(file, chunk id, vector id) of every chunk under the prefix in a file the query may return; None
        when there is no prefix, or more than `limit` chunks under it.  Walked by inode numbers, no name
        decrypted on the way down: an earlier-versions directory is found by looking its name up."""
        if self.prefix is None:
            return None
        top = lookup_path(self.store, self.prefix)
        found: Scope = []
        pending = [] if top is None else [top.id]  # files and directories still to look at
        seen: set[int] = set()  # a file with two names under the prefix counts once
        while pending:
            ino = pending.pop()
            if ino in seen:
                continue
            seen.add(ino)
            if own := self.tables.chunks_of(ino):
                if self.path(ino) is not None:
                    found += [(ino, cid, vid) for cid, vid in own]
                    if len(found) > limit:
                        return None
            elif self.store.has_entries(ino):
                versions = None if self.versions else self.store.lookup(ino, home.VERSIONS)
                pending += [child for child in self.store.child_inodes(ino) if child != versions]
        return found

    # -- search -----------------------------------------------------------------------------------------------
    def search(self, query: str, k: int) -> SearchResult:
        """See `search`."""
        match = self.core.blinder.query(query)
        # The text side (the path's walk, BM25) reads the database while this thread embeds the query: SQLite
        # and torch both let go of the GIL, so they overlap, the embedding a torch thread short to leave a core
        # for SQLite.  The store is not thread-safe: nothing here touches it until the text side is done.
        text_side = _TEXT_SIDE.submit(self.text_side, match)
        try:
            q = self.core.embedder.embed_query(query, threads=max(1, torch_threads() - 1))
        finally:
            concurrent.futures.wait([text_side])
        scope, text = text_side.result()
        if scope is None:
            hits = self.dig(q.vector, match, k, text)
        else:
            rankings, similarity = self.scoped_candidates(scope, q.vector, text)
            hits = self.fuse(rankings, similarity, k)
        return SearchResult(hits, q.tokens, q.truncated)

    def text_side(self, match: str) -> tuple[Scope | None, list[int]]:
        """The query's path scope (`scope`) and its first BM25 ranking: of the scope's chunks, else of the
        whole store, CANDIDATES deep."""
        scope = self.scope(SCOPE_CHUNKS)
        if not match or scope == []:
            return scope, []
        if scope is None:
            return None, self.tables.bm25(match, CANDIDATES)
        return scope, self.tables.bm25_among(match, {cid for _, cid, _ in scope}, CANDIDATES)

    def dig(self, query: npt.NDArray[np.float32], match: str, k: int, text: list[int]) -> list[Hit]:
        """The k best files of the whole store's rankings (BM25's first CANDIDATES: `text`) that the query
        keeps.  When the filter leaves fewer than k and candidates were refused, dig deeper (x4 per round, up
        to MAX_CANDIDATES a side), counting a side's CANDIDATES among the chunks the filter keeps."""
        depth = CANDIDATES
        rankings, similarity, exhausted = self.candidates(query, match, depth, text)
        hits = self.fuse(rankings, similarity, k)
        while len(hits) < k and self.dropped and depth < MAX_CANDIDATES and not all(exhausted):
            depth *= 4
            rankings, similarity, exhausted = self.candidates(query, match, depth)
            rankings = [[c for c in side if self.keeps_chunk(c)][:CANDIDATES] for side in rankings]
            hits = self.fuse(rankings, similarity, k)
            # a side with its full count inside the filter is done too: its deeper ranks would not enter
            exhausted = [done or len(side) >= CANDIDATES for side, done in zip(rankings, exhausted, strict=True)]
        return hits

    def scoped_candidates(self, scope: Scope, query: npt.NDArray[np.float32],
                          text: list[int]) -> tuple[list[list[int]], dict[int, float]]:
        """The vector ranking (CANDIDATES) of the chunks of `scope` alone beside their BM25 ranking `text`, and
        the vector side's similarities.  Every chunk's vector is compared with the query; a vector not yet in
        memory is left out, as the whole store's search leaves it out."""
        held, sims = self.core.vectors.similarities(query, [vid for _, _, vid in scope])
        sim_of = dict(zip(held, sims[0].tolist(), strict=True))
        ranked = sorted((-sim_of[vid], cid) for _, cid, vid in scope if sim_of.get(vid, -1.0) >= MIN_SIMILARITY)
        vec = [cid for _, cid in ranked[:CANDIDATES]]
        return [vec, text], {cid: -neg for neg, cid in ranked[:CANDIDATES]}

    def candidates(self, query: npt.NDArray[np.float32], match: str, n: int,
                   text: list[int] | None = None) -> tuple[list[list[int]], dict[int, float], list[bool]]:
        """The vector and BM25 rankings of chunks, `n` deep each (BM25's: `text` if already read), the vector
        side's similarities, and for each side whether it holds every candidate there is."""
        vec, similarity, vec_done = self.vector_candidates(query, n)
        if text is None:
            text = self.tables.bm25(match, n) if match else []
        return [vec, text], similarity, [vec_done, len(text) < n]

    def vector_candidates(self, query: npt.NDArray[np.float32], n: int) -> tuple[list[int], dict[int, float], bool]:
        """The chunks of the `n` nearest vectors at MIN_SIMILARITY or more (copies of a text share a vector:
        each copy is a candidate), their similarities, and whether there are no more to find."""
        vectors = self.core.vectors
        found = vectors.search(query, min(n, len(vectors))) if len(vectors) else []
        chunks: list[int] = []
        similarity: dict[int, float] = {}
        for vid, sim in found:  # best first
            if sim < MIN_SIMILARITY:
                return chunks, similarity, True
            for cid in self.tables.chunks_with_vector(vid):
                chunks.append(cid)
                similarity[cid] = sim
        return chunks, similarity, len(found) < n

    def fuse(self, rankings: list[list[int]], similarity: dict[int, float], k: int) -> list[Hit]:
        """The first k files of the chunk rankings fused by RRF, each at its best chunk, those the query
        refuses left out."""
        hits: list[Hit] = []
        seen: set[int] = set()
        for cid, score in tokens.rrf_fuse(rankings):
            found = self.tables.chunk(cid)
            if found is None or found[0] in seen:
                continue
            ino, start, end, _ = found
            path = self.path(ino)
            if path is None:
                continue
            seen.add(ino)
            hits.append(Hit(ino, path, score, similarity.get(cid), self.snippet(ino, start, end)))
            if len(hits) >= k:
                break
        return hits

    def snippet(self, ino: int, start: int, end: int, width: int = 160) -> str:
        _, text = file_text(self.store, ino)
        if text is None:
            return ""
        return " ".join(text[start:end].split())[:width]

    # -- files like a file ------------------------------------------------------------------------------------
    def similar(self, ino: int, k: int) -> list[Hit] | None:
        """See `similar`."""
        own = [vid for _, vid in self.tables.chunks_of(ino)]
        if not own:
            return None
        picked = [own[i * len(own) // SIMILAR_CHUNKS] for i in range(SIMILAR_CHUNKS)] \
            if len(own) > SIMILAR_CHUNKS else own
        queries = np.stack([self.stored_vector(v) for v in picked])
        scope = self.scope(SCOPE_CHUNKS)
        if scope is not None:
            best, where = self.scoped_neighbour_files(ino, queries, scope)
            return self.best_files(best, where, k)
        # The file's own vectors come back too (itself, its neighbouring sections): ask for that many more.
        vectors = self.core.vectors
        n = min(len(vectors), CANDIDATES + min(len(set(own)), 3 * CANDIDATES))
        while True:
            best, where, more = self.neighbour_files(ino, queries, n)
            hits = self.best_files(best, where, k)
            if len(hits) >= k or not self.dropped or not more or n >= min(len(vectors), MAX_CANDIDATES):
                return hits
            n = min(4 * n, len(vectors), MAX_CANDIDATES)

    def best_files(self, best: dict[int, list[float]], where: dict[int, tuple[float, int]], k: int) -> list[Hit]:
        """The k files of `best` with the highest mean match, those the query refuses left out."""
        hits: list[Hit] = []
        for other, per in sorted(best.items(), key=lambda item: -sum(item[1])):
            path = self.path(other)
            found_chunk = self.tables.chunk(where[other][1])
            if path is None or found_chunk is None:
                continue
            snippet = self.snippet(other, found_chunk[1], found_chunk[2])
            hits.append(Hit(other, path, sum(per) / len(per), where[other][0], snippet))
            if len(hits) >= k:
                break
        return hits

    def neighbour_files(self, ino: int, queries: npt.NDArray[np.float32],
                        n: int) -> tuple[dict[int, list[float]], dict[int, tuple[float, int]], bool]:
        """For every other file among the `n` nearest chunks of any query: its best similarity per query, and
        its best (similarity, chunk id) overall; and whether a deeper look could find more (a query's `n`
        neighbours all reached MIN_SIMILARITY)."""
        best: dict[int, list[float]] = {}
        where: dict[int, tuple[float, int]] = {}
        more = False
        for q, found in enumerate(self.core.vectors.search_batch(queries, n) if n else []):
            more = more or (len(found) == n and found[-1][1] >= MIN_SIMILARITY)
            for vid, sim in found:
                if sim < MIN_SIMILARITY:
                    continue
                for cid in self.tables.chunks_with_vector(vid):  # copies of a text share a vector: all count
                    chunk = self.tables.chunk(cid)
                    if chunk is None or chunk[0] == ino:
                        continue
                    per = best.setdefault(chunk[0], [0.0] * len(queries))
                    per[q] = max(per[q], sim)
                    if sim > where.get(chunk[0], (-1.0, 0))[0]:
                        where[chunk[0]] = (sim, cid)
        return best, where, more

    def scoped_neighbour_files(self, ino: int, queries: npt.NDArray[np.float32],
                               scope: Scope) -> tuple[dict[int, list[float]], dict[int, tuple[float, int]]]:
        """As `neighbour_files`, with every chunk of `scope` (but `ino`'s own) compared with every query."""
        held, sims = self.core.vectors.similarities(queries, [vid for _, _, vid in scope])
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

    def stored_vector(self, vid: int) -> npt.NDArray[np.float32]:
        """A chunk's vector from memory, or from the vectors table when the indexer has committed it but not
        yet added it to the in-memory index."""
        vec = self.core.vectors.vector(vid)
        if vec is None:
            data = self.tables.vector_data(vid)
            if data is None:
                raise IntegrityError(f"vector {vid} of an indexed chunk is missing")
            vec = vector_of(self.store, *data)
        return vec


def search(store: Store, core: IndexCore, query: str, k: int = 10, path_prefix: bytes | None = None) -> SearchResult:
    """Hybrid search: vector and BM25 candidates (CANDIDATES a side) fused by Reciprocal Rank Fusion, best file
    first.  Earlier versions (clawfs/home.py) are left out unless `path_prefix` is inside a `.versions/`.

    A search confined to a path that holds at most SCOPE_CHUNKS chunks ranks those chunks alone, exactly
    (`Query.scope`): the answer a store of those files alone would give, however far down the whole store's
    rankings they lie.  A wider one filters the whole store's rankings (`Query.dig`)."""
    versions = bool(path_prefix and home.is_version(path_prefix.rstrip(b"/") + b"/"))
    return Query(store, core, path_prefix, versions=versions).search(query, k)


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
    # a file's own history only for an old version
    versions = home.is_version(store.path_of(ino) or b"")
    return Query(store, core, path_prefix, versions=versions).similar(ino, k)


def lookup_path(store: Store, path: bytes) -> InodeRow | None:
    """The inode at `path` (relative to the root, '/'-separated, symlinks not followed), or None."""
    row = store.find(ROOT)
    for name in (n for n in path.split(b"/") if n and n != b"."):
        if row is None or not stat.S_ISDIR(row.mode):
            return None
        ino = store.lookup(row.id, name)
        row = None if ino is None else store.find(ino)
    return row


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

