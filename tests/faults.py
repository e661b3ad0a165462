"""Helpers for the fault tests (crash, tamper, plaintext leaks, CLI errors, ENOSPC, mount(8)).

Everything here drives the real `clawfs` command or the kernel; nothing imports ClawFS internals, so a test
sees exactly what a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import CLAWFS, StoreFixture, is_mounted
from waiting import wait_for


def clawfs(*args: str, env_extra: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `clawfs ARGS` with no terminal: stdin is /dev/null and CLAWFS_PASSPHRASE_FILE is unset, so a
    command that would prompt has to fail instead of hanging or picking up a key from the environment."""
    env = {k: v for k, v in os.environ.items() if k != "CLAWFS_PASSPHRASE_FILE"}
    env.update(env_extra or {})
    return subprocess.run([CLAWFS, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess[str], *, contains: str | None = None) -> str:
    """A user mistake: non-zero exit, exactly one line `clawfs: ...` on stderr, no traceback.  Returns it."""
    cmd = " ".join(str(a) for a in proc.args)
    assert proc.returncode != 0, f"{cmd} succeeded but should have failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"{cmd} printed a traceback:\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"{cmd}: expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith("clawfs: "), f"{cmd}: stderr does not start with 'clawfs: ': {lines[0]!r}"
    if contains is not None:
        assert contains.lower() in lines[0].lower(), f"{cmd}: {contains!r} not in {lines[0]!r}"
    return lines[0]


def mount_source(mnt: Path) -> tuple[str, str] | None:
    """(fstype, source) of the mount on `mnt`, or None."""
    real = os.path.realpath(mnt)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == real:
                fstype, source = right.split()[:2]
                found = (fstype, source)
    return found


def lazy_unmount(mnt: Path) -> None:
    """Detach whatever is mounted on `mnt` (a dead FUSE mount included); quiet if nothing is."""
    for _ in range(5):
        if not is_mounted(mnt):
            return
        proc = subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, text=True)
        if proc.returncode and is_mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, text=True)


def safe_unmount(store: StoreFixture, mnt: Path) -> None:
    """Cleanup for a `finally`: unmount cleanly if possible, else lazily."""
    if not is_mounted(mnt):
        return
    with contextlib.suppress(Exception):
        store.umount(mnt)
    lazy_unmount(mnt)


def store_released(store: StoreFixture) -> bool:
    """True once no process holds the store's lock (fsck can run): probed with fsck itself."""
    proc = clawfs("fsck", str(store.path), *store.key_args(), "--json")
    return not (proc.returncode == 1 and "in use" in proc.stderr)


def wait_released(store: StoreFixture, timeout: float = 30) -> None:
    wait_for(lambda: store_released(store), timeout=timeout, what=f"the daemon to release {store.path}",
             interval=0.2)


def pids_holding(path: Path) -> list[int]:
    """Processes with `path` open (read from /proc/*/fd; we are root)."""
    real = os.path.realpath(path)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == real:
                        pids.append(int(entry))
                        break
    return pids


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def info(store_path: Path) -> dict[str, Any]:
    proc = clawfs("info", str(store_path), "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def fsck_json(store: StoreFixture, *key_args: str) -> tuple[int, dict[str, Any], str]:
    """(exit code, report, stderr) of `clawfs fsck --json`; the exit must be 0 or 4 and stdout JSON."""
    proc = clawfs("fsck", str(store.path), *(key_args or store.key_args()), "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 4), f"fsck exited {proc.returncode}: {proc.stderr}"
    report: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, report, proc.stderr


# -- a foreground mount we can kill -------------------------------------------------------------------------------
class ForegroundMount:
    """`clawfs mount STORE MNT -f`: the Popen's pid is the daemon itself, stderr goes to a file."""

    def __init__(self, store: StoreFixture, mnt: Path, *opts: str, stderr_name: str = "fg.stderr") -> None:
        self.store, self.mnt = store, mnt
        mnt.mkdir(exist_ok=True)
        self.stderr_path = store.tmp / stderr_name
        all_opts = ",".join([f"passphrase_file={store.passfile}", *opts])
        env = {k: v for k, v in os.environ.items() if k != "CLAWFS_PASSPHRASE_FILE"}
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([CLAWFS, "mount", str(store.path), str(mnt), "-f", "-o", all_opts],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        try:
            wait_for(lambda: is_mounted(mnt) or self.proc.poll() is not None, timeout=60,
                     what=f"the foreground mount on {mnt}")
        except AssertionError:
            self.kill()
            raise
        if not is_mounted(mnt):
            raise AssertionError(f"clawfs mount -f exited {self.proc.returncode} without mounting:\n"
                                 f"{self.stderr()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the daemon (no chance to flush, unmark or unmount) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def cleanup(self) -> None:
        self.kill()
        lazy_unmount(self.mnt)


@contextlib.contextmanager
def foreground_mount(store: StoreFixture, mnt: Path, *opts: str) -> Iterator[ForegroundMount]:
    fg = ForegroundMount(store, mnt, *opts)
    try:
        yield fg
    finally:
        fg.cleanup()


# -- tampering with an unmounted store ------------------------------------------------------------------------
@contextlib.contextmanager
def tamper(store_path: Path) -> Iterator[sqlite3.Connection]:
    """An sqlite3 connection to the (unmounted) store, committed and closed on exit.

    Deliberately not through `Store`: an attacker with the file changes its rows directly, and that is what the
    tamper and fsck tests must catch."""
    conn = sqlite3.connect(store_path)
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def read_errno(path: Path) -> int | None:
    """Read the whole file; None when that works, else the errno."""
    try:
        path.read_bytes()
    except OSError as e:
        return e.errno
    return None
