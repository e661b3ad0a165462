#!/usr/bin/env python3
"""How long does unsealing a TPM key slot take?  (A benchmark, not a test.)

Starts a swtpm simulator with a fresh state directory (the same way the tests do, through ``tests/swtpm.py``),
seals a 32-byte key with ``kernel.tpm.seal`` and times ``kernel.tpm.unseal`` ``--repeat`` times (default 50)
after ``--warmup`` untimed calls.  Each call is what a mount pays: open the TCTI connection, recreate the ECC
P-256 primary, load the sealed object, run the policy session (salted, parameter-encrypted), unseal, flush.

The headline figures are for the default slot (PCR 7, no PIN); ``variants`` adds a PCR 7 + PIN slot and a slot
without PCRs.  ``tpm2_pytss_first_import_ms`` is the one-off cost of loading tpm2-pytss in a new process.

Output: ``OUT/tpm_unseal.json`` (median, p95, min in milliseconds) and the same JSON on stdout.  A real TPM is
much slower than the simulator (primary key creation alone takes tens to hundreds of ms on hardware); measure
one with ``--tcti device:/dev/tpmrm0``.

    .venv/bin/python -m bench.tpm_unseal              # from the repository root
    .venv/bin/python -m bench.tpm_unseal --repeat 200 --out /tmp/results
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import machine
from kernel import tpm
from tests.swtpm import have_swtpm, running_swtpm

REPO = Path(__file__).resolve().parent.parent

VARIANTS: dict[str, dict[str, Any]] = {
    "pcr7": {"pcrs": [7], "pin": None},
    "pcr7_pin": {"pcrs": [7], "pin": b"bench-pin"},
    "no_pcrs": {"pcrs": [], "pin": None},
}


def summary(seconds: list[float]) -> dict[str, float | int]:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[max(0, math.ceil(0.95 * len(ms)) - 1)]  # nearest-rank percentile
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3), "p95_ms": round(p95, 3),
            "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}


def time_unseal(tcti: str, pcrs: list[int], pin: bytes | None, repeat: int, warmup: int) -> dict[str, Any]:
    key = secrets.token_bytes(32)
    sealed = tpm.seal(key, pcrs=pcrs, pin=pin, tcti=tcti)
    for _ in range(warmup):
        assert tpm.unseal(sealed, pin=pin, tcti=tcti) == key
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = tpm.unseal(sealed, pin=pin, tcti=tcti)
        times.append(time.perf_counter() - t0)
        assert got == key
    return summary(times)


def first_import_ms(runs: int = 3) -> float:
    """Median time a new process spends loading tpm2-pytss (libtss2, cffi bindings) on first TPM use."""
    code = "import time; t=time.perf_counter(); from kernel import tpm; tpm._tss(); print(time.perf_counter()-t)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=REPO, env=env).stdout) for _ in range(runs)]
    return round(statistics.median(out) * 1000, 1)


@contextlib.contextmanager
def tpm_under_test(tcti: str | None) -> Iterator[str]:
    if tcti:
        yield tcti
        return
    if not have_swtpm():
        sys.exit("swtpm not installed: make setup installs it")
    with running_swtpm() as simulated:
        yield simulated


def versions() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    from importlib.metadata import PackageNotFoundError, version

    try:
        pytss = version("tpm2-pytss")
    except PackageNotFoundError:
        pytss = "?"
    return {"swtpm": out(["swtpm", "--version"]), "tpm2-pytss": pytss,
            "libtss2-esys": out(["pkg-config", "--modversion", "tss2-esys"])}


def run(a: argparse.Namespace) -> dict[str, Any]:
    with tpm_under_test(a.tcti) as tcti:
        variants = {name: time_unseal(tcti, v["pcrs"], v["pin"], a.repeat, a.warmup) for name, v in VARIANTS.items()}
    head = variants["pcr7"]
    return {
        "benchmark": "tpm_unseal",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tpm": "swtpm simulator (fresh state)" if not a.tcti else a.tcti,
        "what": "kernel.tpm.unseal of a 32-byte key sealed to PCR 7 (sha256), in-process, new TPM connection "
                "per call: connect, create ECC P-256 primary, load, salted policy session, unseal, flush",
        "median_ms": head["median_ms"], "p95_ms": head["p95_ms"], "min_ms": head["min_ms"], "n": head["n"],
        "variants": variants,
        "tpm2_pytss_first_import_ms": first_import_ms(),
        "machine": machine.machine_info(**versions()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="Result directory.")
    p.add_argument("--repeat", type=int, default=50, help="Timed unseals per variant (default 50).")
    p.add_argument("--warmup", type=int, default=3, help="Untimed unseals first (default 3).")
    p.add_argument("--tcti", help="Measure this TPM instead of a fresh swtpm (e.g. device:/dev/tpmrm0).")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    machine.write_report(a.out, "tpm_unseal", run(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
