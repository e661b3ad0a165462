"""The mount's background indexer: one thread, its own store connection, the only writer of index tables.

The VFS queues changed files (in the transaction of the change) and calls `notify()`.  The thread indexes a
file once `DEBOUNCE` has passed since it was last queued (an editor's save is several calls), sleeping until
exactly then, and takes the ready files in groups (`engine.index_files`: their new chunks share model
batches, each file commits once its chunks are embedded).  Nothing here runs on the FUSE request path.  At
start the thread loads the vectors while a second thread loads the model, then runs the model once, so the
first file changed after mounting does not wait for torch's import (seconds).  `stop()` interrupts between
embedding batches: what is not committed yet waits for the next mount.

The HNSW snapshot (about 1.7 KiB per vector, seconds to seal and write at 100k chunks, in a transaction the
mount's writes wait for) is saved every `SNAPSHOT_EVERY` changes, after `SNAPSHOT_SECONDS` once the queue has
been idle for `IDLE_SECONDS`, and at stop; never between a file's close and its indexing.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kernel.process import lower_thread_priority

from ..errors import Busy, UserError
from ..keys import Credentials
from ..store import FLUSH_INTERVAL, Store
from .engine import IndexCore, Interrupted, index_files, save_snapshot

log = logging.getLogger("clawfs.indexer")

DEBOUNCE = 0.2
COMMIT_LAG = 0.5
"""A notify comes with the change, whose group commit follows within FLUSH_INTERVAL (50 ms) unless the loop or
the database is busy: the queue is looked at every FLUSH_INTERVAL for this long after a notify."""
POLL_SECONDS = 1.0  # otherwise: a commit later than that is still seen, and an idle snapshot taken
GROUP_FILES = 256  # ready files looked at per round; `index_files` takes as many as fill its group
IDLE_SECONDS = 2.0
SNAPSHOT_EVERY = 5000
SNAPSHOT_SECONDS = 120.0
_ALL = 1 << 62  # queued_ns bound that every queued entry is below


class Indexer:
    def __init__(self, store_path: str, master_key: bytes, core: IndexCore) -> None:
        self.store_path = store_path
        self._master = master_key
        self.core = core
        self._wake = threading.Event()
        self._stopping = False
        self._notified = 0.0  # monotonic time of the last notify
        self._changes = 0
        self._last_snapshot = time.monotonic()
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="clawfs-indexer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._notified = time.monotonic()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop and wait for it, at most `timeout` seconds; True once it has.  One still
        busy (loading the model, embedding a file) is left to die with the process: it commits nothing
        half-done, so what it had not finished stays queued for the next mount."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        # Background work: the FUSE loop must win the CPU while the model embeds (2 cores, torch uses both).
        lower_thread_priority()
        store = Store.open(self.store_path, Credentials(tpm=False), lock=False, master_key=self._master)
        try:
            if not self._get_ready(store):
                return
            tables = store.index
            while not self._stopping:
                self._wake.clear()  # before draining: a notify from now on cuts the wait below short
                stalled = not self._drain(store)
                oldest = tables.queued(_ALL, 1)
                if self._snapshot_due(queue_empty=not oldest):
                    self._snapshot(store)
                    continue
                self._wake.wait(self._next_wait(oldest[0][1] if oldest else None, stalled))
            if self._changes:  # what is still queued waits for the next mount: unmount must not wait for it
                self._snapshot(store)
        except Exception:
            log.exception("the indexer stopped; files stay queued for the next mount")
        finally:
            store.close()

    def _get_ready(self, store: Store) -> bool:
        """The vectors and the model, both before the first file needs them (and a first search, which waits
        for both); False if the model cannot load.  The model loads in a second thread meanwhile: torch's import
        is seconds of mostly Python, the vectors' read, decryption and graph load at 100k chunks ~1.5 s of
        mostly native code, and the two overlap on two cores."""
        with ThreadPoolExecutor(1, thread_name_prefix="clawfs-model-load") as pool:
            model = pool.submit(self.core.embedder.load)  # the thread inherits this one's lowered priority
            if not self.core.loaded:  # the mount went live without waiting for this
                self.core.load_vectors(store)
            if self.core.snapshot_stale:  # rebuilt or caught up at load: saved at the first idle moment
                self._changes += 1
                self._last_snapshot = time.monotonic() - SNAPSHOT_SECONDS
                self.core.snapshot_stale = False
            model_error = model.exception()
        try:
            if model_error is not None:
                raise model_error
            self.core.embedder.warm_up()
        except UserError as e:  # not file by file: each would be dropped from the queue as failed
            log.error("the embedding model cannot load (%s); changes stay queued for the next mount", e)
            return False
        return True

    def _next_wait(self, oldest_ns: int | None, stalled: bool) -> float:
        """Seconds until there may be work: the oldest queued file's debounce end, or the commit that follows
        a notify; else `POLL_SECONDS` (a commit later than COMMIT_LAG, the idle snapshot)."""
        if stalled:
            return DEBOUNCE  # busy store: try again soon, not at once
        if oldest_ns is not None:
            return min(max(oldest_ns / 1e9 + DEBOUNCE - time.time(), 0.01), DEBOUNCE)
        if time.monotonic() - self._notified < COMMIT_LAG:
            return FLUSH_INTERVAL
        return POLL_SECONDS

    def _drain(self, store: Store) -> bool:
        """Index every ready file; False when it had to stop early (unmount, busy store)."""
        tables = store.index
        while not self._stopping:
            ready = tables.queued(time.time_ns() - int(DEBOUNCE * 1e9), GROUP_FILES)
            if not ready:
                return True
            if not self._index_group(store, ready):
                return False
        return False

    def _index_group(self, store: Store, ready: list[tuple[int, int]]) -> bool:
        """Index the first files of `ready` (at least one); False when interrupted or the store is busy."""
        try:
            self._changes += len(index_files(store, self.core, ready, stop=lambda: self._stopping))
            return True
        except Interrupted:
            self._changes += 1  # files of the group that were complete are committed: snapshot at stop
            return False
        except Busy:
            log.info("store busy; the files of this group not committed yet stay queued")
            return False
        except Exception as e:  # one bad file (say, a block failing authentication) must not stop the rest
            if len(ready) > 1:  # which one? each alone now; the next rounds group again
                return all(self._index_group(store, [item]) for item in ready)
            ino, queued_ns = ready[0]
            self.errors += 1
            log.error("indexing inode %d failed (%s); skipped until it changes again", ino, e)
            with store.transaction():
                store.index.dequeue(ino, queued_ns)
            self._changes += 1
            return True

    def _snapshot_due(self, queue_empty: bool) -> bool:
        if not self._changes:
            return False
        now = time.monotonic()
        idle = queue_empty and now - self._notified >= IDLE_SECONDS
        return self._changes >= SNAPSHOT_EVERY or (idle and now - self._last_snapshot >= SNAPSHOT_SECONDS)

    def _snapshot(self, store: Store) -> None:
        save_snapshot(store, self.core)
        self._changes = 0
        self._last_snapshot = time.monotonic()
