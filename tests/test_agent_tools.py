"""Unit tests of the tool registry and the built-in memory tools on a plain directory (the mount-level behaviour,
search included, is in tests/test_agent_mount.py): argument checks, refused paths, appends and whole-file
replaces, pluggable providers."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from agent.tools.memory import MemoryRead, MemoryTools, MemoryTree, MemoryWrite
from agent.tools.registry import Registry, Tool, ToolError


def registry(home: Path) -> Registry:
    return Registry([MemoryTools(home)])


def test_schemas_carry_ironclaw_names_and_parameters(tmp_path: Path) -> None:
    schemas = {s["function"]["name"]: s["function"]["parameters"] for s in registry(tmp_path).schemas()}
    assert set(schemas) == {"memory_search", "memory_read", "memory_write", "memory_tree"}
    assert schemas["memory_search"]["required"] == ["query"]
    assert set(schemas["memory_write"]["properties"]) >= {"content", "target", "append", "old_string", "new_string"}
    assert set(schemas["memory_read"]["properties"]) == {"path", "version", "list_versions"}
    assert set(schemas["memory_tree"]["properties"]) == {"path", "depth"}


@pytest.mark.parametrize("name,args,kind", [
    ("nope", "{}", "unknown_tool"),
    ("memory_read", "{not json", "bad_arguments"),
    ("memory_read", "[1, 2]", "bad_arguments"),
    ("memory_read", "{}", "bad_arguments"),
    ("memory_read", '{"path": 3}', "bad_arguments"),
    ("memory_tree", '{"depth": 11}', "bad_arguments"),
    ("memory_search", '{"query": "x", "limit": true}', "bad_arguments"),
    ("memory_read", '{"path": "/etc/passwd"}', "refused"),
    ("memory_read", '{"path": "notes/../../x"}', "refused"),
    ("memory_read", '{"path": "secrets/openai_api_key"}', "refused"),
    ("memory_write", '{"content": "x", "target": "settings/llm.toml"}', "refused"),
    ("memory_write", '{"content": "x", "target": "tools/evil/tool.wasm"}', "refused"),
    ("memory_write", '{"content": "x", "target": ".agent/answered"}', "refused"),
    ("memory_read", '{"path": "missing.md"}', "failed"),
])
def test_bad_calls_raise_typed_errors(tmp_path: Path, name: str, args: str, kind: str) -> None:
    with pytest.raises(ToolError) as e:
        registry(tmp_path).call(name, args)
    assert e.value.kind == kind, str(e.value)
    assert str(e.value)


def test_write_appends_to_the_daily_log_and_replaces_whole_files(tmp_path: Path) -> None:
    w = MemoryWrite(tmp_path, today=lambda: dt.date(2026, 3, 1))
    w.call({"content": "first"})
    w.call({"content": "second\n"})
    assert (tmp_path / "daily/2026-03-01.md").read_text() == "first\nsecond\n"
    w.call({"content": "# Memory\nAda likes tea.\n", "target": "memory", "append": False})
    assert (tmp_path / "MEMORY.md").read_text() == "# Memory\nAda likes tea.\n"
    w.call({"content": "", "target": "memory", "old_string": "tea", "new_string": "coffee"})
    assert (tmp_path / "MEMORY.md").read_text() == "# Memory\nAda likes coffee.\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file left"
    read = MemoryRead(tmp_path).call({"path": "MEMORY.md"})
    assert "coffee" in read


def test_versions_and_tree(tmp_path: Path) -> None:
    (tmp_path / ".versions/MEMORY.md").mkdir(parents=True)
    (tmp_path / ".versions/MEMORY.md/1.md").write_text("old one")
    (tmp_path / ".versions/MEMORY.md/2.md").write_text("old two")
    (tmp_path / "MEMORY.md").write_text("now")
    (tmp_path / "notes/deep").mkdir(parents=True)
    (tmp_path / "notes/deep/a.md").write_text("a")
    r = MemoryRead(tmp_path)
    assert json.loads(r.call({"path": "MEMORY.md", "list_versions": True}))["versions"] == ["1.md", "2.md"]
    assert r.call({"path": "MEMORY.md", "version": 1}) == "old one"
    t = MemoryTree(tmp_path)
    assert t.call({}) == "MEMORY.md\nnotes/"
    assert t.call({"path": "notes", "depth": 2}) == "deep/\n  a.md"


class Echo:
    name = "echo"
    description = "echo"
    parameters: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                                  "additionalProperties": False}

    def call(self, args: dict[str, Any]) -> str:
        return str(args["text"])


class Crashing(Echo):
    name = "crash"

    def call(self, args: dict[str, Any]) -> str:
        raise RuntimeError("boom")


class Provider:
    def tools(self) -> Iterable[Tool]:
        return [Echo(), Crashing()]


def test_providers_plug_in_and_a_crashing_tool_is_a_tool_error(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.add_provider(Provider())
    assert reg.call("echo", '{"text": "hi"}') == "hi"
    with pytest.raises(ToolError) as e:
        reg.call("echo", '{"text": "hi", "x": 1}')
    assert e.value.kind == "bad_arguments"
    with pytest.raises(ToolError) as e:
        reg.call("crash", '{"text": "hi"}')
    assert e.value.kind == "failed" and "boom" in str(e.value)
