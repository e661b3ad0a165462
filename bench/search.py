#!/usr/bin/env python3
"""Semantic-index benchmark: search latency and mount time at 100k chunks, index freshness, indexing throughput.

One run, one machine, four measurements against the targets of issue 4:

1. **Search latency at ~100k chunks** (target p50 <= 25 ms, end to end, query embedding included).
   Embedding 100k chunks through MiniLM would take about 20 minutes on two cores, so the store is built with
   synthetic but realistic vectors: a few thousand real paragraphs of /usr/share/doc and the man pages are
   embedded with the real model, and every chunk gets a noisy mixture of up to three of those embeddings (so
   the vectors cluster as real ones do).  Everything else is real: a few thousand files made of consecutive
   real paragraphs (2-64 KiB, Markdown headings) are written through `VFS`, and `engine.index_file` indexes
   them with a stand-in embedder (MiniLM's name, dimension and tokenizer; synthetic vectors), so chunking,
   digests, deduplication, encrypted vectors and blind FTS5 tokens are exactly what the indexer writes.
   The HNSW graph is then rebuilt from the stored vectors (`IndexCore.load`, timed) and snapshotted
   (`engine.save_snapshot`, timed).  `engine.search(store, core, query, k=10)` is timed over ~200 paraphrase
   queries (hand-written questions plus man-page one-line descriptions), with the query embedding, the
   vector search, the BM25 side and the rest (fusion, paths, snippets) also timed apart; a cProfile of the
   searches is kept.
2. **Mount time with those chunks** (target <= 1 s): wall time of `clawfs mount STORE MNT -o passphrase_file=F`
   until it returns (it returns once the mount is live), warm and after dropping the page cache, and the same
   with a keyfile (no Argon2id); `IndexCore.load` alone, with a breakdown; `clawfs --version` (interpreter and
   import cost); and searches through the live mount's `.clawfs/search/` (the first one loads the model).
3. **Index freshness** (target p95 <= 2 s): on an idle mount of a fresh store (model already loaded by a first
   file), files of 1-63 KiB holding a unique word are written and closed one at a time.  Searchable time: from
   close to the daemon's own stamp of the moment the file's vectors reached the in-memory index
   (`last_indexed_ns` in `.clawfs/status`), confirmed by a `.clawfs/search/<word>/` that lists the file.  The
   status is polled only every 100 ms (`FRESH_POLL`): polling every 5 ms, as this bench first did, itself slowed
   the indexer by 15-25% (each poll preempts one of the two nice-10 torch threads, and the other waits for it).
   The polled time (close to "pending 0" as seen by the poller) is reported too, and, once the mount is gone,
   the time the model alone takes to embed each file's chunks in this process: the floor no indexer using this
   model on this machine can go under (large files are bound by it).
4. **Indexing throughput** (target >= 0.9x raw): `SentenceTransformer.encode(paragraphs, batch_size=64)` against
   the indexer's own loop (`engine.index_files` over the queue) over files holding the same paragraphs, written
   through `VFS`: one paragraph per file (exactly the same texts embedded: the target ratio) and "notes" of 8
   paragraphs per file (the chunker merges paragraphs: reported as paragraphs/s and word pieces/s).  Raw is
   also run with ClawFS's batch size and precision (bfloat16 autocast where the CPU has it natively), which
   gives ClawFS's own overhead.  Fresh store per run; rounds interleaved.

Other load matters a lot here: with one core taken by another process, torch's two threads make a query
embedding 10-50x slower.  So each timed section first waits (up to `--wait-idle` seconds) until other processes
use less than 0.15 of a core, and the JSON records the cores they used during each section
(`machine_load`); figures taken on a busy machine say so there.

Output: `OUT/search.json` (machine, configuration, every figure, targets met or not) and a table on the
terminal.  Needs root (page-cache drop, FUSE), the venv with torch, sentence-transformers and the model.

    .venv/bin/python -m bench.search --quick      # ~10k chunks, ~2 minutes
    .venv/bin/python -m bench.search              # ~100k chunks, ~10 minutes
    .venv/bin/python -m bench.search --keep --work-dir W    # and keep the stores, then time one part again:
    .venv/bin/python -m bench.search --only search --big W/search-*/big.claw
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from bench import machine
from clawfs.index import chunker, engine, querying
from clawfs.index.embedder import MINILM_NAME, Embedder, MiniLMEmbedder, get_embedder, torch_threads
from clawfs.index.engine import IndexCore
from clawfs.index.indexer import GROUP_FILES
from clawfs.index.tuning import corpus as tuning_corpus
from clawfs.index.vectors import VectorIndex
from clawfs.keys import Credentials
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx
from kernel import mounts, sysinfo

REPO = Path(__file__).resolve().parent.parent

console = Console(stderr=True)
KIB = 1024
PASSPHRASE = b"search benchmark passphrase"
KEYFILE = b"search-benchmark-keyfile-0123456789abcdef"
CTX = Ctx(uid=0, gid=0)
TARGETS = {"search_p50_ms": 25.0, "mount_s": 1.0, "freshness_p95_s": 2.0, "throughput_ratio": 0.9}
NOISE = 0.5  # norm of the noise added to a synthetic vector (cosine to its clean mixture about 0.9)
CMD_TIMEOUT = 300.0
FRESH_POLL = 0.1  # seconds between status polls while a freshness sample indexes (see the docstring)
Vectors = npt.NDArray[np.float32]


@dataclass
class Sizes:
    chunks: int
    base: int  # real paragraphs embedded as the basis of the synthetic vectors
    queries: int
    fresh: int
    paragraphs: int  # throughput set
    rounds: int
    mounts: int  # warm mounts per key kind


QUICK = Sizes(chunks=10_000, base=256, queries=60, fresh=10, paragraphs=128, rounds=1, mounts=2)
FULL = Sizes(chunks=100_000, base=3000, queries=200, fresh=30, paragraphs=1024, rounds=3, mounts=3)


# -- statistics ----------------------------------------------------------------------------------------------
def stats(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> dict[str, float]:
    """p50, p95, mean, min and max of `values` times `scale` (linear-interpolated percentiles)."""
    a = np.asarray(values, dtype=np.float64) * scale
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), digits),
            "p95": round(float(np.percentile(a, 95)), digits), "mean": round(float(a.mean()), digits),
            "min": round(float(a.min()), digits), "max": round(float(a.max()), digits)}


@contextlib.contextmanager
def timer(into: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - t0, 4)


# -- other load on the machine ---------------------------------------------------------------------------------
def foreign_cores(interval: float = 1.0) -> float:
    """Cores kept busy by other processes (not this one nor its waited children) over `interval` seconds."""
    return round(sysinfo.other_cores_over(interval, children=True), 2)


def wait_idle(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to `max_wait` s) until other processes use less than `threshold` of a core; their load then."""
    start, load, said = time.monotonic(), foreign_cores(), -60.0
    while load >= threshold and time.monotonic() - start < max_wait:
        if time.monotonic() - said >= 60:
            console.log(f"[yellow]the machine is busy ({load} cores used by other processes); waiting up to "
                        f"{max_wait - (time.monotonic() - start):.0f} s for it to go quiet")
            said = time.monotonic()
        time.sleep(2.0)
        load = foreign_cores()
    return load


