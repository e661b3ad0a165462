"""The semantic index's storage: its tables (`clawfs.db.index_tables`) joined with the store's keys.

`IndexStorage` is what `Store.index` hands the index, fsck, the CLI and the migrator: the index tables' typed SQL
plus the sealing those tables need (vectors and the HNSW snapshot under the store's index key, chunk digests,
the blind-token key), so nothing outside the store reaches its connection or its envelope.
"""

from __future__ import annotations

from . import crypto
from .db import Database
from .db.index_tables import IndexTables


class IndexStorage(IndexTables):
    """Index tables through one store connection, sealed and opened with that store's keys."""

    def __init__(self, db: Database, env: crypto.Envelope) -> None:
        super().__init__(db)
        self._env = env

    @property
    def token_key(self) -> bytes:
        """The key of the blind full-text tokens (clawfs/index/tokens.py)."""
        return self._env.token_key

    def digest(self, text: bytes) -> bytes:
        """The keyed digest naming a chunk's text (equal texts share one stored vector)."""
        return self._env.digest(text)

    def seal_vector(self, digest: bytes, vector: bytes) -> bytes:
        return self._env.seal_vector(digest, vector)

    def open_vector(self, digest: bytes, sealed: bytes) -> bytes:
        """A stored vector's float32 bytes; IntegrityError when it fails authentication."""
        return self._env.open_vector(bytes(digest), bytes(sealed))

    def add_sealed_vector(self, digest: bytes, vector: bytes) -> int:
        """Store a new vector (one reference) sealed; its id."""
        return self.add_vector(digest, self._env.seal_vector(digest, vector))

    def save_snapshot(self, image: bytes) -> None:
        """Seal and keep an HNSW graph image (part of the caller's unit of work)."""
        self.set_meta("snapshot", self._env.seal_snapshot(image))

    def snapshot(self) -> bytes | None:
        """The stored HNSW graph image, opened; None when there is none; IntegrityError when it fails
        authentication."""
        blob = self.meta("snapshot")
        return None if blob is None else self.open_snapshot(bytes(blob))

    def open_snapshot(self, sealed: bytes) -> bytes:
        return self._env.open_snapshot(sealed)
