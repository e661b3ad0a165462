"""The tool registry: what the LLM may call this turn, as OpenAI function schemas, and the call itself.

A `Tool` has IronClaw's shape (name, description, JSON-schema parameters) and a `call(args) -> str` that raises
`ToolError` for anything the model should be told (bad arguments, a refused path, a failed run).  Tools come
from providers: the built-in memory tools, and any provider module named in `OPTIONAL_PROVIDERS` (e.g. the WASM
tool host's, which lists the tools installed under `tools/`).  Providers are asked for their tools at every
turn, so a tool installed while the runtime runs joins at the next turn.

To plug a provider in: write a module with `provider(home: pathlib.Path) -> ToolProvider` and add its dotted
name to `OPTIONAL_PROVIDERS` (a missing module is skipped: the runtime works without it).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

log = logging.getLogger(__name__)

OPTIONAL_PROVIDERS: tuple[str, ...] = ("agent.tools.wasm",)

ErrorKind = Literal["unknown_tool", "bad_arguments", "refused", "failed"]


class ToolError(Exception):
    """A tool call the model is told about (never a crash of the runtime): `kind` says which."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema of type "object"

    def call(self, args: dict[str, Any]) -> str: ...


class ToolProvider(Protocol):
    def tools(self) -> Iterable[Tool]: ...


ProviderFactory = Callable[[Path], ToolProvider]


class Registry:
    """The tools of one home, from its providers (the first provider to name a tool wins: built-ins first)."""

    def __init__(self, providers: Iterable[ToolProvider] = ()) -> None:
        self._providers: list[ToolProvider] = list(providers)

    def add_provider(self, provider: ToolProvider) -> None:
        self._providers.append(provider)

    def tools(self) -> dict[str, Tool]:
        found: dict[str, Tool] = {}
        for provider in self._providers:
            try:
                for tool in provider.tools():
                    found.setdefault(tool.name, tool)
            except Exception as e:  # a broken provider costs its own tools, not the turn
                log.warning("tool provider %s failed to list its tools: %s", type(provider).__name__, e)
        return found

    def schemas(self, tools: dict[str, Tool] | None = None) -> list[dict[str, Any]]:
        """The OpenAI `tools` array."""
        return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}}
                for t in (tools if tools is not None else self.tools()).values()]

    def call(self, name: str, arguments: str | dict[str, Any], tools: dict[str, Tool] | None = None) -> str:
        """Run tool `name` with `arguments` (the model's JSON text, or already parsed), checked against its
        schema first.  Raises ToolError."""
        tool = (tools if tools is not None else self.tools()).get(name)
        if tool is None:
            raise ToolError("unknown_tool", f"there is no tool named {name!r}")
        args = parse_arguments(arguments)
        check_arguments(tool.parameters, args)
        try:
            return tool.call(args)
        except ToolError:
            raise
        except Exception as e:  # a tool's own bug is reported to the model and logged, never fatal
            log.exception("tool %s crashed", name)
            raise ToolError("failed", f"{name} failed: {type(e).__name__}: {e}") from e


def parse_arguments(arguments: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError as e:
        raise ToolError("bad_arguments", f"the arguments are not valid JSON ({e.msg} at {e.pos})") from e
    if not isinstance(args, dict):
        raise ToolError("bad_arguments", "the arguments must be a JSON object")
    return args


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                       "boolean": (bool,), "object": (dict,), "array": (list,)}


def check_arguments(schema: dict[str, Any], args: dict[str, Any]) -> None:
    """The subset of JSON schema tool parameters use: required names, unknown names (when additionalProperties
    is false), each property's type, enum, minimum and maximum."""
    props: dict[str, Any] = schema.get("properties", {})
    missing = [r for r in schema.get("required", []) if r not in args]
    if missing:
        raise ToolError("bad_arguments", f"missing required argument(s): {', '.join(missing)}")
    if schema.get("additionalProperties") is False and (extra := sorted(set(args) - set(props))):
        raise ToolError("bad_arguments", f"unknown argument(s): {', '.join(extra)}")
    for key, value in args.items():
        spec = props.get(key)
        if spec is not None:
            _check_value(key, spec, value)


def _check_value(key: str, spec: dict[str, Any], value: Any) -> None:
    kind = spec.get("type")
    if isinstance(kind, str) and kind in _TYPES:
        ok = isinstance(value, _TYPES[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            raise ToolError("bad_arguments", f"argument {key!r} must be of type {kind}, not {type(value).__name__}")
    if "enum" in spec and value not in spec["enum"]:
        raise ToolError("bad_arguments", f"argument {key!r} must be one of {spec['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in spec and value < spec["minimum"]:
            raise ToolError("bad_arguments", f"argument {key!r} must be at least {spec['minimum']}")
        if "maximum" in spec and value > spec["maximum"]:
            raise ToolError("bad_arguments", f"argument {key!r} must be at most {spec['maximum']}")


def optional_providers(home: Path) -> list[ToolProvider]:
    """The providers of OPTIONAL_PROVIDERS that are installed, made for `home`."""
    found = []
    for name in OPTIONAL_PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                log.warning("tool provider %s cannot load: %s", name, e)
            continue
        factory: ProviderFactory = module.provider
        try:
            found.append(factory(home))
        except Exception as e:
            log.warning("tool provider %s is off: %s", name, e)
    return found