@contextlib.contextmanager
def load_during(into: dict[str, Any]) -> Iterator[None]:
    """Record the cores used by processes other than this one (and its waited children) during the block.
    ClawFS mount daemons count as "other" here: they are not children of the benchmark once detached."""
    before = sysinfo.sample_cpu(children=True)
    into["loadavg_before"] = sysinfo.load_average()
    yield
    after = sysinfo.sample_cpu(children=True)
    into["wall_s"] = round(after.at - before.at, 1)
    into["loadavg_after"] = sysinfo.load_average()
    into["other_processes_cores"] = round(sysinfo.other_cores(before, after), 2)


# -- corpus: real paragraphs from /usr/share/doc and the man pages -------------------------------------------
# One copy of the extraction for the tuner and this bench: clawfs.index.tuning.corpus (files, troff, filters).
@dataclass
class Corpus:
    """Real paragraphs in source order, each with the name of its source file."""

    paras: list[tuple[str, str]] = field(default_factory=list)
    chars: int = 0

    def texts(self) -> list[str]:
        return [p for _, p in self.paras]


def load_corpus(chars: int, rng: random.Random) -> Corpus:
    """At least `chars` characters of distinct long prose paragraphs (or all there are), files in random order."""
    corpus, seen = Corpus(), set()
    files = tuning_corpus.corpus_files()
    rng.shuffle(files)
    for path in files:
        name = path.name.removesuffix(".gz")
        for p in tuning_corpus.paragraphs_of(path):
            key = " ".join(p.split()).lower()
            if tuning_corpus.good_paragraph(p, tuning_corpus.LONG_PROSE) and key not in seen:
                seen.add(key)
                corpus.paras.append((name, p))
                corpus.chars += len(p)
        if corpus.chars >= chars:
            break
    return corpus


# -- queries ---------------------------------------------------------------------------------------------------
HANDWRITTEN = """\
how do I see which programs are using the most memory
make a compressed archive of a whole folder
find out which process is listening on a network port
change who owns a file
let a user run commands as the administrator
schedule a job to run every night
show the differences between two text files
search inside files for a word
count the lines in a file
download a file from a web server
copy files to another computer securely
check how much free space is left on the disk
mount a USB stick
format a partition with a new filesystem
list what is inside a tar archive without unpacking it
set the system clock from the network
see the kernel messages from boot
restart a background service
make a program start automatically at boot
show the routing table
configure a static IP address
turn a host name into an address
generate a new ssh key pair
encrypt a file with a password
verify the signature of a downloaded package
install a package from a local file
remove a package together with its configuration
upgrade all installed software
which package does this file belong to
rename many files at once
follow a log file as it grows
sort lines and drop duplicates
replace text in a file without opening an editor
split a large file into pieces
join the lines of two files on a common field
show the first few lines of a file
compare two directory trees
create a symbolic link
make a file readable only by its owner
set the default permissions of new files
add a new user account
lock a user's password
change the login shell
see who is logged in right now
how long has the machine been running
limit the CPU time a process may use
stop a process that does not respond
run a command with lower priority
trace the system calls a program makes
debug a program that crashes
print the environment variables
set a variable for just one command
send error messages to a file
keep a command running after I log out
create a temporary file safely
measure how long a command takes
convert the character encoding of a text file
convert line endings from windows format
look at a binary file in hexadecimal
compute a checksum of a file
keep two directories in sync over the network
back up a database
restore files from a backup
check a filesystem for errors
make a partition bigger
set up a software RAID array
create a logical volume
add swap space
load a kernel module
list the hardware devices on the PCI bus
show information about the processor
change the keyboard layout
change the language of the system
set the time zone
print a document
block incoming connections with a firewall
forward a port through ssh
set up a VPN connection
capture network packets for analysis
is a remote host reachable
send an email from the command line
read mail in the terminal
compile a program from source
link against a shared library
where is a library loaded from
a shell script that loops over files
exit status of the last command
parse command line options in a script
syntax of regular expressions for matching patterns
expand wildcards in file names
edit text in a terminal
several terminal sessions in one window
copy text to the clipboard
run a graphical program on a remote machine
may I redistribute this software and under which terms
who wrote this program and where do I report bugs
what changed in the latest release
fix for a security vulnerability
format of the configuration file and its comments
where are the configuration files kept
turn on verbose output to troubleshoot
allocate memory in C
open a file and read it in C
handle signals in a program
start a new thread
talk between processes through a pipe
lock a file against concurrent access
"""


def whatis_lines(rng: random.Random, limit: int) -> list[str]:
    """One-line descriptions of man pages ("list directory contents"), as further natural-language queries."""
    pages = tuning_corpus.man_pages(["man1"])
    rng.shuffle(pages)
    out: list[str] = []
    for page in pages:
        text = tuning_corpus.read_text(page) or ""
        m = re.search(r"^\.SH\s+\"?NAME\"?\s*\n(?:\.[^\n]*\n)*([^\n]*?)\s\\-\s+([^\n]+)", text, re.MULTILINE)
        desc = tuning_corpus.troff_inline(m.group(2)).strip().rstrip(".") if m else ""
        if 3 <= len(desc.split()) <= 10 and desc.lower() not in out:
            out.append(desc.lower())
        if len(out) >= limit:
            break
    return out


def make_queries(n: int, rng: random.Random) -> list[str]:
    hand = [q for q in HANDWRITTEN.splitlines() if q.strip()]
    queries = (hand + whatis_lines(rng, max(0, n - len(hand))))[:n]
    rng.shuffle(queries)
    return queries


# -- stores and files ------------------------------------------------------------------------------------------
def create_store(path: Path) -> Store:
    Store.create(str(path), [("passphrase", PASSPHRASE), ("keyfile", KEYFILE)])
    return open_store(path)


