"""The runtime's supervisor (mountd/supervisor.py) and its pings (agent/liveness.py): the restart policy on an
injected clock (no sleeping), then real child processes: one that pings and is killed (restarted, pid and uid
as the host sees them), one that dies at start (stays down after 5 failures, its last words as the reason), one
that hangs (killed for want of pings, restarted), one that stops on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from mountd.supervisor import FAILED, RESTARTING, RUNNING, STOPPED, RestartPolicy, Supervisor, spawn_command

TIMEOUT = 30.0


# -- the policy, on a clock the test moves ------------------------------------------------------------------------
def test_first_restart_at_once_then_one_second_doubling_to_five_minutes() -> None:
    p = RestartPolicy()
    now, delays = 0.0, []
    for _ in range(12):  # each run lasts 3 minutes: never 5 failures in 10 minutes, never 10 healthy minutes
        started = now
        now += 180.0
        d = p.on_failure(now, started)
        assert d is not None
        delays.append(d)
        now += d
    assert delays[:10] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]  # the first restart at once
    assert delays[10:] == [300, 300]


def test_five_failures_within_ten_minutes_and_it_stays_down() -> None:
    p = RestartPolicy()
    now, results = 0.0, []
    for _ in range(5):
        started = now
        now += 0.5  # dies at start
        d = p.on_failure(now, started)
        results.append(d)
        now += d or 0
    assert results == [0, 1, 2, 4, None]


def test_failures_older_than_the_window_do_not_count() -> None:
    p = RestartPolicy()
    assert [p.on_failure(t, t - 1) for t in (0.0, 1.0, 2.0, 3.0)] == [0, 1, 2, 4]
    assert p.on_failure(601.0, 600.0) == 8  # the first failure left the window: 4 within it, not 5


def test_ten_healthy_minutes_reset_the_backoff() -> None:
    p = RestartPolicy()
    assert [p.on_failure(t, t - 1) for t in (0.0, 10.0, 20.0)] == [0, 1, 2]
    assert p.on_failure(2000.0, 1399.0) == 0  # ran 601 s: at once again
    assert p.on_failure(2010.0, 2005.0) == 1


# -- real processes -----------------------------------------------------------------------------------------------
PINGER = textwrap.dedent("""
    import os, signal, sys, time
    from agent.liveness import Liveness
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as the runtime does (and pid 1 of a jail must)
    mode = sys.argv[1]
    if mode == "whoami":  # what the child sees of itself, inside its namespaces
        with open(os.environ["WHOAMI"], "w") as f:
            f.write(f"{os.getpid()} {os.getuid()}")
    live = Liveness.from_env(); live.every = 0.05
    live.ping(force=True)
    if mode == "die":
        print("settings/llm.toml is not valid TOML", file=sys.stderr, flush=True)
        sys.exit(2)
    if mode == "hang":
        time.sleep(3600)
    while True:
        live.ping()
        time.sleep(0.05)
""")


@contextmanager
def supervised(tmp_path: Path, mode: str, prefix: list[str] | None = None,
               **kwargs: Any) -> Iterator[Supervisor]:
    script = tmp_path / "child.py"
    script.write_text(PINGER)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), WHOAMI=str(tmp_path / "whoami"))
    sup = Supervisor(spawn_command([*(prefix or []), sys.executable, str(script), mode], env), **kwargs)
    sup.start()
    try:
        yield sup
    finally:
        sup.stop()


def test_a_pinging_child_runs_and_a_killed_one_is_restarted(tmp_path: Path) -> None:
    policy = RestartPolicy(first=0.05)
    alive: list[int] = []  # on_alive: the pid of each run's first ping
    with supervised(tmp_path, "ping", policy=policy, on_alive=alive.append) as sup:
        assert sup.settled.wait(TIMEOUT) and sup.pinged.is_set()
        st = sup.status()
        assert st.state == RUNNING and st.uid == os.getuid() and st.restarts == 0
        assert st.pid is not None and os.path.exists(f"/proc/{st.pid}")
        first_pid = st.pid
        assert alive == [first_pid]
        os.kill(first_pid, signal.SIGKILL)
        st = wait_for(sup.status, timeout=TIMEOUT, what="a restarted runtime",
                      until=lambda s: s.restarts == 1 and s.state == RUNNING and s.pid not in (None, first_pid))
        assert st.last_error == "killed by SIGKILL"
        assert alive == [first_pid, st.pid]  # once per run, not per ping
    st = sup.status()
    assert st.state == STOPPED and st.pid is None


def test_a_child_that_dies_at_start_stays_down_with_its_reason(tmp_path: Path) -> None:
    with supervised(tmp_path, "die", policy=RestartPolicy(first=0.01)) as sup:
        st = wait_for(sup.status, timeout=TIMEOUT, what="the runtime to give up", until=lambda s: s.state == FAILED)
        assert sup.settled.is_set() and st.restarts == 4 and st.pid is None
        assert st.last_error is not None
        assert "exited with status 2: settings/llm.toml is not valid TOML" in st.last_error
        assert "5 failures within 10 minutes" in st.last_error


def test_a_child_that_stops_pinging_is_killed_and_restarted(tmp_path: Path) -> None:
    with supervised(tmp_path, "hang", ping_timeout=0.5, policy=RestartPolicy(first=0.01)) as sup:
        assert sup.settled.wait(TIMEOUT)
        hung = sup.status().pid
        st = wait_for(sup.status, timeout=TIMEOUT, what="the hung runtime to be replaced",
                      until=lambda s: s.restarts >= 1)
        assert st.last_error == "no liveness ping in 0.5 s: killed"
        assert st.state in (RUNNING, RESTARTING, FAILED)
        assert hung is not None and not _alive(hung)


def test_stop_sends_sigterm_and_waits(tmp_path: Path) -> None:
    with supervised(tmp_path, "ping") as sup:
        assert sup.settled.wait(TIMEOUT)
        pid = sup.status().pid
    assert pid is not None and not _alive(pid)
    assert sup.status().state == STOPPED


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_pid_and_uid_are_the_hosts_for_a_child_in_other_namespaces(tmp_path: Path) -> None:
    """The child pings from new user and pid namespaces, as uid 1000 and pid 1 there: the status names the uid
    and pid the host sees (the jail's case)."""
    prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--pid", "--fork"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare cannot make the namespaces here: {probe.stderr.decode().strip()}")
    with supervised(tmp_path, "whoami", prefix=prefix) as sup:
        assert sup.settled.wait(TIMEOUT) and sup.pinged.is_set()
        st = sup.status()
        inside_pid, inside_uid = map(int, (tmp_path / "whoami").read_text().split())
        assert (inside_pid, inside_uid) == (1, 1000)
        assert st.uid == os.getuid() != inside_uid
        assert st.pid is not None and st.pid != 1
        with open(f"/proc/{st.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        assert fields["NSpid"].split() == [str(st.pid), "1"]  # the same process, seen from both sides


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False
