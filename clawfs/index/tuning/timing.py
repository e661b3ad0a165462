"""What a tuner run reports about itself while and after it runs: progress (through any object with the methods
of `Progress`, e.g. mountd/ui.py's rich bar; `NO_PROGRESS` shows nothing), the wall time and load of each phase,
and the machine it ran on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from kernel import sysinfo


class Progress(Protocol):
    """Progress of named tasks (mountd.ui.Progress shows it on stderr)."""

    def start(self, name: str, total: float | None, description: str | None = None) -> None: ...
    def advance(self, name: str, n: float = 1, *, description: str | None = None) -> None: ...
    def finish(self, name: str) -> None: ...
    def log(self, message: str) -> None: ...


class _NoProgress:
    """Shows nothing (tests, library callers that report otherwise)."""

    def start(self, name: str, total: float | None, description: str | None = None) -> None:
        pass

    def advance(self, name: str, n: float = 1, *, description: str | None = None) -> None:
        pass

    def finish(self, name: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()


class Phases:
    """Wall time of each phase of a run, with the load average at its start and end: other work may share the
    machine, and the load says how much of a slow phase is the machine's rather than the bench's."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start, load = time.perf_counter(), sysinfo.load_average()
        try:
            yield
        finally:
            self.rows.append({"phase": name, "wall_s": round(time.perf_counter() - start, 1),
                              "load_start": load, "load_end": sysinfo.load_average()})

    def doc(self) -> dict[str, Any]:
        """Whole seconds since this object was made (the command's start), and every phase so far."""
        return {"wall_s": round(time.perf_counter() - self._t0, 1), "phases": self.rows}


def machine() -> dict[str, Any]:
    """The machine and library versions results.json records."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        hnswlib_version = version("hnswlib")
    except PackageNotFoundError:
        hnswlib_version = "unknown"
    facts = sysinfo.machine_facts()
    return {"cpus": sysinfo.cpu_count(), "cpu": facts["cpu"], "platform": facts["platform"],
            "python": facts["python"], "numpy": np.__version__, "hnswlib": hnswlib_version,
            "load_average": sysinfo.load_average()}