def open_store(path: Path) -> Store:
    return Store.open(str(path), Credentials(keyfiles=[KEYFILE], tpm=False))


def ensure_dir(vfs: VFS, parent: int, name: str) -> int:
    ino = vfs.store.lookup(parent, name.encode())
    return ino if ino is not None else vfs.mkdir(parent, name.encode(), 0o755, CTX).ino


def write_file(vfs: VFS, parent: int, name: str, text: str) -> int:
    """Create, write and close one file through the VFS (the close queues it for the indexer)."""
    fh, attr = vfs.create(parent, name.encode(), 0o644, os.O_WRONLY, CTX)
    vfs.write(fh, 0, text.encode())
    vfs.release(fh)
    return attr.ino


def index_queued(store: Store, core: IndexCore) -> int:
    """What the mount's indexer does after its debounce: index every queued file, in the indexer's groups
    (`engine.index_files` over the next GROUP_FILES ready files), dequeuing them; chunks made."""
    tables, chunks = store.index, 0
    while batch := tables.queued(time.time_ns(), GROUP_FILES):
        chunks += sum(engine.index_files(store, core, batch))
    return chunks


# -- 4. indexing throughput ------------------------------------------------------------------------------------
def pick_paragraphs(corpus: Corpus, emb: Embedder, n: int, lo: int, hi: int, rng: random.Random) -> list[str]:
    """n distinct paragraphs of lo..hi word pieces (each one chunk for the chunker, uncut by the model)."""
    texts = corpus.texts()
    rng.shuffle(texts)
    return [t for t in texts if lo <= emb.count_tokens(t) <= hi][:n]


def raw_model(emb: MiniLMEmbedder) -> Any:
    """A second SentenceTransformer, loaded as sentence-transformers' own docs say (after ClawFS set threads)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(emb.model_dir()), device="cpu", local_files_only=True)


def time_raw(model: Any, paras: list[str], batch_size: int = 64, bf16: bool = False) -> float:
    """`encode` as sentence-transformers' docs show it (float32, batch 64); or with ClawFS's batch size and
    precision (`bf16`: under bfloat16 autocast, as MiniLMEmbedder runs where the CPU has native bfloat16)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # torch's default (ClawFS sets its own per call)
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.encode(paras, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                     show_progress_bar=False)
    return time.perf_counter() - t0


def time_clawfs(work: Path, files: list[str]) -> tuple[float, int]:
    """Seconds for `engine.index_file` over `files` (written through VFS into a fresh store first), chunks."""
    path = work / f"tp-{time.monotonic_ns()}.claw"
    store = create_store(path)
    try:
        vfs = VFS(store)
        parent = ensure_dir(vfs, ROOT, "notes")
        for i, text in enumerate(files):
            write_file(vfs, parent, f"note-{i:05d}.md", text)
        core = IndexCore.load(store)
        t0 = time.perf_counter()
        chunks = index_queued(store, core)
        return time.perf_counter() - t0, chunks
    finally:
        store.close()
        for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            f.unlink(missing_ok=True)


def word_pieces(emb: Embedder, texts: Sequence[str]) -> int:
    return sum(min(emb.count_tokens(t) + emb.special_tokens, emb.max_tokens) for t in texts)


def notes_of(paras: list[str], per_file: int = 8) -> list[str]:
    return ["\n\n".join(paras[i:i + per_file]) + "\n" for i in range(0, len(paras), per_file)]


