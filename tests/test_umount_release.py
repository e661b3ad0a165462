"""A plain `umount` (the fstab and `mount -t` path) while the indexer is still loading its model: the daemon lets
go of the store without waiting for the model (so `umount && clawfs fsck` works), and what was not indexed stays
queued for the next mount (issue 19 item 7).  How fast is measured, not asserted: bench/results/umount_release.json
(before 4.6-6.8 s, after 0.5-0.8 s on the 2-core machine)."""

from __future__ import annotations

import json
import subprocess

import pytest
from faults import clawfs, wait_released
from helpers import StoreFixture, is_mounted


@pytest.mark.fuse
def test_plain_umount_during_model_load_keeps_work_queued(store: StoreFixture) -> None:
    mnt = store.tmp / "mnt"
    store.mount(mnt, index=True)  # the default embedder: its model takes seconds to load
    try:
        for i in range(3):
            (mnt / f"note-{i}.md").write_text(f"note {i}: the grant is due in March\n")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert not is_mounted(mnt)
    wait_released(store)
    proc = clawfs("fsck", str(store.path), *store.key_args())
    assert proc.returncode == 0, proc.stderr
    store.mount(mnt)  # no indexer: the queue is as the last mount left it
    try:
        status = json.loads((mnt / ".clawfs" / "status").read_text())
        assert status["pending"] + status["files"] == 3, status  # each file indexed, or still queued
    finally:
        store.umount(mnt)
    store.assert_clean()
