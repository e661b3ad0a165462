"""What every turn leaves in the home: `conversations/<channel>/<thread>.jsonl` (the layout `clawfs migrate`
writes: one JSON object per message, `id`, `role`, `content`, `created_at`) and `daily/YYYY-MM-DD.md`.
Both are appends (one write per record), never rewrites."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from pathlib import Path
from typing import Any

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


def append_messages(home: Path, channel: str, thread: str, records: list[dict[str, Any]]) -> None:
    path = conversation_path(home, channel, thread)
    _ensure_dir(path.parent)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    _append(path, data)


def history(home: Path, channel: str, thread: str) -> list[dict[str, Any]]:
    """Every message of the thread, in order (a torn last line, from a crash, is skipped)."""
    path = conversation_path(home, channel, thread)
    out = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def daily_path(home: Path, day: dt.date | None = None) -> Path:
    return home / "daily" / f"{(day or dt.date.today()).isoformat()}.md"


def append_daily(home: Path, text: str) -> None:
    path = daily_path(home)
    _ensure_dir(path.parent)
    with _daily_lock:
        _append(path, text if text.endswith("\n") else text + "\n")


def _append(path: Path, data: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(data)
    except FileNotFoundError:  # the folder was removed since it was made: make it again
        _made.discard(path.parent)
        _ensure_dir(path.parent)
        with open(path, "a") as f:
            f.write(data)