def measure_throughput(work: Path, corpus: Corpus, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    emb = get_embedder(MINILM_NAME)
    assert isinstance(emb, MiniLMEmbedder)
    emb.load()
    model = raw_model(emb)
    paras = pick_paragraphs(corpus, emb, sizes.paragraphs, 24, 200, rng)
    same: dict[str, Any] = {"batch_size": emb.batch_size, "bf16": emb.bf16}
    # Warm every path up on the whole set once: the first batch of each shape sets up kernels (a cold pass of
    # 1024 paragraphs ran 20-40% slower), and each side must be timed warm, as a long-running indexer is.
    time_raw(model, paras)
    time_raw(model, paras, **same)
    emb.embed(paras)
    runs: dict[str, list[float]] = {"raw": [], "raw_same_settings": [], "one_per_file": [], "notes": []}
    chunks: dict[str, int] = {}
    layouts = {"one_per_file": [p + "\n" for p in paras], "notes": notes_of(paras)}
    for r in range(sizes.rounds):
        console.log(f"throughput round {r + 1}/{sizes.rounds}: raw (2 settings), then ClawFS (2 layouts), "
                    f"{len(paras)} paragraphs")
        runs["raw"].append(time_raw(model, paras))
        runs["raw_same_settings"].append(time_raw(model, paras, **same))
        for name, files in layouts.items():
            seconds, chunks[name] = time_clawfs(work, files)
            runs[name].append(seconds)
    report = throughput_report(emb, paras, runs, chunks)
    report["raw_same_settings"]["settings"] = same
    return report


def throughput_report(emb: Embedder, paras: list[str], runs: dict[str, list[float]],
                      chunks: dict[str, int]) -> dict[str, Any]:
    n, pieces = len(paras), word_pieces(emb, paras)
    best = {k: min(v) for k, v in runs.items()}  # best of the rounds: the least disturbed run of each
    out: dict[str, Any] = {"paragraphs": n, "word_pieces": pieces, "rounds": len(runs["raw"])}
    for name in ("raw", "raw_same_settings"):
        out[name] = {"seconds": [round(s, 3) for s in runs[name]], "paragraphs_per_s": round(n / best[name], 1),
                     "word_pieces_per_s": round(pieces / best[name])}
    for name in ("one_per_file", "notes"):
        s = best[name]
        out[name] = {"seconds": [round(x, 3) for x in runs[name]], "chunks": chunks[name],
                     "chunks_per_s": round(chunks[name] / s, 1), "paragraphs_per_s": round(n / s, 1),
                     "ratio_paragraphs": round(best["raw"] / s, 3),
                     "ratio_paragraphs_same_settings": round(best["raw_same_settings"] / s, 3)}
    out["ratio"] = out["one_per_file"]["ratio_paragraphs"]  # against sentence-transformers as its docs run it
    out["ratio_same_settings"] = out["one_per_file"]["ratio_paragraphs_same_settings"]  # ClawFS's own overhead
    return out


# -- 1. the store with ~100k chunks ------------------------------------------------------------------------------
class StandInEmbedder(Embedder):
    """MiniLM's name, dimension and tokenizer, with synthetic vectors: each a noisy mixture of up to three real
    MiniLM embeddings of real paragraphs (`base`), so the vectors have the structure real ones have."""

    name = MINILM_NAME
    dim = 384
    max_tokens = 256
    special_tokens = 2

    def __init__(self, real: Embedder, base: Vectors, seed: int) -> None:
        self.real, self.base = real, base
        self.rng = np.random.default_rng(seed)

    def embed(self, texts: Sequence[str]) -> Vectors:
        n = len(texts)
        parents = self.base[self.rng.integers(0, len(self.base), size=(n, 3))]
        weights = self.rng.dirichlet(np.full(3, 0.5), size=n)
        mix = np.einsum("nk,nkd->nd", weights, parents)
        mix /= np.linalg.norm(mix, axis=1, keepdims=True)
        noise = self.rng.standard_normal((n, self.dim)) * (NOISE / np.sqrt(self.dim))
        v = mix + noise
        out: Vectors = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        return out

    def count_tokens(self, text: str) -> int:
        return self.real.count_tokens(text)


def paragraph_stream(corpus: Corpus, rng: random.Random) -> Iterator[tuple[str, str]]:
    """The corpus's (source, paragraph)s in order, then again and again in new random orders: repeated
    paragraphs then sit among other neighbours, so that chunks of the later passes are new texts, not copies."""
    order = list(range(len(corpus.paras)))
    while True:
        for i in order:
            yield corpus.paras[i]
        rng.shuffle(order)


def file_texts(corpus: Corpus, rng: random.Random) -> Iterator[tuple[str, str]]:
    """(name, text) of endless "real" files: a heading, then consecutive paragraphs of the corpus up to a size
    drawn log-uniformly from 2-64 KiB."""
    stream = paragraph_stream(corpus, rng)
    source, para = next(stream)
    for i in range(1 << 40):
        target = int(np.exp(rng.uniform(np.log(2 * KIB), np.log(64 * KIB))))
        parts = [f"# {source}\n"]
        size = len(parts[0])
        while size < target and size + len(para) < 64 * KIB - 64:
            parts.append(para + "\n")
            size += len(para) + 2
            source, para = next(stream)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", parts[0][2:].strip())[:60]
        yield f"{slug}-{i:05d}.md", "\n".join(parts)


def populate(store: Store, core: IndexCore, corpus: Corpus, target: int, rng: random.Random) -> dict[str, int]:
    """Write files through the VFS and index each (stand-in embedder) until `target` chunks exist."""
    vfs = VFS(store)
    home = ensure_dir(vfs, ensure_dir(vfs, ROOT, "home"), "notes")
    chunks = nbytes = 0
    parent = home
    for files, (name, text) in enumerate(file_texts(corpus, rng), 1):
        if files % 50 == 1:
            parent = ensure_dir(vfs, home, f"d{files // 50:04d}")
        write_file(vfs, parent, name, text)
        chunks += index_queued(store, core)
        nbytes += len(text.encode())
        if files % 500 == 0:
            console.log(f"  {files} files, {chunks} chunks, {nbytes / 1e6:.0f} MB")
        if chunks >= target:
            return {"files": files, "chunks": chunks, "text_bytes": nbytes}
    raise AssertionError("unreachable")


def embed_base(corpus: Corpus, n: int, rng: random.Random) -> Vectors:
    """Real MiniLM embeddings of n real paragraphs (the basis of the synthetic vectors)."""
    emb = get_embedder(MINILM_NAME)
    paras = pick_paragraphs(corpus, emb, n, 16, 254, rng)
    console.log(f"embedding {len(paras)} real paragraphs with MiniLM (basis of the synthetic vectors)")
    return emb.embed(paras)


def build_big_store(path: Path, corpus: Corpus, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """The ~100k-chunk store; returns build figures.  The store is left closed, with a snapshot."""
    out: dict[str, Any] = {}
    with timer(out, "embed_base_s"):
        base = embed_base(corpus, sizes.base, rng)
    store = create_store(path)
    try:
        core = IndexCore.load(store)  # records the embedder (all-MiniLM-L6-v2, 384) in the store
        core.embedder = StandInEmbedder(core.embedder, base, seed=7)
        console.log(f"writing real files and indexing them (synthetic vectors) up to {sizes.chunks} chunks")
        with timer(out, "populate_s"):  # includes growing the in-memory HNSW graph file by file
            out.update(populate(store, core, corpus, sizes.chunks, rng))
    finally:
        store.close()
    out.update(snapshot_store(path))
    out["store_bytes"] = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return out


def snapshot_store(path: Path) -> dict[str, Any]:
    """Reopen: no snapshot yet, so `IndexCore.load` rebuilds HNSW from the stored vectors (as after a lost
    snapshot; the graph grown while populating is dropped); then snapshot."""
    out: dict[str, Any] = {}
    store = open_store(path)
    try:
        console.log("IndexCore.load without a snapshot (HNSW rebuilt from the stored, encrypted vectors)")
        with timer(out, "rebuild_s"):
            core = IndexCore.load(store)
        with timer(out, "save_snapshot_s"):
            engine.save_snapshot(store, core)
        out["snapshot_bytes"] = len(store.index.meta("snapshot"))
        out["vectors"], out["search_mode"] = len(core.vectors), core.vectors.mode
    finally:
        store.close()
    return out


# -- 1. search latency -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def text_side_inline() -> Iterator[None]:
    """engine.search as it was before its text side ran beside the query's embedding: BM25 (and a path's walk)
    first, then the embedding on every idle core, one after the other (the side-by-side comparison)."""
    class Inline:
        def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            done.set_result(fn(*args))
            return done

    names = vars(querying)  # the module's globals, as engine.search reads them
    real = {"_TEXT_SIDE": names["_TEXT_SIDE"], "torch_threads": names["torch_threads"]}
    names.update(_TEXT_SIDE=Inline(), torch_threads=lambda: real["torch_threads"]() + 1)
    try:
        yield
    finally:
        names.update(real)


def time_parts(store: Store, core: IndexCore, query: str, serial_first: bool) -> dict[str, float]:
    """One search end to end, and again as it was run before (`text_side_inline`; which of the two goes first
    alternates from query to query: the second finds the FTS pages warm), then its parts one by one (ms).  The
    search embeds the query on one torch thread fewer while BM25 runs beside it, so `rest` is the total less
    the longer of those two and the vector search (negative where running side by side slowed both)."""
    tables = store.index
    ms: dict[str, float] = {}
    for serial in (serial_first, not serial_first):
        with text_side_inline() if serial else contextlib.nullcontext():
            t0 = time.perf_counter()
            result = engine.search(store, core, query, k=10)
            ms["serial" if serial else "total"] = (time.perf_counter() - t0) * 1000
        if not serial:
            ms["hits"] = len(result.hits)
    t1 = time.perf_counter()
    q = core.embedder.embed_query(query, threads=max(1, torch_threads() - 1))
    t2 = time.perf_counter()
    core.vectors.search(q.vector, min(engine.CANDIDATES, len(core.vectors)))
    t3 = time.perf_counter()
    match = core.blinder.query(query)
    text_hits = tables.bm25(match, engine.CANDIDATES) if match else []
    t4 = time.perf_counter()
    ms.update({"query_embedding": (t2 - t1) * 1000, "vector": (t3 - t2) * 1000, "bm25": (t4 - t3) * 1000})
    ms["rest"] = ms["total"] - max(ms["query_embedding"], ms["bm25"]) - ms["vector"]
    ms["bm25_hits"] = len(text_hits)
    return ms


def profile_searches(store: Store, core: IndexCore, queries: list[str], top: int = 12) -> list[dict[str, Any]]:
    prof = cProfile.Profile()
    prof.enable()
    for q in queries:
        engine.search(store, core, q, k=10)
    prof.disable()
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, fn), (_, calls, tottime, cumtime, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}:{fn}", "calls": calls,
                     "tottime_ms_per_search": round(tottime * 1000 / len(queries), 3),
                     "cumtime_ms_per_search": round(cumtime * 1000 / len(queries), 3)})
    return sorted(rows, key=lambda r: -r["tottime_ms_per_search"])[:top]


