"""The runtime's side of supervision: liveness pings to the daemon that started it (mountd/supervisor.py), and
`python -m agent.liveness HOME` - the runtime as the daemon runs it (in the jail: HOME is /agent).

A ping is one datagram on the socket whose number the daemon puts in $CLAWFS_LIVENESS_FD.  The first is sent at
start; then one from the runtime's main loop at most every PING_EVERY seconds, so pings stop when the loop
stops going round (a hang), not merely when the process dies.  The loop is Runtime.run's; it waits on the stop
event once per poll, and the event given here pings from that wait, which needs no change to the runtime.
Recovery of messages claimed before a crash runs turns before the loop starts; a thread pings during it (each
turn there is bounded by the LLM's timeout and retries).  Without $CLAWFS_LIVENESS_FD (`clawfs agent run`)
nothing is sent.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

ENV = "CLAWFS_LIVENESS_FD"
PING_EVERY = 2.0
log = logging.getLogger(__name__)


class Liveness:
    def __init__(self, fd: int | None, every: float = PING_EVERY) -> None:
        self.fd = fd
        self.every = every
        self._last = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Liveness:
        value = os.environ.get(ENV, "")
        return cls(int(value) if value.isdigit() else None)

    def ping(self, *, force: bool = False) -> None:
        if self.fd is None:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.every:
                return
            self._last = now
            try:
                os.write(self.fd, b"ping")
            except BlockingIOError:
                pass  # the daemon has not read the last ones yet: it is alive, and so are we
            except OSError as e:  # the daemon is gone: nobody to tell; keep serving until stopped
                log.warning("liveness ping failed (%s); no more pings", e)
                self.fd = None


class PingingStop(threading.Event):
    """The stop event for Runtime.run: its loop calls wait() once per poll, and each wait pings."""

    def __init__(self, liveness: Liveness) -> None:
        super().__init__()
        self.liveness = liveness
        self.looping = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.looping.set()
        self.liveness.ping()
        return super().wait(timeout)


def run(home: Path, channels: list[str] | None = None) -> int:
    from .config import ConfigError
    from .runtime import Runtime

    liveness = Liveness.from_env()
    stop = PingingStop(liveness)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runtime = Runtime(home, channels)
    except ConfigError as e:
        print(f"agent runtime: {e}", file=sys.stderr, flush=True)
        return 2
    liveness.ping(force=True)

    def during_recovery() -> None:
        while not stop.looping.is_set() and not stop.is_set():
            liveness.ping()
            stop.looping.wait(liveness.every / 2)

    threading.Thread(target=during_recovery, name="liveness-recovery", daemon=True).start()
    runtime.run(stop)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agent.liveness", description="Run the agent runtime on HOME, "
                                     "pinging the supervising daemon (mountd/supervisor.py).")
    parser.add_argument("home")
    parser.add_argument("--channel", action="append", dest="channels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s agent[%(process)d] %(levelname)s %(name)s: %(message)s")
    sys.exit(run(Path(args.home), args.channels))


if __name__ == "__main__":
    main()
