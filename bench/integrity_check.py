#!/usr/bin/env python3
"""What metadata integrity (docs/ARCHITECTURE.md "Metadata integrity") costs outside the streaming paths.
(A benchmark, not a test.)

Builds a store of ``--files`` small files (one 2 KiB block each, 50 per directory) through the VFS in one
transaction per 500 files, then, on a fresh `Store` each time, times:

* ``mount_root_check``: `Store.check_rollback` without rollback protection, i.e. the root check every mount makes
  (one PRF per inode and entry MAC);
* ``first_read_all``: reading every file once (row MAC, entry MAC, block-set proof, block);
* ``stat_all``: `Store.get` of every inode (row MAC), and ``lookup_all``: every name (entry MAC);
* ``fsck``: `clawfs.fsck.check` of the whole store.

Only the tree it is imported from is measured; the side-by-side before/after figures are fs_throughput's
(bench/results/metadata_integrity.json).  Output: ``OUT/integrity_check.json`` and the same JSON on stdout.

    .venv/bin/python -m bench.integrity_check --files 10000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import machine
from clawfs import fsck
from clawfs.keys import Credentials
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

REPO = Path(__file__).resolve().parent.parent
PW = b"integrity bench passphrase"


def build(path: str, files: int) -> dict[int, list[bytes]]:
    Store.create(path, [("passphrase", PW)], kdf="scrypt")
    store = Store.open(path, Credentials(passphrases=[PW]))
    ctx = Ctx(uid=0, gid=0)
    names: dict[int, list[bytes]] = {}
    try:
        vfs = VFS(store)
        for start in range(0, files, 500):
            with store.transaction():
                for i in range(start, min(files, start + 500)):
                    if i % 50 == 0:
                        folder = vfs.mkdir(ROOT, f"d{i // 50}".encode(), 0o755, ctx).ino
                        names[folder] = []
                    fh, _ = vfs.create(folder, f"f{i}.txt".encode(), 0o644, os.O_RDWR, ctx)
                    vfs.write(fh, 0, os.urandom(1024).hex().encode())
                    vfs.release(fh)
                    names[folder].append(f"f{i}.txt".encode())
    finally:
        store.close()
    return names


def timed(path: str, what: Callable[[Store], Any], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        store = Store.open(path, Credentials(passphrases=[PW]))
        try:
            t0 = time.perf_counter()
            what(store)
            times.append(time.perf_counter() - t0)
        finally:
            store.close()
    return {"median_ms": round(statistics.median(times) * 1000, 2), "min_ms": round(min(times) * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    a = p.parse_args(argv)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.claw")
        t0 = time.perf_counter()
        names = build(path, a.files)
        build_s = time.perf_counter() - t0

        def read_all(store: Store) -> None:
            for folder, files in names.items():
                for name in files:
                    ino = store.lookup(folder, name)
                    assert ino is not None
                    row = store.get(ino)
                    store.read(row, 0, row.size)

        def stat_all(store: Store) -> None:
            for row in list(store.all_inodes()):
                store.get(row.id)

        def lookup_all(store: Store) -> None:
            for folder, files in names.items():
                for name in files:
                    store.lookup(folder, name)

        results = {
            "mount_root_check": timed(path, lambda s: s.check_rollback("", accept_rollback=False, advance=False),
                                      a.repeat),
            "first_read_all": timed(path, read_all, a.repeat),
            "stat_all": timed(path, stat_all, a.repeat),
            "lookup_all": timed(path, lookup_all, a.repeat),
            "fsck": timed(path, lambda s: fsck.check(s), max(1, a.repeat // 2)),
        }
    inodes = a.files + len(names) + 1
    report = {
        "what": __doc__.split("\n", 1)[0],
        "files": a.files, "inodes": inodes, "entries": inodes - 1, "build_s": round(build_s, 1),
        "results": results,
        "per_row_us": {"mount_root_check": round(results["mount_root_check"]["median_ms"] * 1000 / (2 * inodes), 2)},
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "machine": machine.machine_info(),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "integrity_check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