def measure_search(path: Path, queries: list[str]) -> dict[str, Any]:
    store = open_store(path)
    try:
        core = IndexCore.load(store)
        core.embedder.load()
        for q in queries[:10]:  # warm-up: model, page cache, FTS pages
            engine.search(store, core, q, k=10)
        console.log(f"timing engine.search over {len(queries)} queries ({len(core.vectors)} vectors, "
                    f"{core.vectors.mode})")
        samples = [time_parts(store, core, q, serial_first=bool(i % 2)) for i, q in enumerate(queries)]
        parts = ("total", "serial", "query_embedding", "vector", "bm25", "rest")
        out: dict[str, Any] = {f"{p}_ms": stats([s[p] for s in samples]) for p in parts}
        out["hits_mean"] = round(float(np.mean([s["hits"] for s in samples])), 2)
        out["bm25_candidates_mean"] = round(float(np.mean([s["bm25_hits"] for s in samples])), 2)
        out["vectors"], out["mode"], out["settings"] = len(core.vectors), core.vectors.mode, core.settings
        out["chunks"] = store.index.counts()["chunks"]
        out["query_embedding_by_torch_threads_ms"] = {n: embed_timing(core.embedder, queries, n) for n in (2, 1)}
        out["profile_top_tottime"] = profile_searches(store, core, queries[: min(50, len(queries))])
        out["example"] = example_hits(store, core, queries[0])
        out["confined"] = confined_searches(store, core, queries)
    finally:
        store.close()
    return out


def confined_searches(store: Store, core: IndexCore, queries: list[str]) -> dict[str, Any]:
    """`--path` to one directory of 50 files (~2% of the store): the cost of ranking that directory's own
    chunks (engine._scope), and how often it finds 10 files."""
    prefix = b"home/notes/d0007"
    ms, hits = [], []
    for q in queries:
        t0 = time.perf_counter()
        found = engine.search(store, core, q, k=10, path_prefix=prefix).hits
        ms.append((time.perf_counter() - t0) * 1000)
        hits.append(len(found))
        assert all(h.path.startswith(prefix + b"/") for h in found), "a hit outside the prefix"
    return {"prefix": prefix.decode(), "total_ms": stats(ms), "hits_mean": round(float(np.mean(hits)), 2),
            "full_share": round(sum(n == 10 for n in hits) / len(hits), 3)}


def embed_timing(emb: Embedder, queries: list[str], threads: int) -> dict[str, float]:
    """Query embedding with `threads` torch threads (ClawFS picks one per core not kept busy by other
    processes), then the setting restored."""
    assert isinstance(emb, MiniLMEmbedder)
    emb.threads = threads
    try:
        times = []
        for q in queries:
            t0 = time.perf_counter()
            emb.embed_query(q)
            times.append(time.perf_counter() - t0)
    finally:
        emb.threads = None
    return stats(times, 1000)


def example_hits(store: Store, core: IndexCore, query: str) -> dict[str, Any]:
    hits = engine.search(store, core, query, k=3).hits
    return {"query": query, "hits": [{"path": h.path.decode(errors="replace"), "score": round(h.score, 5),
                                      "similarity": h.similarity and round(h.similarity, 3),
                                      "snippet": h.snippet[:100]} for h in hits]}


# -- 2. mount time -------------------------------------------------------------------------------------------------
def clawfs_cmd() -> str:
    local = Path(sys.prefix) / "bin" / "clawfs"
    return str(local) if local.exists() else shutil.which("clawfs") or "clawfs"


