"""Routines (`routines/<name>.toml`) and the heartbeat.

A routine file is either the native form
    schedule = "0 9 * * *"     # cron, 5 fields (6 or 7 as IronClaw writes them: seconds and year are dropped)
    prompt = "Summarise yesterday's daily log."
    channel = "local"          # where the reply goes
    cooldown_secs = 300        # at least this long between two runs
    catch_up = "once"          # missed runs while the runtime was down: "once" (one run now) or "skip"
    enabled = true
or the row `clawfs migrate` writes from IronClaw's `routines` table (`trigger_type = "cron"`,
`[trigger_config] schedule`, `[action_config] prompt`/`description`, `cooldown_secs`, `enabled`).

A routine fires by delivering a message into its channel's inbox (so it is answered, journaled and redelivered
after a crash like any other).  One run at a time: a slot whose previous run is still unanswered is skipped.
Next fire times live in `.agent/routines.json`.

The heartbeat is independent: every `heartbeat_minutes` the runtime reads HEARTBEAT.md and, if it says anything,
asks the model about it; a reply of HEARTBEAT_OK is not delivered.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import tomllib
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cronsim import CronSim, CronSimError

from .cache import DirCache, FileCache

log = logging.getLogger(__name__)

HEARTBEAT_OK = "HEARTBEAT_OK"
HEARTBEAT_PROMPT = ("[heartbeat] Read the checklist from HEARTBEAT.md below and act on it. If nothing needs the "
                    f"user's attention, reply exactly {HEARTBEAT_OK}.\n\n")
_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,100}$")
_dirs = DirCache()
_files: FileCache[bytes] = FileCache(bytes, max_entries=256)


@dataclass(frozen=True)
class Routine:
    name: str
    schedule: str
    prompt: str
    channel: str = "local"
    cooldown_secs: float = 300
    catch_up: str = "once"
    enabled: bool = True
    timezone: str = "UTC"

    def next_after(self, when: dt.datetime) -> dt.datetime:
        tz = zoneinfo.ZoneInfo(self.timezone)
        local = when.astimezone(tz).replace(second=0, microsecond=0)
        nxt: dt.datetime = next(CronSim(self.schedule, local))
        return nxt.astimezone(dt.UTC)


def normalise_cron(expr: str) -> str:
    fields = expr.split()
    if len(fields) == 7:
        fields = fields[1:6]
    elif len(fields) == 6:
        fields = fields[1:]
    return " ".join(fields)


def parse_routine(name: str, doc: dict[str, Any]) -> Routine:
    trigger = doc.get("trigger_config") if isinstance(doc.get("trigger_config"), dict) else {}
    action = doc.get("action_config") if isinstance(doc.get("action_config"), dict) else {}
    assert isinstance(trigger, dict) and isinstance(action, dict)
    if doc.get("trigger_type", "cron") != "cron":
        raise ValueError(f"trigger_type {doc.get('trigger_type')!r} is not run by this runtime (only cron)")
    schedule = doc.get("schedule") or trigger.get("schedule")
    prompt = doc.get("prompt") or action.get("prompt") or action.get("description")
    if not isinstance(schedule, str) or not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("needs a cron `schedule` and a `prompt`")
    schedule = normalise_cron(schedule)
    try:
        CronSim(schedule, dt.datetime.now(dt.UTC))
    except (CronSimError, ValueError) as e:
        raise ValueError(f"bad cron schedule {schedule!r}: {e}") from e
    tz = str(doc.get("timezone") or trigger.get("timezone") or "UTC")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown timezone {tz!r}") from e
    channel = str(doc.get("channel") or doc.get("notify_channel") or "local")
    catch_up = str(doc.get("catch_up", "once"))
    if catch_up not in ("once", "skip"):
        raise ValueError(f"catch_up must be 'once' or 'skip', not {catch_up!r}")
    return Routine(name, schedule, prompt, channel, float(doc.get("cooldown_secs", 300)), catch_up,
                   bool(doc.get("enabled", True)), tz)


def load_routines(home: Path) -> tuple[list[Routine], dict[str, str]]:
    """The routines of the home, and the files that could not be used (name -> why)."""
    found, bad = [], {}
    root = home / "routines"
    try:
        # asked at every poll of the runtime: the folder is listed and a file read only when they changed
        names = [n for n in _dirs.names(root) if n.endswith(".toml")]
    except (FileNotFoundError, NotADirectoryError):
        return [], {}
    for file_name in names:
        path = root / file_name
        name = path.stem
        if not _NAME.match(name):
            bad[path.name] = "the name must be letters, digits, '.', '_' or '-'"
            continue
        try:
            found.append(parse_routine(name, tomllib.loads(_files.get(path).decode())))
        except (FileNotFoundError, IsADirectoryError):
            continue  # removed since the listing, or a folder
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as e:
            bad[path.name] = str(e)
    return found, bad


def due(routine: Routine, entry: dict[str, Any], now: dt.datetime) -> tuple[bool, dict[str, Any]]:
    """Whether `routine` fires now, and its updated state entry (next_fire, last_fire as ISO strings)."""
    entry = dict(entry)
    nxt = _parse(entry.get("next_fire"))
    if nxt is None or entry.get("schedule") != routine.schedule:
        entry["next_fire"] = routine.next_after(now).isoformat()
        entry["schedule"] = routine.schedule
        return False, entry
    if nxt > now:
        return False, entry
    missed = routine.next_after(nxt) <= now  # more than one slot went by: the runtime was down
    entry["next_fire"] = routine.next_after(now).isoformat()
    if missed and routine.catch_up == "skip":
        log.info("routine %s: missed runs skipped (catch_up = skip)", routine.name)
        return False, entry
    last = _parse(entry.get("last_fire"))
    if last is not None and (now - last).total_seconds() < routine.cooldown_secs:
        log.info("routine %s: in its cooldown (%g s); this run is skipped", routine.name, routine.cooldown_secs)
        return False, entry
    return True, entry


def _parse(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def heartbeat_text(home: Path) -> str | None:
    """HEARTBEAT.md's checklist, or None when it says nothing (blank, or only headings and comments): then no
    model is asked at all."""
    try:
        text = (home / "HEARTBEAT.md").read_text(errors="replace")
    except FileNotFoundError:
        return None
    without_comments = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    meaningful = [ln for ln in without_comments.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return text.strip() if meaningful else None


def is_heartbeat_ok(reply: str) -> bool:
    return reply.strip().strip(".").strip() == HEARTBEAT_OK
