"""The WASM tool host's costs: per-call overhead of a trivial tool, the first call after install, and fuel.

Measured side by side in one run:
- ``echo``: the synthetic echo tool (tests/wasm/echo.wat), warm (compiled component cached in memory): a whole
  ``ToolHost.run`` (read + BLAKE3 of tool.wasm, capabilities, fresh Store, instantiate, execute, leak check) and
  the bare ``WasmRuntime.execute`` beneath it (fresh Store, instantiate, call).  Target: p50 <= 2 ms.
- ``first_call``: the first ``ToolHost.run`` in a new process-like host (new engine) after install, with an
  empty compiled cache (compile) and with a warm disk cache (deserialize), for echo and for IronClaw's GitHub
  tool (../shared/ironclaw-tools, when present).
- ``fuel``: a CPU-bound tool (tests/wasm/cpu.wat, N loop iterations) on an engine with fuel accounting and on
  one without; the ratio is fuel's overhead.

Output: ``OUT/wasm_tools.json`` and the same JSON on stdout.

    .venv/bin/python -m bench.wasm_tools --calls 1000
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import machine
from sandbox.toolhost import ToolHost
from sandbox.wasm import WASMTIME_VERSION, Limits, WasmRuntime

REPO = Path(__file__).resolve().parent.parent
WAT = REPO / "tests" / "wasm"
IRONCLAW_GITHUB = REPO.parent / "shared" / "ironclaw-tools" / "v0.3.0" / "github" / "github_tool.wasm"


class NoHost:
    """Host imports for the bare runtime calls (echo and cpu import nothing)."""

    def log(self, level: str, message: str) -> None: ...
    def now_millis(self) -> int: return 0
    def workspace_read(self, path: str) -> str | None: return None
    def http_request(self, *a: Any) -> Any: raise RuntimeError("no http in the bench")
    def tool_invoke(self, alias: str, params_json: str) -> tuple[bool, str]: return False, "no"
    def secret_exists(self, name: str) -> bool: return False


def timed(fn: Callable[[], object], n: int, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    return {"p50_ms": round(statistics.median(ms), 4), "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 4),
            "min_ms": round(ms[0], 4), "mean_ms": round(statistics.fmean(ms), 4), "n": n}


def install(home: Path, name: str, binary: bytes) -> None:
    d = home / "tools" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "tool.wasm").write_bytes(binary)


def echo_overhead(home: Path, calls: int) -> dict[str, Any]:
    rt = WasmRuntime(None)
    try:
        host = ToolHost(home, runtime=rt)
        loaded = host.tool("echo").loaded
        whole = timed(lambda: host.run("echo", '{"text": "hi"}'), calls)
        bare = timed(lambda: rt.execute(loaded, '{"text": "hi"}', None, Limits(), NoHost()), calls)
    finally:
        rt.close()
    return {"toolhost_run": whole, "runtime_execute": bare, "target_p50_ms": 2.0,
            "meets_target": whole["p50_ms"] <= 2.0}


def first_call(home: Path, name: str, cache: Path) -> dict[str, float]:
    """ms of the first run on a new engine: with the cache dir empty (compile), then filled (deserialize)."""
    out = {}
    for label in ("cold_cache_ms", "warm_disk_cache_ms"):
        rt = WasmRuntime(cache)
        try:
            host = ToolHost(home, runtime=rt)
            t = time.perf_counter()
            with contextlib.suppress(Exception):  # IronClaw's tools answer {} with a failure of their own
                host.run(name, "{}")
            out[label] = round((time.perf_counter() - t) * 1000, 2)
        finally:
            rt.close()
    out["ratio_cold_to_warm"] = round(out["cold_cache_ms"] / out["warm_disk_cache_ms"], 1)
    return out


def fuel_overhead(iterations: int, repeat: int) -> dict[str, Any]:
    cpu = (WAT / "cpu.wat").read_text()
    res: dict[str, Any] = {"iterations": iterations}
    for label, fuel in (("with_fuel", True), ("no_fuel", False)):
        rt = WasmRuntime(None, fuel=fuel)
        try:
            loaded = rt.load(cpu)
            limits = Limits(fuel=10**15, timeout_s=600)
            res[label] = timed(lambda rt=rt, loaded=loaded, limits=limits:  # type: ignore[misc]
                               rt.execute(loaded, str(iterations), None, limits, NoHost()), repeat, warmup=1)
            if fuel:
                res["fuel_per_call"] = rt.execute(loaded, str(iterations), None, limits, NoHost())[1]
        finally:
            rt.close()
    res["ratio_fuel_to_no_fuel"] = round(res["with_fuel"]["p50_ms"] / res["no_fuel"]["p50_ms"], 3)
    return res


def run(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-wasm-") as tmp:
        home = Path(tmp) / "home"
        install(home, "echo", (WAT / "echo.wat").read_bytes())
        report: dict[str, Any] = {"benchmark": "wasm_tools", "wasmtime": WASMTIME_VERSION,
                                  "echo": echo_overhead(home, a.calls)}
        firsts = {"echo": first_call(home, "echo", Path(tmp) / "cache-echo")}
        if IRONCLAW_GITHUB.exists():
            install(home, "github", IRONCLAW_GITHUB.read_bytes())
            firsts["ironclaw_github_v0.3.0"] = first_call(home, "github", Path(tmp) / "cache-gh")
        report["first_call"] = firsts
        report["fuel"] = fuel_overhead(a.iterations, a.fuel_repeat)
    report["machine"] = machine.machine_info()
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="Result directory.")
    p.add_argument("--calls", type=int, default=1000, help="Timed echo calls (default 1000).")
    p.add_argument("--iterations", type=int, default=50_000_000, help="Loop iterations of the CPU-bound tool.")
    p.add_argument("--fuel-repeat", type=int, default=5, help="Timed CPU-bound calls per engine (default 5).")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    machine.write_report(a.out, "wasm_tools", run(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
