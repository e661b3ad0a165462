"""A `.clawfs/search/` lookup runs its search in a worker thread: the FUSE adapter's other handlers keep answering
while it waits (for the model to load at mount, or for a batch the indexer is embedding).

Drives `ClawOperations` (the pyfuse3 adapter) under trio without the kernel, over a real store, VFS and router; the
control tree's search function is one that waits on an event, so the test decides when the search ends instead of
guessing how long it takes.  tests/test_index_mount.py checks search results through a real mount.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio

from clawfs.control import ControlTree
from clawfs.errors import FsError
from clawfs.fuse_ops import ClawOperations
from clawfs.index.hits import Hit
from clawfs.keys import Credentials
from clawfs.router import Router
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

PW = b"offloop passphrase"
CTX = Ctx(uid=0, gid=0)
WAIT = 30.0  # only bounds how long a failure takes to show


class BlockingSearch:
    """A SearchFn that waits until released, then finds the file `hit`; records the thread it ran in."""

    def __init__(self, hit: bytes) -> None:
        self.hit = hit
        self.started = threading.Event()
        self.release = threading.Event()
        self.thread: str | None = None

    def __call__(self, query: str, k: int, prefix: bytes | None) -> list[Hit]:
        self.thread = threading.current_thread().name
        self.started.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("the test never released the search")
        return [Hit(0, self.hit, 1.0, 0.9, query)]


@pytest.fixture
def ops(tmp_path: Path) -> Any:
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store = Store.open(path, Credentials(passphrases=[PW]))
    search = BlockingSearch(b"notes.md")
    vfs = VFS(store)
    fh, _ = vfs.create(ROOT, b"notes.md", 0o100644, os.O_WRONLY, CTX)
    vfs.write(fh, 0, b"the agent's notes\n")
    vfs.release(fh)
    try:
        yield ClawOperations(Router(vfs, ControlTree(search, lambda: {}, os.getuid(), os.getgid()))), search
    finally:
        store.close()


def test_other_requests_run_while_a_search_waits(ops: Any) -> None:
    adapter, search = ops
    served: list[str] = []

    async def main() -> None:
        ctl = (await adapter.lookup(ROOT, b".clawfs", None)).st_ino
        search_dir = (await adapter.lookup(ctl, b"search", None)).st_ino
        async with trio.open_nursery() as nursery:
            result: dict[str, Any] = {}

            async def look_up_query() -> None:
                result["entry"] = await adapter.lookup(search_dir, b"what did I write", None)

            nursery.start_soon(look_up_query)
            # the search is now running, and blocked (waited for in a thread: the loop stays free)
            assert await trio.to_thread.run_sync(search.started.wait, WAIT), "the search never started"
            # Meanwhile, ordinary requests are answered: the search holds no request slot of theirs.
            notes = await adapter.lookup(ROOT, b"notes.md", None)
            served.append("lookup")
            assert (await adapter.getattr(notes.st_ino, None)).st_size == len(b"the agent's notes\n")
            served.append("getattr")
            assert "entry" not in result, "the search lookup finished before it was released"
            search.release.set()
        entry = result["entry"]
        names = [n for n, _, _ in adapter.fs.readdir(entry.st_ino, 0)]
        assert b"01-notes.md" in names

    trio.run(main)
    assert served == ["lookup", "getattr"]
    assert search.thread != threading.main_thread().name, "the search ran on the request loop's thread"


def test_a_failed_search_answers_eio_and_the_loop_goes_on(tmp_path: Path) -> None:
    path = str(tmp_path / "s.claw")
    Store.create(path, [("passphrase", PW)], block_size=4096)
    store = Store.open(path, Credentials(passphrases=[PW]))

    def broken(query: str, k: int, prefix: bytes | None) -> list[dict[str, Any]]:
        raise FsError(".clawfs search failed: the index is not loaded (snapshot unreadable)")

    adapter = ClawOperations(Router(VFS(store), ControlTree(broken, lambda: {}, os.getuid(), os.getgid())))

    async def main() -> None:
        ctl = (await adapter.lookup(ROOT, b".clawfs", None)).st_ino
        search_dir = (await adapter.lookup(ctl, b"search", None)).st_ino
        with pytest.raises(pyfuse3.FUSEError) as e:
            await adapter.lookup(search_dir, b"anything", None)
        assert e.value.errno == errno.EIO
        assert (await adapter.getattr(ROOT, None)).st_ino == ROOT

    try:
        trio.run(main)
    finally:
        store.close()
