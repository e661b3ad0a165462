"""What makes indexing fast, checked for correctness: files indexed in groups (`engine.index_files`, the mount's
indexer thread) share model batches and commit as their chunks are embedded, with the result indexing them one
at a time gives; the chunker counts a span once; the model's thread count follows the load of other processes.

Uses the model-free hashing-384 embedder wrapped to record its batches, on stores opened in-process; the
indexer thread runs against its own connection as in a mount.  No timings are asserted (bench/search.py
measures them); waits only bound how long a failure takes to show.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from helpers import new_store
from waiting import wait_for

from clawfs.index import chunker, embedder, engine, pipeline
from clawfs.index.embedder import HASHING_NAME, EmbedderUnavailable, HashingEmbedder, Vectors
from clawfs.index.engine import IndexCore
from clawfs.index.indexer import GROUP_FILES, Indexer
from clawfs.keys import Credentials
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

PW = b"groups passphrase"
CTX = Ctx(uid=0, gid=0)
WORDS = ["harbour", "lantern", "orchard", "glacier", "violin", "compass", "meadow", "thunder", "saffron", "granite",
         "ferry", "beacon", "quartz", "willow", "falcon", "ember", "canyon", "velvet", "marble", "cobalt"]


class RecordingEmbedder(HashingEmbedder):
    """hashing-384, remembering every batch it was asked to embed."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        return super().embed(texts)


def paragraph(i: int, words: int = 40) -> str:
    """A distinct paragraph (one chunk): word i's rotation of WORDS, numbered."""
    return " ".join(f"{WORDS[(i + k) % len(WORDS)]}{i if k == 0 else ''}" for k in range(words)) + "."


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with new_store(tmp_path / "groups.claw", PW) as s:
        yield s


def core_of(store: Store) -> tuple[IndexCore, RecordingEmbedder]:
    core = IndexCore.load(store, HASHING_NAME)
    core.embedder = recorder = RecordingEmbedder()
    return core, recorder


def write(vfs: VFS, name: str, text: str) -> int:
    """Create or overwrite ROOT/name; the release queues it."""
    ino = vfs.store.lookup(ROOT, name.encode())
    if ino is None:
        fh, attr = vfs.create(ROOT, name.encode(), 0o644, os.O_WRONLY, CTX)
        ino = attr.ino
    else:
        vfs.setattr(ino, size=0)
        fh = vfs.open(ino, os.O_WRONLY)
    vfs.write(fh, 0, text.encode())
    vfs.release(fh)
    return ino


def drain(store: Store, core: IndexCore, max_chunks: int = engine.GROUP_CHUNKS) -> list[int]:
    """Index the whole queue the indexer's way; the size of each group."""
    tables, groups = store.index, []
    while batch := tables.queued(time.time_ns(), GROUP_FILES):
        groups.append(len(engine.index_files(store, core, batch, max_chunks=max_chunks)))
    return groups


def state(store: Store) -> tuple[dict[int, list[tuple[int, int]]], list[int]]:
    """Each indexed file's chunks (start, end) in their order, and the sorted reference counts of the stored
    vectors; checks that every chunk's vector exists and every count matches the chunks that use it."""
    tables = store.index
    chunks: dict[int, list[tuple[int, int]]] = {}
    vector_ids = tables.vector_ids()
    orphans = []
    for ino in sorted({ino for ino, _ in tables.all_chunks()}):
        for chunk_id, vector_id in tables.chunks_of(ino):  # in the order of their seq
            row = tables.chunk(chunk_id)
            assert row is not None and row[0] == ino, (chunk_id, row)
            chunks.setdefault(ino, []).append((row[1], row[2]))
            if vector_id not in vector_ids:
                orphans.append(chunk_id)
    refs = {v: (tables.vector_refs(v), len(tables.chunks_with_vector(v))) for v in vector_ids}
    bad = [(v, n, used) for v, (n, used) in refs.items() if n != used]
    assert not bad and not orphans, (bad, orphans)
    return chunks, sorted(n for n, _ in refs.values())


def test_small_files_share_model_batches_and_index_as_one_at_a_time(tmp_path: Path, store: Store) -> None:
    vfs = VFS(store)
    texts = {f"note{i:02d}.md": paragraph(i) + "\n" for i in range(40)}
    texts["copy.md"] = texts["note00.md"]  # a copy shares its vector
    for name, text in texts.items():
        write(vfs, name, text)
    core, recorder = core_of(store)
    assert drain(store, core) == [41]
    embedded = [t for b in recorder.batches for t in b]
    assert len(embedded) == len(set(embedded)) == 40, "each paragraph embedded once, the copy not at all"
    assert sorted(len(b) for b in recorder.batches) == [8, 16, 16], "full model batches across the files"
    grouped = state(store)

    other_path = tmp_path / "one-by-one.claw"
    Store.create(str(other_path), [("passphrase", PW)], block_size=4096, kdf="scrypt")
    other = Store.open(str(other_path), Credentials(passphrases=[PW]))
    try:
        other_vfs = VFS(other)
        inos = [write(other_vfs, name, text) for name, text in texts.items()]
        other_core, one_recorder = core_of(other)
        for ino in inos:
            engine.index_file(other, other_core, ino)
        assert len(one_recorder.batches) == 40
        assert state(other) == grouped
        assert len(other_core.vectors) == len(core.vectors) == 40
    finally:
        other.close()
    assert store.index.counts()["pending"] == 0


