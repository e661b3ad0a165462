"""The one way the tests wait for something another process or thread does: poll an observable condition until
it holds, with a deadline.  The deadline only bounds how long a failure takes to show; nothing here measures
time, and no test sleeps to let work happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _truthy(value: Any) -> bool:
    return bool(value)


def wait_for(probe: Callable[[], T], *, timeout: float, what: str, until: Callable[[T], bool] = _truthy,
             interval: float = 0.05, detail: Callable[[], str] | None = None) -> T:
    """Call `probe` every `interval` seconds until `until(value)` holds (by default: the value is truthy) and
    return that value.  After `timeout` seconds: AssertionError naming `what`, the last value seen (unless a
    plain bool) and `detail()` (say, the end of a mount's log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            seen = "" if isinstance(value, bool) else f"; last seen: {value!r}"
            more = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{seen}{more}")
        time.sleep(interval)  # the polling interval of a deadline loop, not a guess at how long work takes
