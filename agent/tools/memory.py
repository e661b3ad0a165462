"""IronClaw's built-in memory tools over the mounted home: `memory_search`, `memory_read`, `memory_write`,
`memory_tree` (names and parameters as `src/tools/builtin/memory.rs`).

Everything is plain file I/O under the mount.  Search is the index's own: the hidden
`.clawfs/search/<query>/.results?k=N` file of the mount (rank, score, path, snippet of each hit).  Writes are
appends or whole-file replaces (a temporary file renamed over the old one), never partial overwrites, and never
under the places the runtime must not write (settings, tools, secrets, channels, its own state).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .registry import Tool, ToolError

SEARCH_MAX = 20
READ_MAX = 200_000  # bytes of a file memory_read returns (the runtime cuts tool output further)
NOT_READABLE = ("secrets", ".clawfs", ".agent")
NOT_WRITABLE = ("settings", "tools", "secrets", "channels", ".agent", ".clawfs", ".versions", "conversations")
NOT_SEARCHED = ("channels", ".agent", "secrets", "settings")  # mail, runtime state: not memory
TARGETS = {"memory": "MEMORY.md", "heartbeat": "HEARTBEAT.md", "bootstrap": "BOOTSTRAP.md"}


def rel_path(text: str) -> str:
    """A path relative to the home, checked: IronClaw rejects paths that look like local filesystem paths."""
    if not text or "\0" in text:
        raise ToolError("bad_arguments", "the path is empty or holds a NUL byte")
    if text.startswith(("/", "~")) or "\\" in text:
        raise ToolError("refused", f"{text!r} looks like a local filesystem path; give a path inside the memory "
                                   "(e.g. notes/plan.md)")
    parts = [p for p in text.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ToolError("refused", f"{text!r} leaves the memory ('.' and '..' are not allowed)")
    return "/".join(parts)


def _top(rel: str) -> str:
    return rel.split("/", 1)[0]


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` whole: write a hidden sibling, then rename it over (readers see the old or the new).
    `durable=False` leaves out the fsync (a commit of the whole store) for what a crash may lose, e.g. the
    liveness file rewritten every second: the mount commits it within its flush interval anyway."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


SEARCH_CACHE_SECONDS = 2.0
_cache: dict[tuple[str, str, str | None], tuple[float, int, list[dict[str, Any]]]] = {}
_cache_lock = threading.Lock()


def forget_searches() -> None:
    """Drop cached search answers (after a memory write: the next search must see it once indexed)."""
    with _cache_lock:
        _cache.clear()


def search_results(home: Path, query: str, k: int, prefix: str | None = None) -> list[dict[str, Any]]:
    """The mount's own hybrid search: `.clawfs/search/<query>/.results?k=N[&path=P]`.

    An answer is reused for SEARCH_CACHE_SECONDS: a turn searches the message for its context and the model
    often searches the same words again.  The index itself lags writes by about as much (it embeds in the
    background), so the cache hides nothing a search could have found; memory_write clears it."""
    name = " ".join(query.replace("/", " ").split())
    while len(name.encode()) > 250:
        name = name[:-1]
    if not name:
        raise ToolError("bad_arguments", "the query is empty")
    key = (str(home), name, prefix)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < SEARCH_CACHE_SECONDS and hit[1] >= k:
        return hit[2][:k]
    hits = _search(home, name, k, prefix)
    with _cache_lock:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = (now, k, hits)
    return hits


def _search(home: Path, name: str, k: int, prefix: str | None) -> list[dict[str, Any]]:
    # 3k: room for the hits in places memory search leaves out
    params = f"k={min(3 * k, 1000)}" + (f"&path={urllib.parse.quote(prefix, safe='')}" if prefix else "")
    try:
        data = (home / ".clawfs" / "search" / name / f".results?{params}").read_bytes()
    except FileNotFoundError as e:
        raise ToolError("failed", "memory search is unavailable: the home is mounted without its index "
                                  "(mount it without `noindex`)") from e
    hits: list[dict[str, Any]] = [h for h in json.loads(data)
                                  if str(h.get("path", "")).split("/", 1)[0] not in NOT_SEARCHED]
    return hits[:k]


def _object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A tool's parameters: a JSON schema of type object (IronClaw's shape)."""
    return {"type": "object", "properties": properties, "required": required}


class _HomeTool:
    """A tool over the files of one mounted home."""

    def __init__(self, home: Path) -> None:
        self.home = home


class MemorySearch(_HomeTool):
    name = "memory_search"
    description = ("Search the agent's memory (notes, daily logs, past conversations) by meaning and words. "
                   "Returns each hit's path, score and matching text.")
    parameters = _object_schema({"query": {"type": "string", "description": "What to look for."},
                                 "limit": {"type": "integer", "minimum": 1, "maximum": SEARCH_MAX, "default": 5},
                                 "reasoning": {"type": "string", "description": "Why (logged only)."}},
                                required=["query"])

    def call(self, args: dict[str, Any]) -> str:
        hits = search_results(self.home, args["query"], int(args.get("limit", 5)))
        if not hits:
            return "No matches."
        return json.dumps([{"path": h["path"], "score": round(float(h["score"]), 4), "text": h.get("snippet", "")}
                           for h in hits], ensure_ascii=False, indent=1)


