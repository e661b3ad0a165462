"""The mount's background indexer: one thread, its own store connection, the only writer of index tables.

The VFS queues changed files (in the transaction of the change) and calls `notify()`; the thread waits
`DEBOUNCE` after a file's last change (an editor's save is several writes), indexes it, and commits.  Nothing
here runs on the FUSE request path.  The model loads on the first file to embed (importing torch takes
seconds), and `stop()` interrupts between embedding batches: what is still queued waits for the next mount.
The HNSW snapshot is written every `SNAPSHOT_EVERY` changes or
`SNAPSHOT_SECONDS`, and at stop.
"""

from __future__ import annotations

import logging
import threading
import time

from kernel.process import lower_thread_priority

from ..db.index_tables import IndexTables
from ..errors import Busy
from ..keys import Credentials
from ..store import Store
from .engine import IndexCore, Interrupted, index_file, save_snapshot

log = logging.getLogger("clawfs.indexer")

DEBOUNCE = 0.3
SNAPSHOT_EVERY = 5000
SNAPSHOT_SECONDS = 120.0


class Indexer:
    def __init__(self, store_path: str, master_key: bytes, core: IndexCore) -> None:
        self.store_path = store_path
        self._master = master_key
        self.core = core
        self._wake = threading.Event()
        self._stopping = False
        self._changes = 0
        self._last_snapshot = time.monotonic()
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="clawfs-indexer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        # Background work: the FUSE loop must win the CPU while the model embeds (2 cores, torch uses both).
        lower_thread_priority()
        store = Store.open(self.store_path, Credentials(tpm=False), lock=False, master_key=self._master)
        try:
            if not self.core.loaded:  # the mount went live without waiting for this (a 100k-chunk index: ~1.5 s)
                self.core.load_vectors(store)
            if self.core.snapshot_stale:  # rebuilt at load: save it, so the next mount starts from it
                self._snapshot(store)
                self.core.snapshot_stale = False
            while not self._stopping:
                self._wake.wait(DEBOUNCE)
                self._wake.clear()
                self._drain(store)
                if self._changes and (self._changes >= SNAPSHOT_EVERY
                                      or time.monotonic() - self._last_snapshot > SNAPSHOT_SECONDS):
                    self._snapshot(store)
            if self._changes:  # what is still queued waits for the next mount: unmount must not wait for it
                self._snapshot(store)
        except Exception:
            log.exception("the indexer stopped; files stay queued for the next mount")
        finally:
            store.close()

    def _drain(self, store: Store) -> None:
        tables = IndexTables(store.db)
        while not self._stopping:
            batch = tables.queued(time.time_ns() - int(DEBOUNCE * 1e9), 32)
            if not batch:
                return
            for ino, queued_ns in batch:
                if self._stopping:
                    return
                try:
                    index_file(store, self.core, ino, queued_ns, stop=lambda: self._stopping)
                except Interrupted:
                    return
                except Busy:
                    log.info("store busy; inode %d stays queued", ino)
                    return
                except Exception as e:  # one bad file (say, a block failing authentication) must not stop the rest
                    self.errors += 1
                    log.error("indexing inode %d failed (%s); skipped until it changes again", ino, e)
                    with store.transaction():
                        tables.dequeue(ino, queued_ns)
                self._changes += 1

    def _snapshot(self, store: Store) -> None:
        save_snapshot(store, self.core)
        self._changes = 0
        self._last_snapshot = time.monotonic()
