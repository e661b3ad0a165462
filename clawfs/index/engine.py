"""The semantic index of one store, as its users see it: one import for loading, indexing and querying.

The work is split by concern: `loading` (IndexCore: what every thread shares; the encrypted snapshot and the
vectors table), `pipeline` (a file read, chunked, embedded and committed) and `querying` (hybrid search, similar
files, status; one `Query` object holds a query's state).  Hits are typed (`hits.Hit`) from here to the control
tree and the CLI.  Each thread talks to the database through its own `Store` (connection); the mount's indexer
thread is the only writer of index tables.
"""

from __future__ import annotations

from .hits import Hit, SearchResult
from .loading import LOAD_TIMEOUT, SETTINGS, IndexCore, save_snapshot
from .pipeline import GROUP_CHUNKS, MAX_FILE_BYTES, Interrupted, index_file, index_files
from .querying import CANDIDATES, MIN_SIMILARITY, SCOPE_CHUNKS, lookup_path, search, similar, status

__all__ = ["CANDIDATES", "GROUP_CHUNKS", "LOAD_TIMEOUT", "MAX_FILE_BYTES", "MIN_SIMILARITY", "SCOPE_CHUNKS",
           "SETTINGS", "Hit", "IndexCore", "Interrupted", "SearchResult", "index_file", "index_files",
           "lookup_path", "save_snapshot", "search", "similar", "status"]
