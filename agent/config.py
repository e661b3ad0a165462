"""The runtime's settings, read from the home: `settings/agent.toml` (limits, heartbeat, polling) and
`settings/llm.toml` (the OpenAI-compatible endpoint).  Defaults are IronClaw's limits; a missing file means all
defaults, a broken one is an error that names the file and the fix."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

AGENT_TOML = """\
# The agent runtime's settings (clawfs agent run).  Defaults are IronClaw's limits.
[agent]
name = "agent"
max_tool_iterations = 50      # tool rounds per turn
repeat_warn = 3               # identical tool calls (same name and arguments) warned at ...
repeat_stop = 5               # ... and stopped at
max_tool_output_bytes = 50000 # tool output is cut here before the model sees it
compaction_ratio = 0.8        # of llm.context_tokens: older history is written to daily/ and dropped from context
memory_hits = 5               # memory search hits put into the context of each message
heartbeat_minutes = 30        # read HEARTBEAT.md this often (0: never); a HEARTBEAT_OK reply is not delivered
heartbeat_channel = "local"
poll_seconds = 0.25           # how often the inboxes are looked at
parallel_turns = 4            # turns in flight at once (one per thread at a time)
"""

LLM_TOML = """\
[llm]
base_url = "http://127.0.0.1:8080/v1"   # any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama
model = "gpt-4o-mini"
# api_key_secret = "openai_api_key"     # a file name under secrets/; the runtime sends a placeholder, never the value
context_tokens = 128000
timeout_seconds = 120
retries = 3                             # on 429, 5xx and connection errors, with exponential backoff
backoff_seconds = 1.0
"""


class ConfigError(Exception):
    """A settings file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class AgentSettings:
    name: str = "agent"
    max_tool_iterations: int = 50
    repeat_warn: int = 3
    repeat_stop: int = 5
    max_tool_output_bytes: int = 50_000
    compaction_ratio: float = 0.8
    memory_hits: int = 5
    heartbeat_minutes: float = 30.0
    heartbeat_channel: str = "local"
    poll_seconds: float = 0.25
    parallel_turns: int = 4


@dataclass(frozen=True)
class LLMSettings:
    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "gpt-4o-mini"
    api_key_secret: str | None = None
    context_tokens: int = 128_000
    timeout_seconds: float = 120.0
    retries: int = 3
    backoff_seconds: float = 1.0


def _table(path: Path, key: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML ({e}); fix it or remove it to use the defaults") from e
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return table


def _build(cls: Any, table: dict[str, Any], path: Path) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    values = {}
    for name, value in table.items():
        default = getattr(cls, name)
        want = type(default) if default is not None else str
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: {name} must be {want.__name__}, not {value!r}")
        values[name] = value
    return cls(**values)


def load_agent(home: Path) -> AgentSettings:
    path = home / "settings" / "agent.toml"
    s: AgentSettings = _build(AgentSettings, _table(path, "agent"), path)
    return s


def load_llm(home: Path) -> LLMSettings:
    path = home / "settings" / "llm.toml"
    s: LLMSettings = _build(LLMSettings, _table(path, "llm"), path)
    if not s.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: base_url must be an http(s) URL, not {s.base_url!r}")
    return s