def run(cmd: list[str], timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def is_mounted(mnt: Path) -> bool:
    return mounts.is_mountpoint(str(mnt))


@contextlib.contextmanager
def mounted(store: Path, mnt: Path, opts: str, log: Path, times: list[float] | None = None) -> Iterator[Path]:
    """`clawfs mount` (its wall time appended to `times`), and always `clawfs umount` after."""
    mnt.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    try:
        run([clawfs_cmd(), "mount", str(store), str(mnt), "-o", f"{opts},log_file={log}"])
        if times is not None:
            times.append(time.perf_counter() - t0)
        if not is_mounted(mnt):
            raise RuntimeError(f"clawfs mount returned but {mnt} is not mounted")
        yield mnt
    finally:
        unmount(mnt)


def unmount(mnt: Path) -> None:
    if not is_mounted(mnt):
        return
    try:
        run([clawfs_cmd(), "umount", str(mnt)])
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        console.log(f"[red]clawfs umount {mnt} failed ({e}); lazy unmount")
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def time_cli_startup() -> float:
    t0 = time.perf_counter()
    run([clawfs_cmd(), "--version"])
    return time.perf_counter() - t0


def measure_mounts(work: Path, store: Path, sizes: Sizes, queries: list[str]) -> dict[str, Any]:
    keys = {"passphrase": work / "passphrase", "keyfile": work / "keyfile"}
    keys["passphrase"].write_bytes(PASSPHRASE + b"\n")
    keys["keyfile"].write_bytes(KEYFILE)
    out: dict[str, Any] = {"cli_startup_s": round(min(time_cli_startup() for _ in range(3)), 3)}
    for kind, key in keys.items():
        opts = f"{'passphrase_file' if kind == 'passphrase' else 'keyfile'}={key}"
        out[kind] = mount_series(work, store, opts, sizes.mounts, queries if kind == "passphrase" else None, out)
        console.log(f"clawfs mount ({kind}): cold {out[kind]['cold_s']} s, warm {out[kind]['warm_s']} s; "
                    f"index loaded {out[kind]['index_loaded_after_s']} s after it returned")
    out["index_load"] = time_index_load(store)
    return out


def mount_series(work: Path, store: Path, opts: str, n: int, queries: list[str] | None,
                 out: dict[str, Any]) -> dict[str, Any]:
    """One cold mount (page cache dropped, root only) and n warm ones.  After each, how long until
    `.clawfs/status` says the vectors are loaded -- except after the first warm one when `queries` are given:
    there the searches through the mount start at once (`out["search_via_mount"]`)."""
    mnt, log = work / "mnt-big", work / "mount-big.log"
    cold: list[float] = []
    warm: list[float] = []
    loaded: list[float | None] = []
    if os.geteuid() == 0:
        sysinfo.drop_caches()
        with mounted(store, mnt, opts, log, cold) as m:
            loaded.append(wait_loaded(m))
    for i in range(n):
        with mounted(store, mnt, opts, log, warm) as m:
            if queries and i == 0:
                out["search_via_mount"] = search_via_mount(m, queries[:20])
            else:
                loaded.append(wait_loaded(m))
    return {"cold_s": [round(t, 3) for t in cold], "warm_s": [round(t, 3) for t in warm],
            "warm_median_s": round(float(np.median(warm)), 3),
            "index_loaded_after_s": [None if t is None else round(t, 3) for t in loaded]}


def wait_loaded(mnt: Path, timeout: float = 120.0) -> float | None:
    """Seconds until `.clawfs/status` says `loaded` (None if this ClawFS does not report it)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        status = read_status(mnt)
        if "loaded" not in status:
            return None
        if status["loaded"]:
            return time.perf_counter() - t0
        time.sleep(0.01)
    raise TimeoutError(f"the index of {mnt} did not load in {timeout} s")


def list_search(mnt: Path, query: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    entries = os.listdir(mnt / ".clawfs" / "search" / query.replace("/", " "))
    return time.perf_counter() - t0, len(entries)


def search_via_mount(mnt: Path, queries: list[str]) -> dict[str, Any]:
    """`ls .clawfs/search/<query>/` on the live mount.  The first loads the model in the daemon; meanwhile an
    unrelated `open()` of a stored file is timed, to see whether the rest of the filesystem waits for it."""
    d = mnt / "home" / "notes" / "d0000"
    probe = d / sorted(os.listdir(d))[0]
    first: list[tuple[float, int]] = []
    thread = threading.Thread(target=lambda: first.append(list_search(mnt, queries[0])))
    thread.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    with open(probe, "rb"):
        pass
    stalled = time.perf_counter() - t0
    thread.join()
    then = [list_search(mnt, q)[0] for q in queries[1:]]
    return {"first_s": round(first[0][0], 3), "open_during_first_s": round(stalled, 3),
            "then_ms": stats(then, 1000), "entries_first": first[0][1]}


def time_index_load(path: Path, repeats: int = 3) -> dict[str, Any]:
    """`IndexCore.load` with a snapshot, and its steps done by hand (read, decrypt, parse, compare ids)."""
    store = open_store(path)
    try:
        loads = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            IndexCore.load(store)
            loads.append(time.perf_counter() - t0)
        steps: dict[str, float] = {}
        tables = store.index
        with timer(steps, "read_snapshot_blob_s"):
            blob = bytes(tables.meta("snapshot"))
        with timer(steps, "decrypt_s"):
            plain = store.index.open_snapshot(blob)
        with timer(steps, "from_bytes_s"):
            VectorIndex.from_bytes(plain)
        with timer(steps, "vector_ids_s"):
            tables.vector_ids()
    finally:
        store.close()
    return {"runs_s": [round(x, 3) for x in loads], "median_s": round(float(np.median(loads)), 3), **steps}


# -- 3. freshness ------------------------------------------------------------------------------------------------
def read_status(mnt: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((mnt / ".clawfs" / "status").read_text())
    return result


def wait_indexed(mnt: Path, files: int, timeout: float, poll: float = 0.005) -> float:
    """Seconds until `.clawfs/status` shows `files` indexed files and nothing pending."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        s = read_status(mnt)
        if s["pending"] == 0 and s["files"] >= files:
            return time.perf_counter() - t0
        time.sleep(poll)
    raise TimeoutError(f"not indexed after {timeout} s: {read_status(mnt)}")


def wait_searchable(mnt: Path, word: str, name: str, timeout: float) -> int:
    """Searches before `.clawfs/search/<word>/` listed `name` (0: the first did).  Each look-up uses a new
    directory name (trailing spaces: same words) because the control tree keeps the result of a name it has
    answered."""
    t0 = time.perf_counter()
    for spaces in range(200):
        entries = os.listdir(mnt / ".clawfs" / "search" / (word + " " * spaces))
        if any(e.endswith("-" + name) for e in entries):
            return spaces
        if time.perf_counter() - t0 > timeout:
            break
        time.sleep(0.02)
    raise TimeoutError(f"{name} not listed by .clawfs/search/{word}/ after {time.perf_counter() - t0:.1f} s")


def fresh_text(corpus: Corpus, size: int, word: str, rng: random.Random) -> str:
    """About `size` bytes (< 64 KiB) of real paragraphs with `word` in the middle of one of them."""
    texts = corpus.texts()
    start = rng.randrange(len(texts))
    parts, total = [f"# note about {word}\n"], 0
    for k in range(len(texts)):
        para = texts[(start + k) % len(texts)]
        if total + len(para) > size and len(parts) > 1:
            break
        parts.append(para)
        total += len(para.encode()) + 2
    mid = parts[1].split(" ")
    parts[1] = " ".join([*mid[: len(mid) // 2], word, *mid[len(mid) // 2:]])
    return "\n\n".join(parts).encode()[: 64 * KIB - 2].decode(errors="ignore") + "\n"


def measure_freshness(work: Path, corpus: Corpus, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    path, mnt = work / "fresh.claw", work / "mnt-fresh"
    create_store(path).close()
    (work / "passphrase").write_bytes(PASSPHRASE + b"\n")
    file_sizes = [int(x) for x in np.linspace(1 * KIB, 63 * KIB, sizes.fresh)]
    rng.shuffle(file_sizes)
    samples = []
    with mounted(path, mnt, f"passphrase_file={work / 'passphrase'}", work / "mount-fresh.log") as m:
        (m / "notes").mkdir()
        (m / "notes" / "warmup.md").write_text(corpus.texts()[0] + "\n")
        t0 = time.perf_counter()
        wait_indexed(m, 1, timeout=300)
        console.log(f"freshness: model loaded by the mount's indexer ({time.perf_counter() - t0:.1f} s)")
        texts = []
        for i, size in enumerate(file_sizes):
            sample, text = fresh_sample(m, i, size, corpus, rng)
            samples.append(sample)
            texts.append(text)
            time.sleep(0.5)  # idle mount between samples
        status = read_status(m)
    for sample, floor in zip(samples, embedding_floor(texts), strict=True):
        sample["embedding_floor_s"] = round(floor, 3)
    return freshness_report(samples, status)


def embedding_floor(texts: list[str]) -> list[float]:
    """Seconds the model alone takes to embed each file's chunks, cut as the indexer cuts them, in this process
    once the mount is gone (ClawFS's batch size and precision, torch on every idle core): the part of freshness
    no indexer using this model on this machine can save."""
    emb = get_embedder(MINILM_NAME)
    emb.warm_up()
    floors = []
    for text in texts:
        pieces = chunker.chunk_text(text, max_tokens=emb.chunk_tokens, overlap_tokens=emb.overlap_tokens,
                                    count_tokens=emb.count_tokens)
        t0 = time.perf_counter()
        emb.embed([p.text for p in pieces])
        floors.append(time.perf_counter() - t0)
    return floors


def fresh_sample(mnt: Path, i: int, size: int, corpus: Corpus, rng: random.Random) -> tuple[dict[str, Any], str]:
    word = f"zq{i}x{rng.getrandbits(40):010x}"
    name = f"fresh-{i:03d}.md"
    text = fresh_text(corpus, size, word, rng)
    with open(mnt / "notes" / name, "w") as f:
        f.write(text)
    closed_ns = time.time_ns()
    indexed = wait_indexed(mnt, i + 2, timeout=30, poll=FRESH_POLL)
    searched_ns = time.time_ns()
    found_by_first_search = wait_searchable(mnt, word, name, timeout=30) == 0
    # The daemon stamps `last_indexed_ns` when the file's vectors reach the in-memory index, i.e. the moment
    # it became searchable; the search above checks that it really is.
    last_ns = read_status(mnt)["last_indexed_ns"]
    searchable = (last_ns - closed_ns) / 1e9 if found_by_first_search else (time.time_ns() - closed_ns) / 1e9
    return {"bytes": len(text.encode()), "indexed_s": round(indexed, 3), "searchable_s": round(searchable, 3),
            "found_by_first_search": found_by_first_search,
            "search_ms": round((time.time_ns() - searched_ns) / 1e6)}, text


def freshness_report(samples: list[dict[str, Any]], status: dict[str, Any]) -> dict[str, Any]:
    return {"samples": samples, "searchable_s": stats([s["searchable_s"] for s in samples], digits=3),
            "indexed_s": stats([s["indexed_s"] for s in samples], digits=3),
            "embedding_floor_s": stats([s["embedding_floor_s"] for s in samples], digits=3),
            "over_floor_s": stats([s["searchable_s"] - s["embedding_floor_s"] for s in samples], digits=3),
            "status_at_end": {k: status.get(k) for k in ("files", "chunks", "vectors", "pending", "embedder")}}


# -- report ------------------------------------------------------------------------------------------------------
def targets_of(report: dict[str, Any]) -> dict[str, Any]:
    def row(value: float | None, target: float, higher_is_better: bool = False) -> dict[str, Any]:
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        return {"value": value, "target": target, "met": met}

    s, m, f, t = (report.get(k) or {} for k in ("search", "mount", "freshness", "throughput"))
    return {
        "search_p50_ms": row(s.get("total_ms", {}).get("p50"), TARGETS["search_p50_ms"]),
        "mount_s": row(m.get("passphrase", {}).get("warm_median_s"), TARGETS["mount_s"]),
        "freshness_p95_s": row(f.get("searchable_s", {}).get("p95"), TARGETS["freshness_p95_s"]),
        "throughput_ratio": row(t.get("ratio"), TARGETS["throughput_ratio"], higher_is_better=True),
    }


def machine_details() -> dict[str, Any]:
    import torch

    return machine.machine_info(torch=torch.__version__, torch_threads=torch.get_num_threads())


def fmt(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def print_table(report: dict[str, Any]) -> None:
    s, m, f, t = (report.get(k) or {} for k in ("search", "mount", "freshness", "throughput"))
    table = Table(title=f"bench/search.py ({'quick' if report['config']['quick'] else 'full'})")
    for col in ("measure", "p50 / value", "p95 / detail", "target", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    tg = report["targets"]
    met = {k: {True: "[green]yes", False: "[red]NO", None: "-"}[v["met"]] for k, v in tg.items()}
    chunks = s.get("chunks")
    for part in ("total", "serial", "query_embedding", "vector", "bm25", "rest"):
        d = s.get(f"{part}_ms", {})
        label = f"search at {chunks} chunks, {part} (ms)"
        extra = ("<= 25 ms p50", met["search_p50_ms"]) if part == "total" else ("", "")
        table.add_row(label, fmt(d.get("p50")), fmt(d.get("p95")), *extra)
    by_threads = s.get("query_embedding_by_torch_threads_ms", {})
    if by_threads:
        table.add_row("query embedding alone, torch threads 2 / 1 (ms p50)", fmt(by_threads[2]["p50"]),
                      fmt(by_threads[1]["p50"]), "", "")
    for kind in ("passphrase", "keyfile"):
        d = m.get(kind, {})
        extra = ("<= 1 s", met["mount_s"]) if kind == "passphrase" else ("", "")
        table.add_row(f"clawfs mount ({kind}), warm median / cold (s)", fmt(d.get("warm_median_s")),
                      fmt(d.get("cold_s")), *extra)
    after = [t for t in m.get("passphrase", {}).get("index_loaded_after_s", []) if t is not None]
    table.add_row("index loaded, after the mount returned (s, median / max)",
                  fmt(float(np.median(after)) if after else None), fmt(max(after) if after else None), "", "")
    table.add_row("IndexCore.load alone (s)", fmt(m.get("index_load", {}).get("median_s")), "", "", "")
    table.add_row("clawfs --version (s)", fmt(m.get("cli_startup_s")), "", "", "")
    sv = m.get("search_via_mount", {})
    table.add_row("search via mount: first (s) / then p50 (ms)", fmt(sv.get("first_s")),
                  fmt(sv.get("then_ms", {}).get("p50")), "", "")
    table.add_row("open() of a file during that first search (s)", fmt(sv.get("open_during_first_s")), "", "", "")
    for key, label in (("searchable_s", "freshness: close -> searchable (s)"),
                       ("indexed_s", "freshness: close -> status pending 0 (s)"),
                       ("embedding_floor_s", "  the model alone on the same chunks (s)"),
                       ("over_floor_s", "  searchable less the model alone (s)")):
        d = f.get(key, {})
        extra = ("<= 2 s p95", met["freshness_p95_s"]) if key == "searchable_s" else ("", "")
        table.add_row(label, fmt(d.get("p50")), fmt(d.get("p95")), *extra)
    add_throughput_rows(table, t, met["throughput_ratio"])
    load = report.get("machine_load", {})
    table.caption = "cores used by other processes during each section: " + ", ".join(
        f"{k} {v.get('other_processes_cores')}" for k, v in load.items())
    console.print(table)


def add_throughput_rows(table: Table, t: dict[str, Any], met: str) -> None:
    if not t:
        return
    raw, same = t["raw"], t["raw_same_settings"]
    table.add_row("raw sentence-transformers, float32 batch 64 (paragraphs/s)", fmt(raw["paragraphs_per_s"]),
                  f"{raw['word_pieces_per_s']} wp/s", "", "")
    table.add_row(f"raw sentence-transformers, ClawFS's settings {same.get('settings')} (paragraphs/s)",
                  fmt(same["paragraphs_per_s"]), f"{same['word_pieces_per_s']} wp/s", "", "")
    table.add_row("ClawFS indexer, 1 paragraph/file (paragraphs/s, ratio)",
                  fmt(t["one_per_file"]["paragraphs_per_s"]), fmt(t["one_per_file"]["ratio_paragraphs"]),
                  ">= 0.9x", met)
    table.add_row("  same, ratio to raw with ClawFS's settings", "", fmt(t["one_per_file"].get(
        "ratio_paragraphs_same_settings")), "", "")
    table.add_row("ClawFS indexer, 8 paragraphs/file (chunks/s, paragraphs/s ratio)",
                  fmt(t["notes"]["chunks_per_s"]), fmt(t["notes"]["ratio_paragraphs"]), "", "")


# -- main --------------------------------------------------------------------------------------------------------
SECTIONS = ("build", "throughput", "search", "mount", "freshness")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small sizes (10k chunks, 10 freshness samples)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where search.json goes")
    p.add_argument("--work-dir", type=Path, help="parent of the temporary stores (default OUT/tmp)")
    p.add_argument("--chunks", type=int, help="chunks in the search/mount store (default 100000, quick 10000)")
    p.add_argument("--keep", action="store_true", help="keep the temporary stores")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                   help=f"run only these sections ({', '.join(SECTIONS)}); search needs build or --big")
    p.add_argument("--big", type=Path, metavar="STORE",
                   help="the 100k-chunk store of an earlier run's --keep (WORK/search-*/big.claw) instead of building")
    p.add_argument("--wait-idle", type=float, default=180.0, metavar="SECONDS",
                   help="before each section, wait up to this long for other processes to go quiet (0: no)")
    return p.parse_args(argv)


def run_sections(a: argparse.Namespace, sizes: Sizes, work: Path) -> dict[str, Any]:
    rng = random.Random(a.seed)
    report: dict[str, Any] = {"errors": {}, "machine_load": {}}
    need_chars = int(sizes.chunks * 1100)
    with timer(report, "corpus_s"):
        corpus = load_corpus(need_chars, rng)
        queries = make_queries(sizes.queries, rng)
    console.log(f"corpus: {len(corpus.paras)} paragraphs, {corpus.chars / 1e6:.1f} MB; {len(queries)} queries")
    report["corpus"] = {"paragraphs": len(corpus.paras), "chars": corpus.chars, "queries": len(queries)}
    big = a.big or work / "big.claw"
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("build", lambda: build_big_store(big, corpus, sizes, rng)),  # the long part first: no target depends on it
        ("throughput", lambda: measure_throughput(work, corpus, sizes, rng)),
        ("search", lambda: measure_search(big, queries)),
        ("mount", lambda: measure_mounts(work, big, sizes, queries)),
        ("freshness", lambda: measure_freshness(work, corpus, sizes, rng)),
    ]
    only = set(a.only or SECTIONS) - ({"build"} if a.big else set())
    for name, step in steps:
        if name not in only or (name in ("search", "mount") and "build" in report["errors"]):
            continue
        quiet = a.wait_idle and name != "build"  # building is not timed against a target
        load: dict[str, Any] = {"idle_before": wait_idle(a.wait_idle) if quiet else foreign_cores()}
        try:
            with load_during(load):
                report[name] = step()
        except Exception as e:  # one failed section must not cost the others' figures
            console.print_exception(max_frames=6)
            report["errors"][name] = f"{type(e).__name__}: {e}"
        report["machine_load"][name] = load
        console.log(f"{name}: done in {load.get('wall_s')} s; other processes used "
                    f"{load.get('other_processes_cores')} cores meanwhile")
    return report


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unmount and clean up on `kill` too
    sizes = QUICK if a.quick else FULL
    if a.chunks:
        sizes.chunks = a.chunks
    a.out.mkdir(parents=True, exist_ok=True)
    parent = (a.work_dir or a.out / "tmp").resolve()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="search-", dir=parent))
    t0 = time.perf_counter()
    try:
        report = run_sections(a, sizes, work)
    finally:
        for mnt in work.glob("mnt-*"):
            unmount(mnt)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                parent.rmdir()
    report = {"machine": machine_details(), "config": {"quick": a.quick, "seed": a.seed, **sizes.__dict__,
                                                    "noise": NOISE, "wall_s": round(time.perf_counter() - t0)},
              **report}
    report["targets"] = targets_of(report)
    (a.out / "search.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    console.log(f"wrote {a.out / 'search.json'}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
