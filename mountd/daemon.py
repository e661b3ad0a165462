"""Mounting and unmounting a store: checks, unlock, daemonize, serve, clean shutdown.

`clawfs mount` returns only once the mount is live (or with the reason it is not): the parent forks, the child
opens the store, mounts, and reports through a pipe before it starts serving.  Key prompts happen in the parent,
before the fork, while the terminal is still ours.

The daemon also runs the jails' egress proxy (mountd/proxy_service.py: why there, the control socket, live
policy, `.clawfs/audit/network.jsonl`), started once the loop serves and stopped before the store closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from clawfs import fuse_ops, policy
from clawfs.control import ControlTree
from clawfs.errors import FsError, IntegrityError, StoreBusy, UserError
from clawfs.index import engine
from clawfs.index.engine import IndexCore
from clawfs.index.indexer import Indexer
from clawfs.keys import Credentials
from clawfs.router import Router
from clawfs.store import FLUSH_INTERVAL, Store, StoreLock
from clawfs.vfs import VFS
from kernel import mounts, tpm
from kernel.process import detach_stdio, forbid_core_dumps, lower_thread_priority

from . import logs
from .options import MountOptions
from .proxy_service import ProxyService

StatusFn = Callable[[], dict[str, Any]]

log = logging.getLogger("clawfs.mountd")
FSTYPE = "fuse.clawfs"
READAHEAD_KIB = 1024  # cold streaming reads then arrive in 1 MiB requests instead of 128 KiB
INDEXER_STOP_WAIT = 0.3
"""Seconds an unmount waits for the indexer: the daemon must let go of the store within a second of `umount`
(then `umount && clawfs fsck` works), whatever the indexer is doing."""


def check_mountpoint(path: str) -> str:
    if not os.path.lexists(path):
        raise UserError(f"mountpoint {path} does not exist; create it with `mkdir -p {path}`")
    if not os.path.isdir(path):
        raise UserError(f"mountpoint {path} is not a directory")
    if mounts.is_mountpoint(path):
        raise UserError(f"{path} is already a mount point; unmount it first or choose another directory")
    if os.listdir(path):
        raise UserError(f"mountpoint {path} is not empty; mount on an empty directory")
    return os.path.realpath(path)


def _fsname(store: str) -> str:
    return store.replace("\\", "\\\\").replace(",", "\\,")


def _open(store_path: str, opts: MountOptions, master: bytes) -> Store:
    store = Store.open(store_path, Credentials(tpm=False), readonly=opts.readonly, master_key=master)
    try:
        store.check_rollback(opts.tpm_tcti or tpm.default_tcti(), accept_rollback=opts.accept_rollback,
                             advance=not opts.readonly)
    except BaseException:
        store.close()
        raise
    return store


def serve(store_path: str, mountpoint: str, opts: MountOptions, master: bytes,
          ready: Callable[[str | None], None], more_status: StatusFn | None = None) -> None:
    """Open, mount and serve until unmounted.  `ready(None)` once live, `ready(message)` if it failed first.
    `more_status()` adds sections to `.clawfs/status` (clawfs serve: the runtime and the webhooks)."""
    started = False
    try:
        store = _open(store_path, opts, master)
    except (UserError, tpm.TpmError) as e:
        ready(str(e))
        return
    indexer: Indexer | None = None
    proxies: ProxyService | None = None
    searches = _SearchConnection(store_path, master)
    try:
        forbid_core_dumps()
        core, off = _index_core(store) if opts.index else (None, "mounted with -o noindex")
        if core is not None and not opts.readonly:
            indexer = Indexer(store_path, master, core)
        vfs = VFS(store, readonly=opts.readonly, on_change=indexer.notify if indexer else None)
        if not opts.readonly:
            purged = vfs.purge_orphans()
            store.mark_mounted()
            store.checkpoint_in_background()
            store.batch_commits()
            if store.was_unclean:
                log.warning("%s was not cleanly unmounted last time (%d orphaned inodes purged); "
                            "run `clawfs fsck %s` to check it", store_path, purged, store_path)
        proxies = ProxyService(store, mountpoint, agent_uid=opts.agent_uid, agent_gid=opts.agent_gid,
                               readonly=opts.readonly)
        proxy_status = proxies.status  # control socket, jails served, counts
        tree = _control_tree(store, core, searches, off, [lambda: {"proxy": proxy_status()}, more_status])
        tree.add_generated(b"audit", b"network.jsonl", proxies.audit.text)
        ops = fuse_ops.ClawOperations(_router(vfs, store, tree, opts))
        try:
            fuse_ops.mount(ops, mountpoint, fuse_ops.fuse_options(_fsname(store_path), opts.fuse))
        except RuntimeError as e:
            ready(f"cannot mount {store_path} on {mountpoint}: {e} (is /dev/fuse available?)")
            return

        def on_started() -> None:
            nonlocal started
            started = True
            log.info("mounted %s on %s", store_path, mountpoint)
            if os.geteuid() == 0:  # after FUSE_INIT, which would cap it at 128 KiB again
                threading.Timer(0.5, mounts.set_readahead, (mountpoint, READAHEAD_KIB)).start()
            if indexer:
                indexer.start()
            elif core is not None:  # read-only: no indexer thread to do it
                _load_in_background(store_path, master, core)
            proxies.start(fuse_ops.loop_caller())
            ready(None)

        fuse_ops.serve(on_started, every=(FLUSH_INTERVAL, vfs.commit_pending))
    except UserError as e:
        if not started:
            ready(str(e))
        raise
    finally:
        if proxies is not None:
            proxies.close()
        if indexer and started and not indexer.stop(timeout=INDEXER_STOP_WAIT):
            log.info("unmounted while the indexer was busy (e.g. loading its model): its files stay queued")
        searches.close()
        if not opts.readonly:
            with contextlib.suppress(Exception):
                store.mark_unmounted()
        store.close()
        log.info("unmounted %s", store_path)


def _router(vfs: VFS, store: Store, tree: ControlTree, opts: MountOptions) -> Router:
    """Who reaches the mount: its owner (this uid), the agent uid of `-o agent_uid=N`, nobody else
    (clawfs/policy.py); refusals go to `.clawfs/audit/files.jsonl`."""
    if opts.agent_uid is not None and opts.agent_uid == os.getuid():
        raise UserError(f"agent_uid={opts.agent_uid} is the owner's own uid: give the agent a uid of its own")
    audit = policy.AuditLog(store, readonly=opts.readonly)
    tree.add_generated(b"audit", b"files.jsonl", audit.text)
    if opts.agent_uid is None:  # a single-user mount: POSIX modes alone, as before (allow_other shares it)
        return Router(vfs, tree, None, audit)
    return Router(vfs, tree, policy.Access(os.getuid(), opts.agent_uid, opts.agent_gid), audit)


def _index_core(store: Store) -> tuple[IndexCore | None, str | None]:
    """The semantic index, or None (logged) and why when it cannot run here, e.g. the model package is missing."""
    try:
        return IndexCore.open(store), None  # the indexer thread loads the vectors once the mount is live
    except UserError as e:
        log.warning("semantic index off for this mount: %s", e)
        return None, str(e)


def _load_in_background(store_path: str, master: bytes, core: IndexCore) -> None:
    """Load a read-only mount's vectors and model after it went live (seconds at 100k chunks; searches wait
    for them), through a connection of its own so that requests never queue behind the loading."""
    def run() -> None:
        lower_thread_priority()
        store = Store.open(store_path, Credentials(tpm=False), readonly=True, lock=False, master_key=master)
        try:
            core.load_vectors(store)
            core.embedder.warm_up()
        except Exception:
            log.exception("the semantic index could not load; searches fail until the next mount")
        finally:
            store.close()

    threading.Thread(target=run, name="clawfs-index-load", daemon=True).start()


class _SearchConnection:
    """The store as `.clawfs/` searches read it: a connection of their own, opened on first use, one search at a
    time.  Searches run in worker threads (clawfs/fuse_ops.py), and the mount's connection belongs to the
    request loop; the mount commits its pending writes before handing a search over, so this one sees them."""

    def __init__(self, store_path: str, master: bytes) -> None:
        self._path, self._master = store_path, master
        self._store: Store | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        with self._lock:
            if self._store is None:
                self._store = Store.open(self._path, Credentials(tpm=False), readonly=True, lock=False,
                                         master_key=self._master)
            self._store.drop_cache()  # blocks cached by an earlier search may have been rewritten since
            try:
                yield self._store
            except (UserError, IntegrityError) as e:  # e.g. the index failed to load: EIO, said in the log
                raise FsError(f".clawfs search failed: {e}") from None

    def close(self) -> None:
        """Close the connection, unless a search abandoned at unmount still holds it (waiting for the index to
        load): the process is about to exit, which closes it as well."""
        if not self._lock.acquire(timeout=1.0):
            return
        try:
            if self._store is not None:
                self._store.close()
                self._store = None
        finally:
            self._lock.release()


def _control_tree(store: Store, core: IndexCore | None, searches: _SearchConnection,
                  off: str | None = None, sections: list[StatusFn | None] | None = None) -> ControlTree:
    def run_search(query: str, k: int, prefix: bytes | None) -> list[engine.Hit]:
        assert core is not None
        with searches.store() as s:
            return engine.search(s, core, query, k, prefix).hits

    def run_similar(path: bytes, k: int, prefix: bytes | None) -> list[engine.Hit] | Literal["dir"] | None:
        assert core is not None
        with searches.store() as s:
            row = engine.lookup_path(s, path)
            if row is None or stat.S_ISDIR(row.mode):
                return None if row is None else "dir"
            return engine.similar(s, core, row.id, k, prefix) if stat.S_ISREG(row.mode) else None

    def status() -> dict[str, Any]:
        st = engine.status(store, core, off)
        for more in sections or []:  # the jails' egress proxy; under clawfs serve, the runtime and webhooks
            if more is not None:
                st.update(more())
        return st

    return ControlTree(run_search if core else None, status, os.getuid(), os.getgid(),
                       similar=run_similar if core else None)


def mount(store_path: str, mountpoint: str, opts: MountOptions, creds: Credentials, *,
          foreground: bool, verbose: bool = False) -> int:
    store_path = os.path.realpath(store_path)
    mountpoint = check_mountpoint(mountpoint)
    # Refuse early, in the parent, when another process holds the store.
    if os.path.isfile(store_path):
        StoreLock(store_path).release()
    master = Store.unlock_master(store_path, creds)  # prompts and TPM happen here, before the fork

    if foreground:
        logs.to_stderr(verbose or opts.debug)
        errors: list[str] = []
        serve(store_path, mountpoint, opts, master, lambda msg: errors.append(msg) if msg else None)
        if errors:
            raise UserError(errors[0])
        return 0

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            answer = r.read().decode(errors="replace")
        if answer.startswith("ok"):
            return 0
        os.waitpid(pid, 0)
        raise UserError(answer.removeprefix("err:").strip() or "the mount daemon died before the mount was live")
    # child: the daemon
    os.close(rfd)
    os.setsid()
    where = logs.for_daemon(opts.log_file, verbose or opts.debug)
    code = 0

    def ready(message: str | None) -> None:
        os.write(wfd, b"ok\n" if message is None else b"err:" + message.encode())
        os.close(wfd)
        detach_stdio()

    try:
        serve(store_path, mountpoint, opts, master, ready)
    except BaseException:
        log.exception("mount daemon failed (logs: %s)", where)
        code = 1
    finally:
        os._exit(code)



def umount(mountpoint: str, *, timeout: float = 60.0) -> None:
    """Unmount and wait until the daemon has flushed the store and let go of it."""
    entry = mounts.find_by_mountpoint(mountpoint)
    if entry is None:
        raise UserError(f"{mountpoint} is not mounted")
    if entry.fstype != FSTYPE:
        raise UserError(f"{mountpoint} is a {entry.fstype} mount, not ClawFS")
    msg = mounts.unmount(entry.mountpoint)
    if msg is not None:
        raise UserError(f"cannot unmount {mountpoint}: {msg} (is a process still using it? see `fuser -m`)")
    deadline = time.monotonic() + timeout
    while True:
        try:
            StoreLock(entry.source).release()
            return
        except StoreBusy:
            if time.monotonic() > deadline:
                raise UserError(f"unmounted, but the daemon still holds {entry.source} after {timeout:.0f} s") from None
            time.sleep(0.05)
        except FileNotFoundError:
            return
