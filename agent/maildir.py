"""Channels as Maildirs (the format mutt, Dovecot and Python's `mailbox` read): `tmp/ new/ cur/`.

A message is an RFC 5322 file: `From`, `Date`, `Message-ID`, `X-Clawfs-Thread`, a UTF-8 body.  Delivery is a
write in `tmp/` and a rename into `new/`.  The runtime claims a message by renaming it into `cur/` with an empty
info (`:2,`), and marks it when done: `:2,RS` answered, `:2,FS` failed (its reason in an `X-Clawfs-Error`
header, the original bytes kept below it).  A claimed message without flags after a crash is redelivered.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import hashlib
import itertools
import os
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from pathlib import Path

_counter = itertools.count()
THREAD_HEADER = "X-Clawfs-Thread"
ERROR_HEADER = "X-Clawfs-Error"
KIND_HEADER = "X-Clawfs-Kind"  # "routine" or "heartbeat" for messages the runtime sends itself
ROUTINE_HEADER = "X-Clawfs-Routine"
_SAFE = re.compile(r"[^A-Za-z0-9._@+\-]")


def unique_name() -> str:
    """A Maildir file name: time, pid, a counter and random bits, then a fixed host part (the host name is an OS
    probe, and the random bits already make the name unique)."""
    return f"{time.time_ns()}.P{os.getpid()}Q{next(_counter)}R{os.urandom(4).hex()}.clawfs"


def base_name(name: str) -> str:
    return name.split(":2,", 1)[0]


def flags(name: str) -> str:
    return name.split(":2,", 1)[1] if ":2," in name else ""


def make_message(body: str, *, sender: str, thread: str | None = None, in_reply_to: str | None = None,
                 msgid: str | None = None, extra: dict[str, str] | None = None) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.default)  # \n line ends, as Maildir files have
    msg["From"] = sender
    msg["Date"] = format_datetime(_now())
    msg["Message-ID"] = msgid or make_msgid(domain="clawfs.local")
    if thread:
        msg[THREAD_HEADER] = thread
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    for k, v in (extra or {}).items():
        msg[k] = v
    msg.set_content(body, charset="utf-8", cte="8bit" if body.isascii() else "quoted-printable")
    return msg


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def deliver(box: Path, data: bytes, name: str | None = None) -> Path:
    """Write in tmp/, rename into new/ (readers never see half a message).  Returns the new/ path."""
    name = name or unique_name()
    tmp = box / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    dest = box / "new" / name
    os.rename(tmp, dest)
    return dest


@dataclass
class Inbound:
    """A claimed message: where it is, its headers (parsed leniently), its text, and any problem with it."""

    path: Path
    raw: bytes
    msgid: str
    sender: str
    thread: str
    kind: str
    routine: str | None
    text: str
    problem: str | None  # why the message cannot be answered as it stands (broken headers, non-UTF-8 body)


def parse(path: Path, raw: bytes) -> Inbound:
    problem = None
    try:
        msg = BytesParser(policy=email.policy.default).parsebytes(raw)
        defects = list(msg.defects)
        msgid = str(msg.get("Message-ID") or "").strip()
        sender = str(msg.get("From") or "").strip()
        thread = str(msg.get(THREAD_HEADER) or "").strip()
        kind = str(msg.get(KIND_HEADER) or "message").strip()
        routine = msg.get(ROUTINE_HEADER)
        payload = msg.get_payload(decode=True) if not msg.is_multipart() else None
        if msg.is_multipart():
            part = next((p for p in msg.walk() if p.get_content_type() == "text/plain"), None)
            payload = part.get_payload(decode=True) if part is not None else b""
        body = payload if isinstance(payload, bytes) else b""
        try:
            charset = msg.get_content_charset() or "utf-8"
            text = body.decode(charset).replace("\r\n", "\n")
        except (UnicodeDecodeError, LookupError):
            text = body.decode("utf-8", "replace")
            problem = "its body is not valid UTF-8 text"
        if not msgid or not sender:
            problem = problem or f"its headers are broken (missing {'Message-ID' if not msgid else 'From'})"
        elif defects and not text.strip():
            problem = f"its headers are broken ({defects[0].__class__.__name__})"
    except Exception as e:  # the email package can raise on badly broken input; the message is kept regardless
        msgid, sender, thread, kind, routine, text = "", "", "", "message", None, ""
        problem = f"it cannot be parsed ({type(e).__name__})"
    if not msgid:
        msgid = f"<{hashlib.sha256(raw).hexdigest()[:32]}@clawfs.invalid>"
    return Inbound(path, raw, msgid, sender, safe_thread(thread or "default"), kind,
                   str(routine) if routine else None, text, problem)


def safe_thread(thread: str) -> str:
    """A thread name usable as one file name (conversations/<channel>/<thread>.jsonl)."""
    t = _SAFE.sub("_", thread)[:100].strip(".")
    return t or "default"


def message_date(raw_date: str | None) -> float | None:
    try:
        return parsedate_to_datetime(raw_date).timestamp() if raw_date else None
    except (TypeError, ValueError):
        return None


def claim(new_path: Path) -> Path | None:
    """Move a message from new/ to cur/ with an empty info; None if someone else took it first."""
    dest = new_path.parent.parent / "cur" / (base_name(new_path.name) + ":2,")
    try:
        os.rename(new_path, dest)
    except FileNotFoundError:
        return None
    return dest


def set_flags(cur_path: Path, new_flags: str) -> Path:
    dest = cur_path.with_name(base_name(cur_path.name) + ":2," + "".join(sorted(set(new_flags))))
    if dest != cur_path:
        os.rename(cur_path, dest)
    return dest


def unclaim(cur_path: Path) -> None:
    """Give a claimed message back to new/ (it is retried later)."""
    os.rename(cur_path, cur_path.parent.parent / "new" / base_name(cur_path.name))


def reply_name(msgid: str) -> str:
    """The outbox file name of the reply to `msgid`: fixed, so a reply is written at most once."""
    return "reply-" + hashlib.sha256(msgid.encode()).hexdigest()[:40]


def reply_exists(outbox: Path, msgid: str) -> bool:
    name = reply_name(msgid)
    if (outbox / "new" / name).exists():
        return True
    cur = outbox / "cur"
    return cur.is_dir() and any(base_name(n) == name for n in os.listdir(cur))


def reply_names(outbox: Path) -> set[str]:
    """The base names of every file in the outbox's new/ and cur/ (replies among them)."""
    found: set[str] = set()
    for sub in ("new", "cur"):
        try:
            found.update(base_name(n) for n in os.listdir(outbox / sub))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def find_reply(outbox: Path, msgid: str) -> Path | None:
    name = reply_name(msgid)
    for sub in ("new", "cur"):
        d = outbox / sub
        if d.is_dir():
            for n in os.listdir(d):
                if base_name(n) == name:
                    return d / n
    return None


def body_text(raw: bytes) -> str:
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    payload = msg.get_payload(decode=True)
    return payload.decode(msg.get_content_charset() or "utf-8", "replace") if isinstance(payload, bytes) else ""


def header(raw: bytes, name: str) -> str | None:
    value = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True).get(name)
    return str(value) if value is not None else None
