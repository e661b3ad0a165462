"""The tool host on a real ClawFS mount: `clawfs tool install/list/run` through the mounted agent home, a tool
reading the workspace under its prefix, and `secret-exists` answered from `secrets/` (a name whose value the
mount will not let anyone read back)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faults import clawfs
from helpers import StoreFixture
from wasm.support import install, wat

pytestmark = pytest.mark.fuse


def test_tools_on_a_mount(mounted: tuple[StoreFixture, Path], tmp_path: Path) -> None:
    _store, mnt = mounted
    env = {"CLAWFS_WASM_CACHE": str(tmp_path / "cache")}
    src = tmp_path / "echo"
    src.mkdir()
    (src / "tool.wasm").write_text(wat("echo"))
    proc = clawfs("tool", "install", str(mnt), str(src), env_extra=env)
    assert proc.returncode == 0, proc.stderr
    (mnt / "notes").mkdir()
    (mnt / "notes" / "plan.json").write_text('{"deadline": "friday"}')
    install(mnt, "ws", wat("workspace"), {"workspace": {"allowed_prefixes": ["notes/"]}})
    (mnt / "secrets").mkdir(exist_ok=True)
    (mnt / "secrets" / "slack_token").write_text("xoxb-not-readable-back")
    install(mnt, "sec", wat("secret"), {"secrets": {"allowed_names": ["slack_*"]}})

    rows = json.loads(clawfs("tool", "list", str(mnt), "--json", env_extra=env).stdout)
    assert [r["name"] for r in rows] == ["echo", "sec", "ws"]
    proc = clawfs("tool", "run", str(mnt), "echo", "--params", '{"a": 1}', "--json", env_extra=env)
    assert json.loads(proc.stdout)["output"] == {"a": 1}
    proc = clawfs("tool", "run", str(mnt), "ws", "--params", '"notes/plan.json"', env_extra=env)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"deadline": "friday"}
    proc = clawfs("tool", "run", str(mnt), "sec", "--params", '"slack_token"', env_extra=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "true"
