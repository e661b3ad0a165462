"""The vector index: cosine nearest neighbours over chunk vectors, exact when small, HNSW when large.

This module owns every use of hnswlib in the project (the bench and the indexer drive it through `VectorIndex`).

Two structures, kept consistent under one reader-writer lock:
    * a dense matrix of the live vectors (L2-normalised float32, one row per id) that answers exactly with numpy
      while there are fewer than `exact_below` live vectors (100% recall), serves as the ground truth, and is what
      a damaged graph is rebuilt from;
    * an hnswlib HNSW graph (space "cosine", labels = the caller's integer ids) that answers at or above
      `exact_below`.  Deletes are `mark_deleted`; new ids reuse deleted slots (`replace_deleted`), and re-added or
      replaced ids are updated in place, so hnswlib's label table never holds one label twice.
hnswlib must not run `add_items` and `knn_query` at the same time: searches share the lock, writes take it alone.

Persistence: `to_bytes()` is a versioned header, the ids, the matrix and the hnswlib image. hnswlib only saves and
loads by path, so the image goes through an anonymous in-memory file (`memfd_create`, reached as `/proc/self/fd/N`);
nothing touches a disk. In HNSW mode the matrix is left out (`_FLAG_NO_MATRIX`): the image holds every vector
already (hnswlib keeps its own unit-length copy beside each node's links), so `from_bytes` reads the rows back out
of the image's level-0 array, nearly halving the snapshot (315 to 169 MB at 100k vectors of 384 dims; loading it
takes 0.06 s more, reading and decrypting it 0.4 s less). hnswlib's `get_items` would do the same through Python
lists (6 s at 100k); the layout read here is what hnswlib's saveIndex writes (`HierarchicalNSW::saveIndex` in
hnswalg.h: a 96-byte header of sizes and offsets, then `cur_element_count` fixed-size level-0 records of links,
vector and label), checked field by field -- a snapshot that does not match it is a `SnapshotError`, and the index
is rebuilt from the stored vectors. Below `exact_below` the matrix is kept: exact answers then stay bit-identical
across a round trip. The bytes are plaintext vectors: the caller must encrypt and authenticate them before storing
them, and authenticate before `from_bytes` -- hnswlib trusts its input, and a crafted image can crash the process. A
snapshot that is missing or fails to load is replaced by `rebuild()` from the stored vectors (no re-embedding).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import hnswlib  # type: ignore[import-untyped]
import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

WIRE_F32 = np.dtype("<f4")  # the snapshot is little-endian whatever the machine
WIRE_I64 = np.dtype("<i8")
MAX_ID = 2**63 - 1

_MAGIC = b"CFVX"
_VERSIONS = (1, 2)  # 2: _FLAG_NO_MATRIX may be set
_VERSION = 2
_FLAG_GRAPH = 1
_FLAG_NO_MATRIX = 2
# hnswlib's saveIndex header: offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset,
# offsetData (size_t each), maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t)
_HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
_HNSW_DELETED = 1  # bit of byte 2 of a level-0 record's link count: hnswlib's DELETE_MARK
# magic, version, flags, dim, M, ef_construction, ef, exact_below, live count, graph image length
_HEADER = struct.Struct("<4sHHIIIIQQQ")
_GROWTH = 1.5
_EXACT_SCORES = 1 << 24  # floats of query-by-vector scores computed at once (64 MiB)
_WRITE_CHUNK = 1 << 30


class SnapshotError(ValueError):
    """A serialised index is malformed or does not match its header: rebuild it from the stored vectors."""


@dataclass(frozen=True)
class IndexParams:
    """The settings of one index; M and ef_construction are fixed once the graph exists, ef is not."""

    dim: int
    M: int = 16
    ef_construction: int = 200
    ef: int = 64
    exact_below: int = 20_000

    def __post_init__(self) -> None:
        if self.dim < 1 or self.M < 2 or self.ef_construction < 1 or self.ef < 1 or self.exact_below < 0:
            raise ValueError(f"invalid index parameters: {self}")


class _RWLock:
    """Many readers or one writer; a waiting writer blocks new readers so that writes are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _OneBlasThread:
    """numpy's BLAS on one thread while single exact queries run.  OpenBLAS splits even one matrix-vector product
    over every core, and on a busy 2-core machine its threads wait for each other's time slices: one query at 20k
    vectors took 2x (and up to 50x) as long as on one thread.  The limit is process-wide, so it is counted: the
    first concurrent single query sets it, the last restores it (about 0.08 ms, small beside embedding a query)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._controller: ThreadpoolController | None = None
        self._limiter: object = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if not self._users:
                self._controller = self._controller or ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if not self._users:
                    self._limiter.restore_original_limits()  # type: ignore[attr-defined]


_ONE_BLAS_THREAD = _OneBlasThread()


def _normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length (zero rows stay zero), as hnswlib's cosine space does."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: NDArray[np.float32] = (vectors / np.maximum(norms, 1e-30)).astype(np.float32, copy=False)
    return out


def _as_matrix(vectors: ArrayLike, dim: int, what: str) -> NDArray[np.float32]:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what}: expected shape (n, {dim}), got {np.shape(vectors)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: vectors must be finite (no NaN or inf)")
    return arr


def _as_ids(ids: Iterable[int] | NDArray[np.integer], n: int) -> list[int]:
    out = [int(i) for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
    if len(out) != n:
        raise ValueError(f"{len(out)} ids for {n} vectors")
    if any(i < 0 or i > MAX_ID for i in out):
        raise ValueError("ids must be integers in [0, 2**63)")
    return out


def _top_k(scores: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Row positions of the k highest scores, best first."""
    if k >= scores.shape[0]:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class VectorIndex:
    """Cosine k-NN over integer ids: exact below `exact_below` live vectors, HNSW at or above.

    Thread-safe: any number of concurrent `search` calls, writes (`add`, `remove`, `set_ef`) one at a time.
    `graph=False` keeps only the exact matrix (exact search at any size; the bench's exact row).
    """

    def __init__(self, dim: int, *, M: int = 16, ef_construction: int = 200, ef: int = 64,
                 exact_below: int = 20_000, max_elements: int = 1024, graph: bool = True,
                 num_threads: int = -1, seed: int = 100) -> None:
        self._params = IndexParams(dim, M, ef_construction, ef, exact_below)
        self._lock = _RWLock()
        self._num_threads = num_threads
        cap = max(int(max_elements), 1)
        self._mat: NDArray[np.float32] = np.empty((cap, dim), dtype=np.float32)
        self._ids: NDArray[np.int64] = np.empty(cap, dtype=np.int64)
        self._row: dict[int, int] = {}
        self._graph: hnswlib.Index | None = None
        self._deleted: set[int] = set()  # ids marked deleted in the graph (may hold ids whose slot was reused)
        if graph:
            self._graph = hnswlib.Index(space="cosine", dim=dim)
            self._graph.init_index(max_elements=cap, M=M, ef_construction=ef_construction,
                                   random_seed=seed, allow_replace_deleted=True)
            self._graph.set_ef(ef)

    # ---- introspection -------------------------------------------------------------------------------------

    @property
    def params(self) -> IndexParams:
        return self._params

    @property
    def dim(self) -> int:
        return self._params.dim

    @property
    def has_graph(self) -> bool:
        return self._graph is not None

    @property
    def mode(self) -> Literal["exact", "hnsw"]:
        """"exact" or "hnsw": the path a search takes now."""
        use_graph = self._graph is not None and len(self._row) >= self._params.exact_below
        return "hnsw" if use_graph else "exact"

    def __len__(self) -> int:
        return len(self._row)

    def contains(self, id: int) -> bool:
        return id in self._row

    def __contains__(self, id: object) -> bool:
        return id in self._row

    def ids(self) -> NDArray[np.int64]:
        """The live ids (a copy, in storage order)."""
        with self._lock.read():
            return self._ids[: len(self._row)].copy()

    def vector(self, id: int) -> NDArray[np.float32] | None:
        """The stored (unit-length) vector of `id`, or None."""
        with self._lock.read():
            row = self._row.get(id)
            return None if row is None else self._mat[row].copy()

    def matrix_bytes(self) -> int:
        """Bytes held by the exact matrix and its ids (allocated capacity)."""
        return int(self._mat.nbytes + self._ids.nbytes)

    def memory_bytes(self) -> int:
        """Estimated bytes hnswlib allocates for the graph (0 without one).

        hnswlib reserves level 0 for `max_elements` up front: per slot 2*M links (4 B) + a count, the vector
        (4*dim B), the label (8 B), a mutex and a level pointer; upper levels hold M links for an expected
        1/(M-1) levels per element, and the label table one hash node per element.
        """
        g = self._graph
        if g is None:
            return 0
        m, cap, count = int(g.M), int(g.max_elements), int(g.element_count)
        level0 = (2 * m * 4 + 4) + 4 * self._params.dim + 8
        per_slot = level0 + 40 + 8 + 4  # + link-list mutex, upper-level pointer, level number
        upper = (m * 4 + 4) / (m - 1)
        label_table = 48
        return int(cap * per_slot + count * (upper + label_table))

    # ---- writes --------------------------------------------------------------------------------------------

    def add(self, ids: Sequence[int] | NDArray[np.integer], vectors: ArrayLike) -> None:
        """Add or replace vectors.  An id already present takes its new vector; a later duplicate in `ids` wins."""
        mat = _as_matrix(vectors, self._params.dim, "add")
        id_list = _as_ids(ids, mat.shape[0])
        if not id_list:
            return
        last = {i: pos for pos, i in enumerate(id_list)}  # de-duplicate, last one wins
        keep = np.fromiter(last.values(), dtype=np.intp, count=len(last))
        uniq = np.fromiter(last.keys(), dtype=np.int64, count=len(last))
        unit = _normalise(mat[keep])
        with self._lock.write():
            if self._graph is not None:
                self._graph_add(uniq, unit)
            self._matrix_add(uniq, unit)

    def remove(self, id: int) -> bool:
        """Forget `id`; False when it was not there.  Its graph slot is reused by a later add."""
        with self._lock.write():
            row = self._row.get(id)
            if row is None:
                return False
            if self._graph is not None:
                self._graph.mark_deleted(id)
                self._deleted.add(id)
            del self._row[id]
            last = len(self._row)
            if row != last:  # move the last row into the hole
                moved = int(self._ids[last])
                self._mat[row] = self._mat[last]
                self._ids[row] = moved
                self._row[moved] = row
            return True

    def set_ef(self, ef: int) -> None:
        """Change the search-time breadth (no rebuild needed)."""
        with self._lock.write():
            self._params = IndexParams(self.dim, self._params.M, self._params.ef_construction, ef,
                                       self._params.exact_below)
            if self._graph is not None:
                self._graph.set_ef(ef)

    def _matrix_add(self, ids: NDArray[np.int64], unit: NDArray[np.float32]) -> None:
        rows = np.empty(len(ids), dtype=np.intp)
        fresh: list[int] = []
        for pos, i in enumerate(ids.tolist()):
            row = self._row.get(i)
            if row is None:
                fresh.append(pos)
            else:
                rows[pos] = row
        n = len(self._row)
        self._reserve_rows(n + len(fresh))
        rows[fresh] = np.arange(n, n + len(fresh))
        self._mat[rows] = unit
        self._ids[rows] = ids
        for pos in fresh:
            self._row[int(ids[pos])] = int(rows[pos])

    def _reserve_rows(self, need: int) -> None:
        cap = self._mat.shape[0]
        if need <= cap:
            return
        new_cap = max(need, int(cap * _GROWTH) + 1)
        mat = np.empty((new_cap, self.dim), dtype=np.float32)
        ids = np.empty(new_cap, dtype=np.int64)
        n = len(self._row)
        mat[:n], ids[:n] = self._mat[:n], self._ids[:n]
        self._mat, self._ids = mat, ids

    def _graph_add(self, ids: NDArray[np.int64], unit: NDArray[np.float32]) -> None:
        """Live ids are updated in place, removed ids are revived in their own slot, new ids reuse free slots.

        hnswlib's `replace_deleted=True` takes any free slot without checking whether the label already has one,
        so it is used only for ids the graph does not know; otherwise one label could own two slots.
        """
        g = self._graph
        assert g is not None
        self._prune_deleted()
        in_place = np.zeros(len(ids), dtype=bool)
        revived = 0
        for pos, i in enumerate(ids.tolist()):
            if i in self._row:
                in_place[pos] = True
            elif i in self._deleted:
                self._deleted.discard(i)
                try:
                    g.unmark_deleted(i)  # removed earlier and its slot not reused yet
                except RuntimeError:
                    continue  # its slot went to another id: the graph no longer knows it
                in_place[pos] = True
                revived += 1
        if in_place.any():
            g.add_items(unit[in_place], ids[in_place], num_threads=self._num_threads)
        new = ~in_place
        if new.any():
            free = int(g.element_count) - len(self._row) - revived  # deleted slots left to reuse
            need = int(g.element_count) + max(0, int(new.sum()) - free)
            if need > int(g.max_elements):
                g.resize_index(max(need, int(g.max_elements * _GROWTH) + 1))
            g.add_items(unit[new], ids[new], num_threads=self._num_threads, replace_deleted=True)

    def _prune_deleted(self) -> None:
        """Drop ids whose slot another id took, once they outnumber the deleted slots that really exist."""
        assert self._graph is not None
        free = int(self._graph.element_count) - len(self._row)
        if len(self._deleted) > 2 * free + 1024:
            self._deleted = set(self._graph.get_ids_list()) - self._row.keys()

    # ---- search --------------------------------------------------------------------------------------------

    def search(self, query: ArrayLike, k: int = 10, *, exact: bool | None = None) -> list[tuple[int, float]]:
        """The k nearest ids with cosine similarity, best first.  `exact=True` forces numpy, False forces HNSW."""
        return self.search_batch(query, k, exact=exact)[0]

    def search_batch(self, queries: ArrayLike, k: int = 10, *,
                     exact: bool | None = None) -> list[list[tuple[int, float]]]:
        """One result list per query row (as `search`)."""
        q = _normalise(_as_matrix(queries, self.dim, "search"))
        if k < 1:
            raise ValueError("k must be at least 1")
        if exact is False and self._graph is None:
            raise ValueError("this index keeps no HNSW graph (graph=False)")
        with self._lock.read():
            n = len(self._row)
            if n == 0:
                return [[] for _ in range(q.shape[0])]
            use_graph = self.mode == "hnsw" if exact is None else not exact
            if use_graph:
                found = self._search_graph(q, min(k, n))
                if found is not None:
                    return found
            if q.shape[0] == 1:
                with _ONE_BLAS_THREAD.held():
                    return self._search_exact(q, min(k, n))
            return self._search_exact(q, min(k, n))

    def similarities(self, queries: ArrayLike, ids: Sequence[int]) -> tuple[list[int], NDArray[np.float32]]:
        """Cosine similarity of every query row to each of `ids` held here, exactly (numpy, whatever the mode):
        (those ids, in the order given; a queries x ids matrix).  Ids not held are left out."""
        q = _normalise(_as_matrix(queries, self.dim, "search"))
        with self._lock.read():
            held = [i for i in ids if i in self._row]
            rows = self._mat[[self._row[i] for i in held]]  # a copy: the lock may go
        with _ONE_BLAS_THREAD.held():
            return held, np.clip(q @ rows.T, -1.0, 1.0)

    def _search_exact(self, q: NDArray[np.float32], k: int) -> list[list[tuple[int, float]]]:
        n = len(self._row)
        block = max(1, _EXACT_SCORES // n)  # bound the score matrix of a large batch
        out = []
        for start in range(0, q.shape[0], block):
            scores = q[start : start + block] @ self._mat[:n].T
            for row in scores:
                best = _top_k(row, k)
                sims = np.clip(row[best], -1.0, 1.0)
                out.append(list(zip(self._ids[best].tolist(), sims.tolist(), strict=True)))
        return out

    def _search_graph(self, q: NDArray[np.float32], k: int) -> list[list[tuple[int, float]]] | None:
        """HNSW answers (hnswlib searches with max(ef, k)); None when it cannot find k live neighbours."""
        assert self._graph is not None
        threads = 1 if q.shape[0] == 1 else self._num_threads
        try:
            labels, dists = self._graph.knn_query(q, k=k, num_threads=threads)
        except RuntimeError:  # "Cannot return the results in a contiguous 2D array": too many deletions nearby
            return None
        sims = np.clip(1.0 - dists, -1.0, 1.0)
        return [list(zip(lr.tolist(), sr.tolist(), strict=True)) for lr, sr in zip(labels, sims, strict=True)]

    # ---- persistence ---------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole index as bytes (plaintext vectors: encrypt and authenticate before storing)."""
        with self._lock.read():
            n, p = len(self._row), self._params
            ids = np.ascontiguousarray(self._ids[:n], dtype=WIRE_I64)  # views, no copy, on little-endian hosts
            mat = np.ascontiguousarray(self._mat[:n], dtype=WIRE_F32)
            no_matrix = self.mode == "hnsw"  # the image holds the vectors (module docstring)
            flags = (_FLAG_GRAPH if self._graph is not None else 0) | (_FLAG_NO_MATRIX if no_matrix else 0)
            body = (ids.data,) if no_matrix else (ids.data, mat.data)
            fd = os.memfd_create("clawfs-hnsw", os.MFD_CLOEXEC)
            try:
                if self._graph is not None:
                    self._graph.save_index(f"/proc/self/fd/{fd}")
                size = os.fstat(fd).st_size
                header = _HEADER.pack(_MAGIC, _VERSION, flags, p.dim, p.M, p.ef_construction, p.ef, p.exact_below,
                                      n, size)
                if not size:
                    return b"".join((header, *body))
                with mmap.mmap(fd, size, prot=mmap.PROT_READ) as image:
                    return b"".join((header, *body, image))
            finally:
                os.close(fd)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, ef: int | None = None,
                   exact_below: int | None = None, num_threads: int = -1) -> VectorIndex:
        """Load `to_bytes` output, which the caller has authenticated.  Raises SnapshotError when malformed.

        `ef` and `exact_below` override the stored values (they need no rebuild).
        """
        view = memoryview(data).cast("B")
        p, n, flags, image_len = _parse_header(view)
        has_graph, no_matrix = bool(flags & _FLAG_GRAPH), bool(flags & _FLAG_NO_MATRIX)
        if no_matrix and not has_graph:
            raise SnapshotError("snapshot holds neither the vectors nor a graph")
        p = IndexParams(p.dim, p.M, p.ef_construction, ef or p.ef,
                        p.exact_below if exact_below is None else exact_below)
        ids, mat, image = _split_body(view, p.dim, n, image_len, with_matrix=not no_matrix)
        if mat is None:
            mat = _rows_from_image(image, ids, p.dim)
        index = cls(p.dim, M=p.M, ef_construction=p.ef_construction, ef=p.ef, exact_below=p.exact_below,
                    max_elements=max(n, 1), graph=False, num_threads=num_threads)
        index._mat[:n], index._ids[:n] = mat, ids
        index._row = {int(i): r for r, i in enumerate(ids.tolist())}
        if len(index._row) != n or (n and int(ids.min()) < 0):
            raise SnapshotError("snapshot ids are not distinct non-negative integers")
        if has_graph:
            index._graph = _load_graph(image, p, n)
            index._deleted = set(index._graph.get_ids_list()) - index._row.keys()
        return index

    @classmethod
    def rebuild(cls, ids: Sequence[int] | NDArray[np.integer], vectors: ArrayLike, *,
                params: IndexParams | None = None, graph: bool = True, num_threads: int = -1) -> VectorIndex:
        """A fresh index holding exactly these vectors, built in one multi-threaded batch (snapshot lost or damaged)."""
        mat = np.asarray(vectors, dtype=np.float32)
        if mat.ndim != 2:
            raise ValueError(f"rebuild: expected a 2-D array of vectors, got shape {mat.shape}")
        p = params or IndexParams(mat.shape[1])
        index = cls(p.dim, M=p.M, ef_construction=p.ef_construction, ef=p.ef, exact_below=p.exact_below,
                    max_elements=max(mat.shape[0], 1), graph=graph, num_threads=num_threads)
        index.add(ids, mat)
        return index


