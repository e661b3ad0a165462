"""SQL of the semantic index (schema version 2, documented in schema.py): queue, files, chunks, vectors, FTS."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from typing import Any

from .database import Database


class IndexTables:
    """Typed access to the index tables through one store connection."""

    def __init__(self, db: Database) -> None:
        self.conn = db.conn

    # -- queue ----------------------------------------------------------------------------------------------
    def enqueue(self, ino: int, now_ns: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO index_queue VALUES (?, ?)", (ino, now_ns))

    def queued(self, older_than_ns: int, limit: int) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in self.conn.execute(
            "SELECT ino, queued_ns FROM index_queue WHERE queued_ns <= ? ORDER BY queued_ns LIMIT ?",
            (older_than_ns, limit))]

    def dequeue(self, ino: int, queued_ns: int) -> None:
        """Drop the entry unless the file changed again meanwhile (then it stays for the next round)."""
        self.conn.execute("DELETE FROM index_queue WHERE ino = ? AND queued_ns = ?", (ino, queued_ns))

    def _count(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        row = self.conn.execute(sql, args).fetchone()
        return 0 if row is None else int(row[0])

    def dequeue_all(self, ino: int) -> None:
        self.conn.execute("DELETE FROM index_queue WHERE ino = ?", (ino,))

    def queue_length(self) -> int:
        return self._count("SELECT count(*) FROM index_queue")

    # -- files and chunks -----------------------------------------------------------------------------------
    def chunks_of(self, ino: int) -> list[tuple[int, int]]:
        """(chunk id, vector id) of a file's chunks."""
        return [(int(a), int(b)) for a, b in self.conn.execute(
            "SELECT id, vector_id FROM chunks WHERE ino = ? ORDER BY seq", (ino,))]

    def drop_chunks(self, chunk_ids: list[int]) -> None:
        for chunk_id in chunk_ids:
            self.conn.execute("DELETE FROM fts WHERE rowid = ?", (chunk_id,))
            self.conn.execute("DELETE FROM chunks WHERE id = ?", (chunk_id,))

    def drop_file(self, ino: int) -> None:
        self.conn.execute("DELETE FROM index_files WHERE ino = ?", (ino,))

    def add_chunk(self, ino: int, seq: int, start: int, end: int, vector_id: int, tokens: str) -> int:
        self.conn.execute("INSERT INTO chunks (ino, seq, start, end, vector_id) VALUES (?, ?, ?, ?, ?)",
                          (ino, seq, start, end, vector_id))
        chunk_id = int(self.conn.last_insert_rowid())
        self.conn.execute("INSERT INTO fts (rowid, tokens) VALUES (?, ?)", (chunk_id, tokens))
        return chunk_id

    def set_file(self, ino: int, generation: int, now_ns: int, chunks: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO index_files VALUES (?, ?, ?, ?)", (ino, generation, now_ns, chunks))

    def all_chunks(self) -> Iterator[tuple[int, int]]:
        """(ino, vector id) of every chunk."""
        yield from self.conn.execute("SELECT ino, vector_id FROM chunks")

    def vector_refs(self, vector_id: int) -> int:
        return self._count("SELECT refs FROM vectors WHERE id = ?", (vector_id,))

    def chunk(self, chunk_id: int) -> tuple[int, int, int, int] | None:
        """(ino, start, end, vector id) of a chunk."""
        row = self.conn.execute("SELECT ino, start, end, vector_id FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def chunks_with_vector(self, vector_id: int) -> list[int]:
        return [int(r[0]) for r in self.conn.execute("SELECT id FROM chunks WHERE vector_id = ?", (vector_id,))]

    def indexed_files(self) -> Iterator[tuple[int, int]]:
        yield from self.conn.execute("SELECT ino, chunks FROM index_files")

    # -- vectors --------------------------------------------------------------------------------------------
    def vector_by_digest(self, digest: bytes) -> int | None:
        row = self.conn.execute("SELECT id FROM vectors WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else int(row[0])

    def add_vector(self, digest: bytes, sealed: bytes) -> int:
        self.conn.execute("INSERT INTO vectors (digest, refs, data) VALUES (?, 1, ?)", (digest, sealed))
        return int(self.conn.last_insert_rowid())

    def ref_vector(self, vector_id: int, delta: int) -> int:
        """Change a vector's reference count; returns the new count (0: the vector was deleted)."""
        self.conn.execute("UPDATE vectors SET refs = refs + ? WHERE id = ?", (delta, vector_id))
        refs = self._count("SELECT refs FROM vectors WHERE id = ?", (vector_id,))
        if refs <= 0:
            self.conn.execute("DELETE FROM vectors WHERE id = ?", (vector_id,))
        return refs

    def vectors(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(id, digest, sealed vector) of every stored vector."""
        yield from self.conn.execute("SELECT id, digest, data FROM vectors ORDER BY id")

    def vector_ids(self) -> set[int]:
        return {int(r[0]) for r in self.conn.execute("SELECT id FROM vectors")}

    def vector_data(self, vector_id: int) -> tuple[bytes, bytes] | None:
        row = self.conn.execute("SELECT digest, data FROM vectors WHERE id = ?", (vector_id,)).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    # -- full text ------------------------------------------------------------------------------------------
    def bm25(self, match: str, limit: int) -> list[int]:
        """Chunk ids matching an FTS5 expression, best BM25 first."""
        return [int(r[0]) for r in self.conn.execute(
            "SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY bm25(fts) LIMIT ?", (match, limit))]

    def bm25_among(self, match: str, chunk_ids: AbstractSet[int], limit: int) -> list[int]:
        """As `bm25`, counting only the chunks `chunk_ids` (BM25's statistics stay the whole table's).  The
        full ranking is read until `limit` of them came: SQLite runs `rowid IN (...)` on an FTS5 table as a
        full-text lookup per id (seconds at 10k ids), and sorting every match costs what `bm25` pays anyway."""
        found: list[int] = []
        cursor = self.conn.cursor()
        try:
            for (rowid,) in cursor.execute("SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY bm25(fts)", (match,)):
                if rowid in chunk_ids:
                    found.append(int(rowid))
                    if len(found) >= limit:
                        break
        finally:
            cursor.close()
        return found

    # -- meta -----------------------------------------------------------------------------------------------
    def meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM index_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO index_meta VALUES (?, ?)", (key, value))

    def counts(self) -> dict[str, int]:
        c = self._count
        return {"files": c("SELECT count(*) FROM index_files"), "chunks": c("SELECT count(*) FROM chunks"),
                "vectors": c("SELECT count(*) FROM vectors"), "pending": c("SELECT count(*) FROM index_queue")}

    def clear(self) -> None:
        """Forget the whole index (reindex with another embedder); files are queued again by the caller."""
        for table in ("chunks", "vectors", "index_files", "fts", "index_meta"):
            self.conn.execute(f"DELETE FROM {table}")

    def all_regular_files(self) -> list[int]:
        return [int(r[0]) for r in self.conn.execute(
            "SELECT id FROM inodes WHERE nlink > 0 AND (mode & 61440) = 32768")]
