"""`clawfs tool list|run|check|install` as a user runs them (subprocess, real wasmtime), on a plain home folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faults import assert_user_error, clawfs
from wasm.support import IRONCLAW_SKIP, IRONCLAW_TOOLS, install, wat


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CLAWFS_WASM_CACHE": str(tmp_path / "cache")}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_run_json_ok_and_errors(home: Path, env: dict[str, str]) -> None:
    install(home, "echo", wat("echo"))
    install(home, "loop", wat("loop"))
    install(home, "panic", wat("panic"))
    proc = clawfs("tool", "run", str(home), "echo", "--params", '{"text": "hi"}', "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is True and out["output"] == {"text": "hi"} and out["error"] is None and out["ms"] > 0
    for name, kind in (("loop", "fuel"), ("panic", "trap")):
        proc = clawfs("tool", "run", str(home), name, "--json", env_extra=env)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        out = json.loads(proc.stdout)
        assert out["ok"] is False and out["error"]["kind"] == kind and out["error"]["reason"]
    install(home, "http", wat("http"))  # no capabilities: refused, and its log line is kept with the error
    out = json.loads(clawfs("tool", "run", str(home), "http", "--params", '"https://a.test/x"', "--json",
                            env_extra=env).stdout)
    assert out["error"]["kind"] == "tool" and "no HTTP capability" in out["error"]["reason"]
    assert out["logs"] == [{"level": "info", "message": "fetching"}]
    proc = clawfs("tool", "run", str(home), "echo", "--params", "[1]", env_extra=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "[1]"
    assert_user_error(clawfs("tool", "run", str(home), "panic", env_extra=env), contains="trap")
    assert_user_error(clawfs("tool", "run", str(home), "nope", env_extra=env), contains="no tool 'nope'")
    proc = clawfs("tool", "run", str(home), "echo", "--params", "{", env_extra=env)
    assert proc.returncode == 2 and "not JSON" in proc.stderr


def test_list(home: Path, env: dict[str, str]) -> None:
    install(home, "echo", wat("echo"))
    install(home, "web", wat("http"), {"http": {"allowlist": [{"host": "api.example.test", "methods": ["GET"]}]}})
    install(home, "broken", wat("echo"), {"htp": {}})
    proc = clawfs("tool", "list", str(home), "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["echo"]["wit_version"] == "0.3.0" and rows["echo"]["description"] == "Echoes its parameters."
    assert rows["web"]["capabilities"]["http"] == ["GET api.example.test/"]
    assert rows["broken"]["error"]["kind"] == "capabilities" and "htp" in rows["broken"]["error"]["reason"]
    proc = clawfs("tool", "list", str(home), env_extra=env)
    assert proc.returncode == 0 and "echo\tnear:agent@0.3.0" in proc.stdout


def test_check_and_install_folder_and_file(tmp_path: Path, home: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mytool.wasm").write_text(wat("echo"))
    (src / "mytool.capabilities.json").write_text('{"workspace": {"allowed_prefixes": ["notes/"]}}')
    proc = clawfs("tool", "check", str(src / "mytool.wasm"), "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["name"] == "mytool" and report["capabilities"]["workspace"] == ["notes/"]
    proc = clawfs("tool", "install", str(home), str(src / "mytool.wasm"), env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((home / "tools" / "mytool" / "capabilities.json").read_text())["workspace"]
    assert_user_error(clawfs("tool", "install", str(home), str(src / "mytool.wasm"), env_extra=env),
                      contains="--force")
    proc = clawfs("tool", "install", str(home), str(src / "mytool.wasm"), "--force", "--name", "other",
                  env_extra=env)
    assert proc.returncode == 0 and (home / "tools" / "other" / "tool.wasm").exists()
    assert sorted(p.name for p in (home / "tools").iterdir()) == ["mytool", "other"]  # no staging left over


def test_check_refuses_bad_tools(tmp_path: Path, env: dict[str, str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tool.wasm").write_bytes(b"\0asm\x01\0\0\0")  # a core module, not a component
    assert_user_error(clawfs("tool", "check", str(bad), env_extra=env), contains="invalid")
    (bad / "tool.wasm").write_text(wat("echo"))
    (bad / "capabilities.json").write_text('{"http": {"allowlist": [{"host": "a.test", "verbs": []}]}}')
    assert_user_error(clawfs("tool", "check", str(bad), env_extra=env), contains="http.allowlist[0].verbs")
    (bad / "capabilities.json").unlink()
    (bad / "tool.wasm").write_text(wat("echo").replace("tool@0.3.0", "tool@0.9.9"))
    assert_user_error(clawfs("tool", "check", str(bad), env_extra=env), contains="0.9.9")
    assert_user_error(clawfs("tool", "check", str(tmp_path), env_extra=env), contains="no tool.wasm")


@pytest.mark.skipif(not (IRONCLAW_TOOLS / "v0.4.1" / "slack").is_dir(), reason=IRONCLAW_SKIP)
def test_install_ironclaw_package(tmp_path: Path, home: Path, env: dict[str, str]) -> None:
    pkg = tmp_path / "slack"
    shutil.copytree(IRONCLAW_TOOLS / "v0.4.1" / "slack", pkg)
    (pkg / "wasm").mkdir()
    shutil.move(str(pkg / "slack_user_tool.wasm"), pkg / "wasm" / "slack_user_tool.wasm")  # the package layout
    proc = clawfs("tool", "install", str(home), str(pkg), "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["name"] == "slack" and report["wit_version"] == "0.4.1"
    caps = json.loads((home / "tools" / "slack" / "capabilities.json").read_text())
    assert caps["http"]["allowlist"] == [{"host": "slack.com"}]
    assert caps["http"]["credentials"]["slack_user_token@slack.com"]["location"] == {"type": "bearer"}
    proc = clawfs("tool", "list", str(home), "--json", env_extra=env)
    assert json.loads(proc.stdout)[0]["capabilities"]["credentials"] == ["slack_user_token"]