def _load_graph(image: memoryview, p: IndexParams, n: int) -> hnswlib.Index:
    fd = os.memfd_create("clawfs-hnsw", os.MFD_CLOEXEC)
    try:
        offset = 0
        while offset < len(image):
            offset += os.pwrite(fd, image[offset : offset + _WRITE_CHUNK], offset)
        graph = hnswlib.Index(space="cosine", dim=p.dim)
        try:
            graph.load_index(f"/proc/self/fd/{fd}", max_elements=0, allow_replace_deleted=True)
        except RuntimeError as e:
            raise SnapshotError(f"HNSW image does not load: {e}") from None
    finally:
        os.close(fd)
    if (graph.dim, graph.M, graph.ef_construction) != (p.dim, p.M, p.ef_construction) or graph.element_count < n:
        raise SnapshotError("HNSW image does not match the snapshot header")
    graph.set_ef(p.ef)
    return graph


def _parse_header(view: memoryview) -> tuple[IndexParams, int, int, int]:
    """(parameters, live count, flags, image length) of a snapshot."""
    if len(view) < _HEADER.size:
        raise SnapshotError("snapshot too short")
    magic, version, flags, dim, m, efc, ef, exact_below, n, image_len = _HEADER.unpack_from(view)
    if magic != _MAGIC:
        raise SnapshotError("not a ClawFS vector index snapshot")
    if version not in _VERSIONS or (version == 1 and flags & _FLAG_NO_MATRIX):
        raise SnapshotError(f"unsupported vector index snapshot version {version}")
    try:
        params = IndexParams(dim, m, efc, ef, exact_below)
    except ValueError as e:
        raise SnapshotError(str(e)) from None
    return params, n, flags, image_len


