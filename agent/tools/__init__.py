"""The agent's tools: the registry (`registry.py`), the built-in memory tools (`memory.py`), and providers that
plug more tools in (WASM tools from `tools/`, by the tool host)."""