def test_a_vector_one_file_drops_and_another_takes_up_in_the_same_group(store: Store) -> None:
    vfs = VFS(store)
    shared, a_only = paragraph(1), paragraph(2)
    a = write(vfs, "a.md", shared + "\n")
    core, recorder = core_of(store)
    drain(store, core)
    write(vfs, "a.md", a_only + "\n")  # a lets go of `shared` ...
    b = write(vfs, "b.md", shared + "\n")  # ... which b now holds: same group, a first
    recorder.batches.clear()
    tables = store.index
    assert [i for i, _ in tables.queued(time.time_ns(), GROUP_FILES)] == [a, b]
    assert drain(store, core, max_chunks=1000) == [2]
    assert recorder.batches == [[a_only]], "only the new paragraph is embedded: shared kept its stored vector"
    chunks, refs = state(store)
    assert len(chunks[a]) == len(chunks[b]) == 1
    assert refs == [1] * len(refs) and len(core.vectors) == len(refs)


def test_a_group_stops_at_its_chunk_budget_and_the_rest_stays_queued(store: Store) -> None:
    vfs = VFS(store)
    for i in range(6):
        write(vfs, f"n{i}.md", paragraph(10 + i) + "\n")
    core, _ = core_of(store)
    tables = store.index
    batch = tables.queued(time.time_ns(), GROUP_FILES)
    assert len(engine.index_files(store, core, batch, max_chunks=2)) == 2
    assert tables.counts()["pending"] == 4
    assert drain(store, core, max_chunks=2) == [2, 2]


def test_files_commit_as_their_batches_finish_and_an_interruption_keeps_them(store: Store) -> None:
    vfs = VFS(store)
    for i in range(40):
        write(vfs, f"n{i:02d}.md", paragraph(20 + i) + "\n")
    core, recorder = core_of(store)
    tables = store.index
    with pytest.raises(engine.Interrupted):
        engine.index_files(store, core, tables.queued(time.time_ns(), GROUP_FILES), stop=lambda: True)
    assert tables.counts() == {"files": 0, "chunks": 0, "vectors": 0, "pending": 40}
    with pytest.raises(engine.Interrupted):  # stops before the second batch: the first one's files are in
        engine.index_files(store, core, tables.queued(time.time_ns(), GROUP_FILES),
                           stop=lambda: len(recorder.batches) >= 1)
    assert tables.counts() == {"files": 16, "chunks": 16, "vectors": 16, "pending": 24}
    assert len(core.vectors) == 16
    assert drain(store, core) == [24]
    state(store)


# -- the indexer thread -----------------------------------------------------------------------------------------
WAIT = 60.0  # only bounds how long a failure takes to show


def test_indexer_thread_sees_late_commits_and_skips_only_the_bad_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "thread.claw"
    Store.create(str(path), [("passphrase", PW)], block_size=4096, kdf="scrypt")
    store = Store.open(str(path), Credentials(passphrases=[PW]))
    indexer: Indexer | None = None
    try:
        core = IndexCore.open(store, HASHING_NAME)
        indexer = Indexer(str(path), Store.unlock_master(str(path), Credentials(passphrases=[PW])), core)
        vfs = VFS(store, on_change=indexer.notify)
        store.batch_commits()  # as a mount: the notify comes before the change is committed
        indexer.start()
        real = pipeline._read_and_chunk
        bad = write(vfs, "bad.md", paragraph(30) + "\n")

        def failing(s: Store, c: IndexCore, ino: int, queued_ns: int | None) -> pipeline._Pending:
            if ino == bad:
                raise OSError("simulated unreadable block")
            return real(s, c, ino, queued_ns)

        monkeypatch.setattr(pipeline, "_read_and_chunk", failing)
        # Each pass of the indexer ends by choosing how long to wait: record whether a notify was still
        # unanswered then (its wake flag set), to know when it has looked at the queue after the last one.
        answered: list[bool] = []
        next_wait = indexer._next_wait

        def recording_next_wait(oldest_ns: int | None, stalled: bool) -> float:
            answered.append(not indexer._wake.is_set())
            return next_wait(oldest_ns, stalled)

        monkeypatch.setattr(indexer, "_next_wait", recording_next_wait)
        for i in range(5):
            write(vfs, f"ok{i}.md", paragraph(31 + i) + "\n")
        seen = len(answered)
        # The indexer looks at the queue while these writes are not committed yet: it must still see them
        # when this commit lands.
        wait_for(lambda: any(answered[seen:]), timeout=WAIT, what="the indexer to look at the queue after the writes")
        vfs.commit_pending()
        tables = store.index
        wait_for(lambda: tables.counts()["pending"] == 0, timeout=WAIT, what="the queue to drain")
        counts = tables.counts()
        assert counts["files"] == 5 and counts["chunks"] == 5, counts
        assert indexer.errors == 1
    finally:
        if indexer is not None:
            indexer.stop()
        store.close()
    check = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        assert check.index.meta("snapshot") is not None, "snapshot saved at stop"
        assert len(IndexCore.load(check).vectors) == 5
        assert np.isfinite(IndexCore.load(check).vectors.search(HashingEmbedder().embed(["x"])[0], 1)[0][1])
    finally:
        check.close()


