"""`clawfs chat`: deliver a message into a channel's inbox and wait for the reply in its outbox (the reply is
then marked seen: moved to `outbox/cur/` with the S flag).  Plain file I/O on the mounted home."""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from pathlib import Path

from . import maildir
from .home import maildir as boxes
from .home import make_channel

POLL = 0.05


class NoReply(Exception):
    """No reply came in time; the message says what to check."""


@dataclass
class ChatReply:
    text: str
    message_id: str
    reply_id: str | None
    channel: str
    thread: str
    seconds: float


def send(home: Path, text: str, *, channel: str = "local", thread: str = "cli") -> str:
    b = boxes(home, channel)
    if not (b["inbox"] / "new").is_dir():
        make_channel(home, channel)
    msg = maildir.make_message(text, sender=f"{getpass.getuser()}@localhost", thread=maildir.safe_thread(thread))
    maildir.deliver(b["inbox"], msg.as_bytes())
    return str(msg["Message-ID"])


def wait_reply(home: Path, msgid: str, *, channel: str = "local", timeout: float = 120.0) -> Path:
    outbox = boxes(home, channel)["outbox"]
    deadline = time.monotonic() + timeout
    while (found := maildir.find_reply(outbox, msgid)) is None:
        if time.monotonic() > deadline:
            raise NoReply(f"no reply within {timeout:g} s on channel {channel}; is the agent running? "
                          f"(clawfs agent status {home}; start it with clawfs agent run {home})")
        time.sleep(POLL)  # the runtime writes the reply; nothing to be notified by through a mount
    return found


def ask(home: Path, text: str, *, channel: str = "local", thread: str = "cli", timeout: float = 120.0) -> ChatReply:
    t0 = time.monotonic()
    msgid = send(home, text, channel=channel, thread=thread)
    path = wait_reply(home, msgid, channel=channel, timeout=timeout)
    raw = path.read_bytes()
    if path.parent.name == "new":
        maildir.claim(path)
        cur = path.parent.parent / "cur" / (maildir.base_name(path.name) + ":2,")
        maildir.set_flags(cur, "S")
    return ChatReply(maildir.body_text(raw).rstrip("\n"), msgid, maildir.header(raw, "Message-ID"), channel,
                     maildir.safe_thread(thread), round(time.monotonic() - t0, 4))