def _split_body(view: memoryview, dim: int, n: int, image_len: int, *,
                with_matrix: bool) -> tuple[NDArray[np.int64], NDArray[np.float32] | None, memoryview]:
    start = _HEADER.size
    ids_end = start + n * 8
    mat_end = ids_end + (n * dim * 4 if with_matrix else 0)
    if len(view) != mat_end + image_len:
        raise SnapshotError(f"snapshot is {len(view)} bytes, header says {mat_end + image_len}")
    ids = np.frombuffer(view[start:ids_end], dtype=WIRE_I64).astype(np.int64, copy=False)
    if not with_matrix:
        return ids, None, view[mat_end:]
    mat = np.frombuffer(view[ids_end:mat_end], dtype=WIRE_F32).astype(np.float32, copy=False).reshape(n, dim)
    return ids, mat, view[mat_end:]


def _rows_from_image(image: memoryview, ids: NDArray[np.int64], dim: int) -> NDArray[np.float32]:
    """The vectors of `ids`, in that order, read from an hnswlib image's level-0 records (module docstring):
    for each id, the one record that carries it as label and is not marked deleted."""
    if not len(ids):
        return np.empty((0, dim), dtype=np.float32)
    if len(image) < _HNSW_HEADER.size:
        raise SnapshotError("HNSW image too short")
    off0, _, count, size, label_at, data_at, *_ = _HNSW_HEADER.unpack_from(image)
    vec_bytes = dim * 4
    if (off0 != 0 or data_at < 4 or data_at + vec_bytes != label_at or label_at + 8 != size
            or len(image) < _HNSW_HEADER.size + count * size):
        raise SnapshotError("HNSW image does not have hnswlib's level-0 layout")
    level0 = np.frombuffer(image, dtype=np.uint8, count=count * size, offset=_HNSW_HEADER.size).reshape(count, size)
    labels = np.ascontiguousarray(level0[:, label_at:label_at + 8]).view(WIRE_I64).ravel()
    live = np.flatnonzero((level0[:, 2] & _HNSW_DELETED) == 0)
    order = live[np.argsort(labels[live], kind="stable")]
    at = np.searchsorted(labels[order], ids)
    at = np.minimum(at, max(len(order) - 1, 0))
    if not len(order) or not np.array_equal(labels[order[at]], ids):
        raise SnapshotError("HNSW image lacks vectors of live ids")
    rows = np.ascontiguousarray(level0[order[at], data_at:data_at + vec_bytes])
    return rows.view(WIRE_F32).astype(np.float32, copy=False).reshape(len(ids), dim)