@pytest.mark.parametrize("step", ["load", "warm_up"])  # load runs in a thread beside the vectors' loading
def test_a_model_that_cannot_load_leaves_the_queue_for_the_next_mount(tmp_path: Path, step: str) -> None:
    path = tmp_path / "nomodel.claw"
    Store.create(str(path), [("passphrase", PW)], block_size=4096, kdf="scrypt")
    store = Store.open(str(path), Credentials(passphrases=[PW]))
    try:
        core = IndexCore.open(store, HASHING_NAME)
        broken = RecordingEmbedder()

        def refuse() -> None:
            raise EmbedderUnavailable("model file altered")

        setattr(broken, step, refuse)
        core.embedder = broken
        indexer = Indexer(str(path), Store.unlock_master(str(path), Credentials(passphrases=[PW])), core)
        vfs = VFS(store, on_change=indexer.notify)
        for i in range(3):
            write(vfs, f"n{i}.md", paragraph(50 + i) + "\n")
        indexer.start()
        wait_for(lambda: not indexer._thread.is_alive(), timeout=WAIT, what="the indexer to give up")
        indexer.stop()
        assert store.index.counts()["pending"] == 3 and indexer.errors == 0
        assert not broken.batches
    finally:
        store.close()


def test_a_short_text_is_tokenised_once_by_the_chunker() -> None:
    spans: list[str] = []

    def count(text: str) -> int:
        spans.append(text)
        return len(text.split())

    text = paragraph(60)
    pieces = chunker.chunk_text(text, max_tokens=240, overlap_tokens=32, count_tokens=count)
    assert [p.text for p in pieces] == [text]
    assert spans == [text], "calibration and verification of the same span share one count"


def test_torch_threads_leave_the_cores_other_processes_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for others, threads in ((0.0, 2), (0.5, 2), (0.8, 1), (1.0, 1), (2.0, 1)):
        monkeypatch.setattr(embedder._OTHERS, "cores", lambda others=others: others)
        assert embedder.torch_threads() == threads, others


def _busy_seconds() -> float:
    """The machine's busy CPU seconds since boot, read here independently of the code under test."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _look() -> tuple[float, float, float]:
    """(monotonic time, machine busy seconds, this process's CPU seconds)."""
    t = os.times()
    return time.monotonic(), _busy_seconds(), t.user + t.system


def _spin(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_other_load_sees_another_busy_process() -> None:
    """The real /proc/stat reading: a child spinning for a CPU-second shows up as (most of) a core taken, and
    this process spinning meanwhile does not.  Other processes on a shared machine alone could make that first
    figure, so the reading is also held, in CPU-seconds, between what /proc/stat and os.times() give over the
    same interval read from just outside and just inside its two looks: at least the machine's busy time less
    all of this process's (so the child's second is in it, whatever else runs), at most the machine's busy
    time less this process's (so none of ours is).  Unrelated load moves both bounds alike."""
    load = type(embedder._OTHERS)()
    outer = _look()
    load.cores()  # the first look only sets the baseline
    inner = _look()
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 1.0: pass"])
    try:
        _spin(0.5)
    finally:
        child.wait()  # reaped before the second look: a child's time must not pass for this process's own
    inner_end = _look()
    cores = load.cores()
    outer_end = _look()
    assert cores >= 0.5, "a busy child process was not counted as load"
    tick = 2.0 / os.sysconf("SC_CLK_TCK")  # /proc/stat and os.times() count whole ticks
    least = (inner_end[1] - inner[1]) - (outer_end[2] - outer[2])
    most = (outer_end[1] - outer[1]) - (inner_end[2] - inner[2])
    assert cores * (outer_end[0] - outer[0]) >= least - tick, (
        f"the child's CPU time is missing: {cores:.3f} cores, the machine's busy time less ours is {least:.3f} s")
    assert cores * (inner_end[0] - inner[0]) <= most + tick, (
        f"this process's own CPU time was counted: {cores:.3f} cores, at most {most:.3f} s are others'")
