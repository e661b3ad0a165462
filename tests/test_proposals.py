"""The agent's proposals (sandbox/proposals.py) and the owner's approvals (`clawfs tool approve`, `clawfs policy
approve`) on a plain home folder: the capability diff of a new and of a changed tool and of network.toml, a
malformed or symlinked proposal listed as invalid and never applied, what is installed being what was shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faults import assert_user_error, clawfs
from wasm.support import install, wat

from sandbox import proposals

WEATHER: dict[str, object] = {
    "http": {"allowlist": [{"host": "api.weather.test", "path_prefix": "/v1", "methods": ["GET"]}],
             "credentials": {"w": {"secret_name": "weather_key", "location": {"type": "bearer"},
                                   "host_patterns": ["api.weather.test"]}}}}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    (h / "settings").mkdir(parents=True)
    return h


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CLAWFS_WASM_CACHE": str(tmp_path / "cache")}


def propose(home: Path, name: str, wasm: str | bytes, caps: dict[str, object] | str | None) -> Path:
    d = home / "proposals" / "tools" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "tool.wasm").write_bytes(wasm.encode() if isinstance(wasm, str) else wasm)
    if caps is not None:
        (d / "capabilities.json").write_text(caps if isinstance(caps, str) else json.dumps(caps))
    return d


def test_nothing_pending(home: Path) -> None:
    assert proposals.pending(home) == []
    assert proposals.tool_proposal(home, "weather") is None
    assert proposals.network_proposal(home) is None


def test_a_new_tool_shows_its_whole_capability(home: Path) -> None:
    propose(home, "weather", wat("echo"), WEATHER)
    [p] = proposals.pending(home)
    s = p.summary()
    assert s["kind"] == "tool" and s["change"] == "new" and s["valid"] and s["widens"]
    assert s["diff"] == {
        "credentials": {"added": ["weather_key as bearer to api.weather.test"], "removed": []},
        "hosts": {"added": ["api.weather.test"], "removed": []},
        "methods": {"added": ["GET api.weather.test/v1"], "removed": []},
        "paths": {"added": ["api.weather.test/v1"], "removed": []}}


def test_a_changed_tool_shows_what_is_added_and_removed(home: Path) -> None:
    install(home, "weather", wat("echo"), WEATHER)
    changed: dict[str, object] = {
        "http": {"allowlist": [{"host": "api.weather.test", "path_prefix": "/v1", "methods": ["GET", "POST"]},
                               {"host": "evil.test"}],
                 "credentials": {"w": {"secret_name": "weather_key", "location": {"type": "bearer"},
                                       "host_patterns": ["evil.test"]}}},
        "secrets": {"allowed_names": ["github_*"]}}
    propose(home, "weather", wat("echo"), changed)
    p = proposals.tool_proposal(home, "weather")
    assert p is not None and p.installed and not p.wasm_changed
    assert p.diff == {
        "credentials": {"added": ["weather_key as bearer to evil.test"],
                        "removed": ["weather_key as bearer to api.weather.test"]},
        "hosts": {"added": ["evil.test"], "removed": []},
        "methods": {"added": ["ANY evil.test/", "POST api.weather.test/v1"], "removed": []},
        "paths": {"added": ["evil.test/"], "removed": []},
        "secrets": {"added": ["github_*"], "removed": []}}
    # the same capabilities with another binary: no change in reach, the binary flagged
    propose(home, "weather", wat("loop"), WEATHER)
    p = proposals.tool_proposal(home, "weather")
    assert p is not None and p.diff == {} and p.wasm_changed and not p.summary()["widens"]


@pytest.mark.parametrize(("caps", "reason"), [
    ('{"htp": {}}', "unknown field"),
    ("not json", "not JSON"),
    ({"http": {"allowlist": [{"host": "a/b"}]}}, "is not a host name"),
])
def test_a_malformed_tool_proposal_is_invalid(home: Path, caps: dict[str, object] | str, reason: str) -> None:
    propose(home, "bad", wat("echo"), caps)
    [p] = proposals.pending(home)
    assert not p.valid and p.error is not None and reason in p.error


def test_a_proposal_without_wasm_or_with_a_bad_name_is_invalid(home: Path) -> None:
    (home / "proposals/tools/nowasm").mkdir(parents=True)
    (home / "proposals/tools/nowasm/capabilities.json").write_text("{}")
    (home / "proposals/tools/Bad Name").mkdir(parents=True)
    errors = {p.summary()["name"]: p.error for p in proposals.pending(home)}
    assert errors["nowasm"] is not None and "tool.wasm: missing" in errors["nowasm"]
    assert errors["Bad Name"] is not None and "not a tool name" in errors["Bad Name"]


def test_symlinks_are_never_followed(home: Path, tmp_path: Path) -> None:
    """A proposal pointing at a secret would be copied into tools/, where the agent may read it."""
    (home / "secrets").mkdir()
    (home / "secrets/github_token").write_text("ghp_secret")
    d = home / "proposals/tools/sneaky"
    d.mkdir(parents=True)
    (d / "tool.wasm").symlink_to("../../../secrets/github_token")
    (home / "proposals/tools/folder").symlink_to("../../secrets")
    os.symlink("../settings/llm.toml", home / "proposals/network.toml")
    found = {p.summary()["name"]: p for p in proposals.pending(home)}
    assert set(found) == {"sneaky", "folder", "network.toml"}
    assert all(not p.valid and p.error is not None and "symlink" in p.error for p in found.values()), \
        {k: p.error for k, p in found.items()}


def test_network_diff_and_validation(home: Path) -> None:
    (home / "settings/network.toml").write_text('[[allow]]\nhost = "api.old.test"\n\n[[allow]]\nhost = "hooks.test"\n'
                                                'methods = ["POST"]\n')
    (home / "proposals").mkdir()
    (home / "proposals/network.toml").write_text('[[allow]]\nhost = "hooks.test"\nmethods = ["post"]\n\n'
                                                 '[[allow]]\nhost = "api.new.test"\npath_prefix = "/v2"\n')
    p = proposals.network_proposal(home)
    assert p is not None and p.valid
    assert p.diff == {"hosts": {"added": ["api.new.test"], "removed": ["api.old.test"]},
                      "methods": {"added": ["ANY api.new.test/v2"], "removed": ["ANY api.old.test/"]},
                      "paths": {"added": ["api.new.test/v2"], "removed": ["api.old.test/"]}}
    for bad, reason in (('allow = "x"', "array of tables"), ("[[allow]]\nhost = 'a@b'\n", "not a host name"),
                        ("[[allow]]\nhost = 'a.test'\nport = 1\n", "unknown field"), ("[x", "not valid TOML"),
                        ("[[allow]]\nhost = 'a.test'\npath_prefix = 'v1'\n", "must be a string starting with /"),
                        ("proxy = 'x'\n", "unknown key")):
        (home / "proposals/network.toml").write_text(bad)
        p = proposals.network_proposal(home)
        assert p is not None and not p.valid and p.error is not None, bad
        assert reason in p.error, (bad, p.error)


# -- the owner's approvals, as the command line (subprocess, real wasmtime) --------------------------------------
def test_tool_approve_installs_what_was_shown_and_removes_the_proposal(home: Path, env: dict[str, str]) -> None:
    propose(home, "weather", wat("echo"), WEATHER)
    assert_user_error(clawfs("tool", "run", str(home), "weather", env_extra=env), contains="no tool")
    refused = clawfs("tool", "approve", str(home), "weather", env_extra=env)  # no terminal, no --yes
    assert_user_error(refused, contains="--yes")
    assert not (home / "tools/weather").exists()
    proc = clawfs("tool", "approve", str(home), "weather", "--yes", "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["change"] == "new" and out["proposal_removed"] and out["diff"]["hosts"]["added"] == ["api.weather.test"]
    assert (home / "tools/weather/tool.wasm").read_text() == wat("echo")
    assert json.loads((home / "tools/weather/capabilities.json").read_text()) == WEATHER
    assert not (home / "proposals/tools/weather").exists()
    run = clawfs("tool", "run", str(home), "weather", "--params", '{"text": "hi"}', env_extra=env)
    assert run.returncode == 0 and json.loads(run.stdout) == {"text": "hi"}, run.stderr
    assert_user_error(clawfs("tool", "approve", str(home), "weather", "--yes", env_extra=env),
                      contains="nothing to approve")


def test_a_changed_tool_keeps_the_owners_limits(home: Path, env: dict[str, str]) -> None:
    install(home, "weather", wat("echo"), WEATHER)
    (home / "tools/weather/limits.toml").write_text("fuel = 1000000\n")
    propose(home, "weather", wat("echo"), {"http": {"allowlist": [{"host": "api.weather.test"}]}})
    proc = clawfs("tool", "approve", str(home), "weather", "--yes", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert "- credentials: weather_key as bearer to api.weather.test" in proc.stdout
    assert (home / "tools/weather/limits.toml").read_text() == "fuel = 1000000\n"


def test_an_invalid_tool_is_refused_and_nothing_changes(home: Path, env: dict[str, str]) -> None:
    propose(home, "bad", wat("echo"), '{"htp": {}}')
    assert_user_error(clawfs("tool", "approve", str(home), "bad", "--yes", env_extra=env), contains="invalid")
    propose(home, "notwasm", b"\0asm not a component", WEATHER)
    assert_user_error(clawfs("tool", "approve", str(home), "notwasm", "--yes", env_extra=env), contains="invalid")
    assert not (home / "tools").exists()
    assert (home / "proposals/tools/bad/tool.wasm").exists()


def test_policy_approve(home: Path) -> None:
    assert_user_error(clawfs("policy", "approve", str(home), "--yes"), contains="nothing to approve")
    (home / "proposals").mkdir()
    (home / "proposals/network.toml").write_text("[[allow]]\nhost = 'a@b'\n")
    assert_user_error(clawfs("policy", "approve", str(home), "--yes"), contains="invalid")
    assert not (home / "settings/network.toml").exists()
    text = '[[allow]]\nhost = "api.new.test"\n'
    (home / "proposals/network.toml").write_text(text)
    proc = clawfs("policy", "approve", str(home), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "+ hosts: api.new.test" in proc.stdout
    assert (home / "settings/network.toml").read_text() == text
    assert not (home / "proposals/network.toml").exists()


def test_status_refuses_a_folder_that_is_not_a_mount(home: Path) -> None:
    assert_user_error(clawfs("status", str(home)), contains="not a ClawFS mount")
