"""The WASM tool provider: every tool installed under the home's `tools/` offered to the LLM with its own
description() and schema(), run by the tool host (sandbox/toolhost.py) when the model calls it.

Looked at every turn (a tool the owner installs joins at the next one; tools/ is listed again only when it
changed); compiled components stay cached in the host for the life of the runtime (and on disk under
$CLAWFS_WASM_CACHE when set).  A tool that cannot load is left out with a warning, never fatal to the turn.
Imports nothing of clawfs: only sandbox/.

Jailed (`clawfs agent run`): with $CLAWFS_TOOLS_FD set, a call goes to the tool broker outside the jail
(mountd/toolbroker.py), which runs it in the tool's own jailed worker, whose HTTP the daemon's proxy serves
under that tool's lease; the host here then only asks description() and schema(), with no network at all
(`NoEgress`).  Without it (tests, `clawfs tool run`), the in-process host runs the call.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sandbox.errors import ToolError as HostError
from sandbox.toolhost import TOOL_NAME, WASM_NAME, NoEgress, ToolHost
from sandbox.toolworker import BrokerClient

from ..cache import DirCache
from .registry import Tool, ToolError

log = logging.getLogger(__name__)


class WasmTool:
    """One installed tool, as the registry sees it."""

    def __init__(self, host: ToolHost, name: str, description: str, parameters: dict[str, Any],
                 broker: BrokerClient | None = None) -> None:
        self.host = host
        self.broker = broker
        self.name = name
        self.description = description
        self.parameters = parameters

    def call(self, args: dict[str, Any]) -> str:
        try:
            params = json.dumps(args)
            out = self.broker.call(self.name, params) if self.broker else self.host.run(self.name, params)
        except HostError as e:
            message = f"{self.name}: {e.kind}: {e.reason}"
            if e.kind in ("blocked", "capabilities"):
                raise ToolError("refused", message) from None
            raise ToolError("failed", message) from None
        for level, message in out.logs:
            log.debug("tool %s: %s: %s", self.name, level, message)
        return out.output


class WasmTools:
    """The provider: one tool host for the home."""

    def __init__(self, home: Path) -> None:
        cache = os.environ.get("CLAWFS_WASM_CACHE")
        self.broker = BrokerClient.from_env()
        self.host = ToolHost(home, cache_dir=Path(cache) if cache else None,
                             gateway=NoEgress() if self.broker else None)
        self._dirs = DirCache()

    def _names(self) -> list[str]:
        """host.names() without listing tools/ at every turn: listed again when tools/ changes (an install
        creates or renames a folder in it); each tool's tool.wasm is still looked at (a stat: no round trip)."""
        root = self.host.tools_dir
        try:
            names = self._dirs.names(root)
        except OSError:
            return []
        return [n for n in names if TOOL_NAME.match(n) and os.path.isfile(root / n / WASM_NAME)]

    def tools(self) -> Iterable[Tool]:
        found: list[Tool] = []
        for name in self._names():
            try:
                tool = self.host.tool(name)
                description, schema = self.host.texts(tool)
            except HostError as e:
                log.warning("tool %s is not offered: %s: %s", name, e.kind, e.reason)
                continue
            found.append(WasmTool(self.host, name, description, _object_schema(schema), self.broker))
        return found


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Function parameters must be an object schema; IronClaw's tools' schemas (oneOf of objects) say so."""
    return schema if "type" in schema else {"type": "object", **schema}


def provider(home: Path) -> WasmTools:
    return WasmTools(home)