class MemoryRead(_HomeTool):
    name = "memory_read"
    description = "Read a file of the agent's memory, or one of its earlier versions."
    parameters = _object_schema({"path": {"type": "string"},
                                 "version": {"type": "integer", "minimum": 1},
                                 "list_versions": {"type": "boolean", "default": False}},
                                required=["path"])

    def call(self, args: dict[str, Any]) -> str:
        rel = rel_path(args["path"])
        if _top(rel) in NOT_READABLE:
            raise ToolError("refused", f"{rel} is not memory the agent may read")
        vdir = self.home / ".versions" / rel
        if args.get("list_versions"):
            versions = sorted((p.name for p in vdir.iterdir()), key=_version_key) if vdir.is_dir() else []
            return json.dumps({"path": rel, "versions": versions})
        target = self.home / rel
        if (version := args.get("version")) is not None:
            found = [p for p in (vdir.iterdir() if vdir.is_dir() else []) if p.name.split(".")[0] == str(version)]
            if not found:
                raise ToolError("failed", f"{rel} has no version {version}")
            target = found[0]
        try:
            with open(target, "rb") as f:
                data = f.read(READ_MAX + 1)
        except FileNotFoundError as e:
            raise ToolError("failed", f"{rel} does not exist") from e
        except IsADirectoryError as e:
            raise ToolError("failed", f"{rel} is a directory; use memory_tree") from e
        text = data[:READ_MAX].decode("utf-8", "replace")
        return text + (f"\n[... cut at {READ_MAX} bytes]" if len(data) > READ_MAX else "")


def _version_key(name: str) -> tuple[int, str]:
    head = name.split(".")[0]
    return (int(head) if head.isdigit() else 1 << 30, name)


class MemoryWrite(_HomeTool):
    name = "memory_write"
    description = ("Write to the agent's memory: append to (default) or replace a file. target is 'daily_log' "
                   "(today's log, default), 'memory' (MEMORY.md), 'heartbeat', 'bootstrap', or a path.")
    parameters = _object_schema({"content": {"type": "string"},
                                 "target": {"type": "string", "default": "daily_log"},
                                 "append": {"type": "boolean", "default": True},
                                 "old_string": {"type": "string"},
                                 "new_string": {"type": "string"},
                                 "replace_all": {"type": "boolean", "default": False},
                                 "layer": {"type": "string"}, "force": {"type": "boolean"},
                                 "metadata": {"type": "object"}},
                                required=["content"])

    def __init__(self, home: Path, today: Any = None) -> None:
        super().__init__(home)
        self._today = today or dt.date.today

    def target(self, target: str) -> str:
        if target == "daily_log":
            return f"daily/{self._today().isoformat()}.md"
        rel = TARGETS.get(target) or rel_path(target)
        if _top(rel) in NOT_WRITABLE or rel.startswith("."):
            raise ToolError("refused", f"{rel} is not writable memory (settings, tools, secrets, channels, "
                                       "conversations and hidden files are not)")
        return rel

    def call(self, args: dict[str, Any]) -> str:
        rel = self.target(str(args.get("target", "daily_log")))
        path = self.home / rel
        forget_searches()
        content: str = args["content"]
        if "old_string" in args:
            return self._patch(rel, path, args)
        if args.get("append", True):
            path.parent.mkdir(parents=True, exist_ok=True)
            prefix = b"\n" if path.exists() and path.stat().st_size and not _ends_with_newline(path) else b""
            with open(path, "ab") as f:
                f.write(prefix + content.encode() + (b"" if content.endswith("\n") else b"\n"))
            return f"appended {len(content.encode())} bytes to {rel}"
        atomic_write(path, content.encode())
        return f"wrote {rel} ({len(content.encode())} bytes)"

    def _patch(self, rel: str, path: Path, args: dict[str, Any]) -> str:
        old, new = str(args["old_string"]), str(args.get("new_string", ""))
        try:
            text = path.read_text()
        except FileNotFoundError as e:
            raise ToolError("failed", f"{rel} does not exist") from e
        count = text.count(old) if old else 0
        if count == 0:
            raise ToolError("failed", f"old_string was not found in {rel}")
        if count > 1 and not args.get("replace_all"):
            raise ToolError("failed", f"old_string occurs {count} times in {rel}; pass replace_all or more context")
        atomic_write(path, text.replace(old, new, -1 if args.get("replace_all") else 1).encode())
        return f"replaced {count if args.get('replace_all') else 1} occurrence(s) in {rel}"


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class MemoryTree(_HomeTool):
    name = "memory_tree"
    description = "List the files and folders of the agent's memory, to a depth."
    parameters = _object_schema({"path": {"type": "string", "default": ""},
                                 "depth": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1}},
                                required=[])
    MAX_ENTRIES = 2000

    def call(self, args: dict[str, Any]) -> str:
        raw = str(args.get("path", "") or "")
        rel = rel_path(raw) if raw.strip("/") else ""
        root = self.home / rel if rel else self.home
        if not root.is_dir():
            raise ToolError("failed", f"{rel or '/'} is not a folder")
        lines: list[str] = []
        self._walk(root, "", int(args.get("depth", 1)), lines)
        return "\n".join(lines) if lines else "(empty)"

    def _walk(self, d: Path, indent: str, depth: int, lines: list[str]) -> None:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            if entry.name.startswith(".") or len(lines) >= self.MAX_ENTRIES:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            lines.append(f"{indent}{entry.name}{'/' if is_dir else ''}")
            if is_dir and depth > 1:
                self._walk(Path(entry.path), indent + "  ", depth - 1, lines)


class MemoryTools:
    """The provider of the four built-in tools for one home."""

    def __init__(self, home: Path) -> None:
        self._tools: list[Tool] = [MemorySearch(home), MemoryRead(home), MemoryWrite(home), MemoryTree(home)]

    def tools(self) -> Iterable[Tool]:
        return self._tools
