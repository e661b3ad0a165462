"""How long the mount daemon holds its store after a plain `umount` (the fstab and `mount -t` path), while the
indexer is still loading its model: from `umount` to the store's lock being free (when `clawfs fsck` can run).
Target: under 1 s whatever the indexer does (issue 19 item 7).

    python -m bench.umount_release [--runs 3] [--after 0.5] [--out bench/results]

Each run: mount a fresh store with the default embedder, write a file, wait `--after` seconds, `umount`, poll the
lock every 10 ms.  Writes bench/results/umount_release.json (bench.machine.write_report).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import REPO, machine_info, write_report

CLAWFS = str(Path(sys.executable).parent / "clawfs")


def _released_after(store: Path, t0: float) -> float:
    while True:
        fd = os.open(store, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return time.monotonic() - t0
        except BlockingIOError:
            time.sleep(0.01)
        finally:
            os.close(fd)


def one_run(tmp: Path, after: float) -> float:
    pw, store, mnt = tmp / "pw", tmp / "s.claw", tmp / "mnt"
    pw.write_text("bench passphrase\n")
    mnt.mkdir()
    subprocess.run([CLAWFS, "mkfs", str(store), "--passphrase-file", str(pw)], check=True, capture_output=True)
    subprocess.run([CLAWFS, "mount", str(store), str(mnt), "-o", f"passphrase_file={pw},log_file={tmp / 'log'}"],
                   check=True, capture_output=True)
    (mnt / "note.md").write_text("the grant is due in March\n")
    time.sleep(after)
    t0 = time.monotonic()
    subprocess.run(["umount", str(mnt)], check=True)
    return _released_after(store, t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--after", type=float, default=0.5, help="seconds between mount and umount")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            runs.append(round(one_run(Path(d), args.after), 3))
    write_report(args.out, "umount_release", {
        "bench": "umount_release", "after_mount_seconds": args.after, "release_seconds": runs,
        "release_seconds_median": statistics.median(runs), "target_seconds": 1.0,
        "before_this_change_seconds": [4.591, 6.81, 6.544],
        "note": "before: the daemon joined the indexer thread, which waited for torch to load",
        "machine": machine_info()})


if __name__ == "__main__":
    main()
