"""agent/tools/wasm.py: installed WASM tools offered to the LLM through the registry, with their own
description() and schema(), and called through the tool host."""

from __future__ import annotations

from pathlib import Path

import pytest
from wasm.support import install, wat

from agent.tools.registry import Registry, ToolError, optional_providers


def test_installed_tools_reach_the_registry(tmp_path: Path) -> None:
    install(tmp_path, "echo", wat("echo"))
    install(tmp_path, "panic", wat("panic"))
    install(tmp_path, "broken", wat("echo"), {"htp": {}})
    registry = Registry(optional_providers(tmp_path))
    tools = registry.tools()
    assert {"echo", "panic"} <= set(tools) and "broken" not in tools
    schema = next(s["function"] for s in registry.schemas() if s["function"]["name"] == "echo")
    assert schema["description"] == "Echoes its parameters."
    assert schema["parameters"]["properties"]["text"] == {"type": "string"}
    assert registry.call("echo", '{"text": "hi"}') == '{"text": "hi"}'
    with pytest.raises(ToolError, match="panic: trap") as e:
        registry.call("panic", "{}")
    assert e.value.kind == "failed"


def test_a_tool_installed_later_joins(tmp_path: Path) -> None:
    registry = Registry(optional_providers(tmp_path))
    assert "echo" not in registry.tools()
    install(tmp_path, "echo", wat("echo"))
    assert "echo" in registry.tools()


def test_leaking_output_is_refused(tmp_path: Path) -> None:
    install(tmp_path, "leak", wat("leak"))
    with pytest.raises(ToolError, match="withheld") as e:
        Registry(optional_providers(tmp_path)).call("leak", "{}")
    assert e.value.kind == "refused" and "ghp_" not in str(e.value)
