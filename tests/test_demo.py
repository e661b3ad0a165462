"""`make demo` end to end (its main job: mkfs, mount with the agent's uid, look around, search, chat with the
jailed runtime through the scripted stand-in LLM, unmount, fsck), run in a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel import jailcheck

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.fuse
@pytest.mark.jail
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not all(layer.ok for layer in jailcheck.layers()),
                    reason="the demo's agent runs in the real jail: needs root and every jail layer")
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "mountd.demo"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "From my memory (memory/projects/analytical-engine-grant.md)" in out, out[-3000:]
    assert "Noted: appended" in out and ": clean," in out, out[-3000:]
    # a second run keeps the first run's store (moved aside, said so), never replaces it silently
    again = subprocess.run([sys.executable, "-m", "mountd.demo"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("demo.")]
    assert len(kept) == 1 and (kept[0] / "agent.claw").exists(), sorted(p.name for p in tmp_path.iterdir())
