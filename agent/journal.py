"""What every turn leaves in the home: `conversations/<channel>/<thread>.jsonl` (the layout `clawfs migrate`
writes: one JSON object per message, `id`, `role`, `content`, `created_at`) and `daily/YYYY-MM-DD.md`.
Both are appends (one write per turn), never rewrites.  A thread's history is kept in memory between turns
(agent/cache.py): read again only when the file changed other than by this runtime's own appends."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from .cache import FileCache, stat_key

_daily_lock = threading.Lock()  # turns of different threads append to the same daily log
_made: set[Path] = set()  # folders known to exist: a mkdir through FUSE costs a round trip even when it exists


def _ensure_dir(d: Path) -> None:
    if d not in _made:
        d.mkdir(parents=True, exist_ok=True)
        _made.add(d)


def conversation_path(home: Path, channel: str, thread: str) -> Path:
    return home / "conversations" / channel / f"{thread}.jsonl"


def record(role: str, content: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "role": role, "content": content,
            "created_at": dt.datetime.now(dt.UTC).isoformat()}


def _parse_history(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


_histories: FileCache[list[dict[str, Any]]] = FileCache(_parse_history)


def append_messages(home: Path, channel: str, thread: str, records: list[dict[str, Any]]) -> None:
    path = conversation_path(home, channel, thread)
    _ensure_dir(path.parent)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    before = _append(path, data)
    # the cached history stays good when the file was exactly what it held before this append (one turn per
    # thread at a time writes it): then it is the old records plus these, and the next history() reads nothing
    cached = _histories.cached(path)
    if cached is not None and before is not None and cached[0] == before and data.endswith("\n"):
        try:
            after = stat_key(os.stat(path))
        except OSError:
            _histories.forget(path)
            return
        if after[:2] == (before[0], before[1] + len(data.encode())):
            _histories.put(path, after, [*cached[1], *records])
            return
    _histories.forget(path)


def history(home: Path, channel: str, thread: str) -> list[dict[str, Any]]:
    """Every message of the thread, in order (a torn last line, from a crash, is skipped).  Shared: not to be
    changed by the caller."""
    try:
        return _histories.get(conversation_path(home, channel, thread))
    except FileNotFoundError:
        return []


def daily_path(home: Path, day: dt.date | None = None) -> Path:
    return home / "daily" / f"{(day or dt.date.today()).isoformat()}.md"


def append_daily(home: Path, text: str) -> None:
    path = daily_path(home)
    _ensure_dir(path.parent)
    with _daily_lock:
        _append(path, text if text.endswith("\n") else text + "\n")


def _append(path: Path, data: str) -> tuple[int, int, int] | None:
    """One write of `data` at the end of `path` (closed at once: the close hands the kernel's cached pages to
    the mount, so the reply's fsync that follows makes them durable with it).  Returns the file's stat key
    before the write (None when it was created)."""
    try:
        return _append_once(path, data)
    except FileNotFoundError:  # the folder was removed since it was made: make it again
        _made.discard(path.parent)
        _ensure_dir(path.parent)
        return _append_once(path, data)


def _append_once(path: Path, data: str) -> tuple[int, int, int] | None:
    with open(path, "a", encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        f.write(data)
    return stat_key(st) if st.st_size else None
