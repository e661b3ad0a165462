"""Shared test helpers: run the real `clawfs` command, mount and unmount stores, fsck as the oracle; open a store
as the mount daemon does; a small disk to fill up."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from clawfs.store import Store

CLAWFS = str(Path(sys.executable).parent / "clawfs")
PASSPHRASE = b"correct horse battery staple"
SMALL_DISK_MB = 48  # the `small_disk` fixture's size: fills up in a second or two


def run(*args: str, check: bool = True, input: bytes | None = None,
        env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `clawfs ARGS`; with check=True a non-zero exit fails the test with its stderr."""
    proc = subprocess.run([CLAWFS, *args], capture_output=True, input=input.decode() if input else None,
                          text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"clawfs {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@dataclass
class StoreFixture:
    path: Path
    passfile: Path
    tmp: Path

    def key_args(self) -> list[str]:
        return ["--passphrase-file", str(self.passfile)]

    def fsck(self) -> dict[str, object]:
        proc = run("fsck", str(self.path), *self.key_args(), "--json", check=False)
        assert proc.returncode in (0, 4), proc.stderr
        report: dict[str, object] = json.loads(proc.stdout)
        return report

    def assert_clean(self) -> None:
        report = self.fsck()
        assert report["clean"], f"fsck found problems: {report['problems']}"

    def mount(self, mnt: Path, *opts: str, index: bool = False) -> None:
        """Mount; the semantic index is off unless asked for (it loads torch: seconds of CPU per mount, which
        filesystem tests do not need; tests/test_index_*.py turn it on)."""
        mnt.mkdir(exist_ok=True)
        all_opts = ",".join([f"passphrase_file={self.passfile}", f"log_file={self.tmp / 'mount.log'}", *opts,
                             *([] if index else ["noindex"])])
        run("mount", str(self.path), str(mnt), "-o", all_opts)

    def umount(self, mnt: Path) -> None:
        run("umount", str(mnt))

    def log_text(self) -> str:
        p = self.tmp / "mount.log"
        return p.read_text() if p.exists() else ""


def make_store(tmp: Path, name: str = "agent.claw", *extra: str, store_dir: Path | None = None) -> StoreFixture:
    """`clawfs mkfs` of `<store_dir or tmp>/<name>` (with `extra` arguments) under PASSPHRASE; the passphrase
    file and the mount log stay in `tmp` (so a store on a disk that fills up does not take its log with it)."""
    passfile = tmp / "passphrase"
    passfile.write_bytes(PASSPHRASE + b"\n")
    store = (store_dir or tmp) / name
    run("mkfs", str(store), "--passphrase-file", str(passfile), *extra)
    return StoreFixture(store, passfile, tmp)


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def store_bytes(store: Path) -> bytes:
    """Everything a store leaves on disk: the database, its WAL and its shared-memory index."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(store) + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


def vfs_write_tree(vfs: Any, files: dict[bytes, bytes]) -> dict[bytes, int]:
    """Write `files` (path relative to the root -> contents) through a `clawfs.vfs.VFS`, making directories on
    the way, as root; returns each file's inode number."""
    from clawfs.errors import FsError
    from clawfs.store import ROOT
    from clawfs.vfs import Ctx

    ctx = Ctx(uid=0, gid=0)
    inos = {}
    for name, text in files.items():
        parent = ROOT
        for part in name.split(b"/")[:-1]:
            try:
                parent = vfs.lookup(parent, part).ino
            except FsError:
                parent = vfs.mkdir(parent, part, 0o755, ctx).ino
        fh, attr = vfs.create(parent, name.rsplit(b"/", 1)[-1], 0o100644, os.O_RDWR, ctx)
        vfs.write(fh, 0, text)
        vfs.release(fh)
        inos[name] = attr.ino
    return inos


def open_as_mount(path: str, passphrase: bytes) -> tuple[Store, bytes]:
    """(the store, its master key), opened the mount daemon's way: the key unlocked once (`Store.unlock_master`),
    the store opened with it, so the key can be handed on, as the daemon hands it to its search connection
    (`mountd.daemon._SearchConnection`), without the store's envelope leaving the store."""
    from clawfs.keys import Credentials
    from clawfs.store import Store

    master = Store.unlock_master(path, Credentials(passphrases=[passphrase]))
    return Store.open(path, Credentials(tpm=False), master_key=master), master


@contextlib.contextmanager
def small_tmpfs(where: Path, mb: int = SMALL_DISK_MB) -> Iterator[Path]:
    """A tmpfs of `mb` MiB mounted at `where` (made), to fill up; the test is skipped where it cannot be mounted
    (needs root).  Unmounted after (lazily if busy)."""
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a {mb} MiB tmpfs to fill up (needs root): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_file(path: Path, limit: int, chunk: int = 1 << 20) -> tuple[int, OSError | None]:
    """Write random `chunk`s to `path`, fsync'ing every four, until an error or `limit` bytes; (bytes, error)."""
    rng = random.Random(7)
    written = 0
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        while written < limit:
            os.write(fd, rng.randbytes(chunk))
            written += chunk
            if written % (4 * chunk) == 0:
                os.fsync(fd)
        os.fsync(fd)
    except OSError as e:
        return written, e
    finally:
        with contextlib.suppress(OSError):  # close reports a late write-back error again; already seen
            os.close(fd)
    return written, None


@contextlib.contextmanager
def new_store(path: Path, passphrase: bytes) -> Iterator[Store]:
    """A fresh store at `path` (4 KiB blocks, scrypt), open for the block."""
    from clawfs.keys import Credentials
    from clawfs.store import Store
    Store.create(str(path), [("passphrase", passphrase)], block_size=4096, kdf="scrypt")
    s = Store.open(str(path), Credentials(passphrases=[passphrase]))
    try:
        yield s
    finally:
        s.close()
