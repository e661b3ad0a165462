"""The swtpm TPM 2.0 simulator for tests and benchmarks (a helper module, not a test file).

``running_swtpm()`` starts ``swtpm socket`` as a daemon on a free localhost port pair with its own state
directory, waits until it accepts connections, yields the TCTI string (``swtpm:host=127.0.0.1,port=P``) and stops
it by the pid from its pid file afterwards.  A fresh state directory is a fresh TPM: new seeds, so blobs sealed
by another state do not load; reusing a state directory with a new swtpm is a reboot (PCRs reset, seeds kept).

Test files use the fixture with ``from swtpm import swtpm_tcti  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# A benchmark imports this module as `tests.swtpm` (see bench/__init__.py), the tests as `swtpm`: either way its
# sibling, the tests' one wait helper, is found beside it.
if __package__:
    from .waiting import wait_for
else:
    from waiting import wait_for

SWTPM = "swtpm"
SKIP_REASON = "swtpm not installed: make setup installs it"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def have_swtpm() -> bool:
    return shutil.which(SWTPM) is not None


def tools_env(tcti: str) -> dict[str, str]:
    """Environment for tpm2-tools (tpm2_pcrextend, tpm2_dictionarylockout...) talking to ``tcti``."""
    return {**os.environ, "TPM2TOOLS_TCTI": tcti, "TSS2_LOG": "all+NONE"}


def _free_port_pair() -> int:
    """A port P with P and P+1 both free on 127.0.0.1 (server and control channel).  Another process can
    still take them before swtpm binds; start() retries on that race."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1 for swtpm")


PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper(on: bool) -> None:
    """While set, the daemon swtpm forks is re-parented to us rather than to init, so that _stop can reap it:
    an init that does not reap (as in some containers) would otherwise keep one zombie per test."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    """Whether pid is a live swtpm (a zombie left for an init that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == SWTPM and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(port: int, pidfile: Path) -> int | None:
    """The daemon's pid once its pid file exists and the server port accepts a connection; None before."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return pid
    return None


def _start(state_dir: Path) -> tuple[int, int]:
    """Start a daemonised swtpm on a free port pair; returns (port, pid)."""
    pidfile = state_dir / "swtpm.pid"
    last_error = ""
    for _ in range(5):
        port = _free_port_pair()
        pidfile.unlink(missing_ok=True)
        _set_subreaper(True)
        try:
            proc = subprocess.run(
                [SWTPM, "socket", "--tpm2",
                 "--tpmstate", f"dir={state_dir}",
                 "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                 "--flags", "not-need-init,startup-clear",
                 "--pid", f"file={pidfile}",
                 "--log", f"file={state_dir / 'swtpm.log'}",
                 "--daemon"],
                capture_output=True, text=True, timeout=START_TIMEOUT,
            )
        finally:
            _set_subreaper(False)
        if proc.returncode == 0:
            try:
                pid = wait_for(functools.partial(_listening, port, pidfile), timeout=START_TIMEOUT,
                               interval=0.01, what=f"swtpm to listen on 127.0.0.1:{port}")
                return port, pid
            except AssertionError:
                with contextlib.suppress(OSError, ValueError):
                    _stop(int(pidfile.read_text().strip()))  # started but never listened: do not leak it
                raise
        last_error = proc.stderr.strip()  # most likely lost the port race: try another pair
    raise RuntimeError(f"swtpm failed to start: {last_error}")


def _stop(pid: int) -> None:
    """SIGTERM the daemon by pid, SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(pid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        with contextlib.suppress(AssertionError):  # still alive: the next signal is stronger
            wait_for(lambda: not _alive(pid), timeout=STOP_TIMEOUT, interval=0.01, what=f"swtpm {pid} to exit")
    _reap(pid)


@contextlib.contextmanager
def running_swtpm(state_dir: Path | None = None) -> Iterator[str]:
    """Run swtpm with ``state_dir`` (a fresh temporary one, removed afterwards, when None); yield its TCTI."""
    if not have_swtpm():
        raise RuntimeError(SKIP_REASON)
    owned = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="swtpm-")) if state_dir is None else state_dir
    state.mkdir(parents=True, exist_ok=True)
    try:
        port, pid = _start(state)
        try:
            yield f"swtpm:host=127.0.0.1,port={port}"
        finally:
            _stop(pid)
    finally:
        if owned:
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def swtpm_tcti(tmp_path: Path) -> Iterator[str]:
    """A fresh simulated TPM for one test: its TCTI string (state in tmp_path/swtpm, stopped afterwards)."""
    if not have_swtpm():
        pytest.skip(SKIP_REASON)
    with running_swtpm(tmp_path / "swtpm") as tcti:
        yield tcti
