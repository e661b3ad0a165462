"""The runtime's own state in `.agent/` of the home (the one folder of it the jailed runtime may write besides
memory, conversations, daily logs and channels):

    .agent/answered.jsonl   one line per answered message (channel, Message-ID, reply's Message-ID, when)
    .agent/routines.json    each routine's next fire time, last fire, runs, the message of the run in flight
    .agent/status.json      liveness: pid, started, updated (refreshed while running), last turn, queue depth
    .agent/compacted.json   per thread, how many history lines were written to daily/ and left out of context

JSON files are replaced whole (a temporary file renamed over, fsynced but for status.json, which a crash may
lose), kept in memory and read again only when their stat changes (agent/cache.py); the answered log is
append-only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from .cache import FileCache, stat_key
from .home import STATE_DIR
from .tools.memory import atomic_write


class State:
    def __init__(self, home: Path) -> None:
        self.dir = home / STATE_DIR
        self.dir.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._answered: set[tuple[str, str]] | None = None
        self._files: FileCache[bytes] = FileCache(bytes, max_entries=32)

    # -- answered -------------------------------------------------------------------------------------------
    def _load_answered(self) -> set[tuple[str, str]]:
        if self._answered is None:
            found: set[tuple[str, str]] = set()
            path = self.dir / "answered.jsonl"
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    try:
                        rec = json.loads(line)
                        found.add((rec["channel"], rec["message_id"]))
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line after a crash: the record is redone
            self._answered = found
        return self._answered

    def answered(self, channel: str, msgid: str) -> bool:
        with self._lock:
            return (channel, msgid) in self._load_answered()

    def record_answer(self, channel: str, msgid: str, reply_id: str | None, status: str) -> None:
        line = json.dumps({"channel": channel, "message_id": msgid, "reply_id": reply_id, "status": status,
                           "at": time.time()}) + "\n"
        with self._lock:
            self._load_answered()
            with open(self.dir / "answered.jsonl", "a") as f:
                f.write(line)
            assert self._answered is not None
            self._answered.add((channel, msgid))

    # -- JSON documents ---------------------------------------------------------------------------------------
    def read(self, name: str) -> dict[str, Any]:
        """A fresh dict (the caller may change it); the file itself is read only when its stat changed."""
        try:
            data = json.loads(self._files.get(self.dir / name))
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, name: str, data: dict[str, Any], durable: bool = True) -> None:
        path = self.dir / name
        raw = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
        with self._lock:
            atomic_write(path, raw, durable)
            try:
                self._files.put(path, stat_key(os.stat(path)), raw)  # what was written: no read back
            except OSError:
                self._files.forget(path)


def read_status(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / STATE_DIR / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
