"""Where IronClaw's data lands in the agent home (the mapping is written down in docs/MIGRATION.md).

Scopes: the migrated user (`default`, or `--user ID`) owns the root of the home; any other user gets
`users/<id>/` with the same layout below it.  A document of a specific agent lands under `agents/<agent id>/` of
its user's scope (or, with `--agent ID`, that agent's documents land at the scope root).

Names that come from the data (document paths, channel, routine, tool and setting names) are checked here: an
absolute path, `..` or `.` components, NUL, invalid UTF-8, an empty or over-long component, or a path into a
place the home reserves is refused with a reason, never written somewhere else.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from typing import Any

from clawfs import home

NAME_MAX = 255
RESERVED_TOP = {".clawfs": "the .clawfs control tree",
                home.SECRETS.decode(): "secrets/ holds write-only secret values",
                home.VERSIONS.decode(): ".versions/ holds document versions"}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BadPath(ValueError):
    """A name from the database that cannot become a path in the home; the message says why."""


def check_name(name: object, what: str) -> str:
    """One path component from the data."""
    if not isinstance(name, str) or not name:
        raise BadPath(f"{what} is empty")
    if "\x00" in name:
        raise BadPath(f"{what} {name!r} contains NUL")
    if "/" in name:
        raise BadPath(f"{what} {name!r} contains '/'")
    if name in (".", ".."):
        raise BadPath(f"{what} {name!r} is not a file name")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPath(f"{what} {name!r} is not valid UTF-8") from None
    if len(raw) > NAME_MAX:
        raise BadPath(f"{what} is longer than {NAME_MAX} bytes")
    return name


def check_path(path: object, what: str = "document path", *, reserved: bool = True) -> str:
    """A relative path from the data (IronClaw document paths are relative; Reborn's begin with '/', which
    the caller strips).  Refused: absolute, '..' or '.' components, empty components, NUL, invalid UTF-8."""
    if not isinstance(path, str) or not path:
        raise BadPath(f"{what} is empty")
    if path.startswith("/"):
        raise BadPath(f"{what} {path!r} is absolute")
    parts = path.split("/")
    for part in parts:
        if part == "..":
            raise BadPath(f"{what} {path!r} contains '..'")
        check_name(part, what if part else f"{what} {path!r} has an empty component; it")
    if reserved and parts[0] in RESERVED_TOP:
        raise BadPath(f"{what} {path!r} is reserved: {RESERVED_TOP[parts[0]]}")
    return path


class Scopes:
    """The root directory (relative, '' for the home's root, else ending in '/') of each user's data."""

    def __init__(self, main_user: str, agent: str | None) -> None:
        self.main_user = main_user
        self.agent = agent

    def user(self, user_id: object) -> str:
        uid = str(user_id) if user_id is not None else self.main_user
        if uid == self.main_user:
            return ""
        return f"users/{check_name(uid, 'user id')}/"

    def document(self, user_id: object, agent_id: object) -> str:
        root = self.user(user_id)
        if agent_id is None or (self.agent is not None and str(agent_id) == self.agent):
            return root
        return f"{root}agents/{agent_id}/"


def json_default(value: Any) -> Any:
    """JSON for PostgreSQL values: UUIDs and NUMERIC as strings (exact), timestamps in ISO 8601, BYTEA as
    base64."""
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def record(row: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in drop}


def json_line(row: dict[str, Any]) -> bytes:
    return json.dumps(row, default=json_default, ensure_ascii=False, sort_keys=False).encode() + b"\n"


def json_doc(value: Any) -> bytes:
    return json.dumps(value, default=json_default, ensure_ascii=False, indent=2).encode() + b"\n"


def ns(value: object) -> int | None:
    """A timestamp as nanoseconds since the epoch (exact to the microsecond PostgreSQL keeps)."""
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - EPOCH) // dt.timedelta(microseconds=1) * 1000
