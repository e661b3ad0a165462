"""The agent home's layout (IronClaw's workspace, as `clawfs migrate` writes it) and `clawfs agent init`:
seed a mounted store idempotently, never overwriting a file that exists.

The runtime's own state (what was answered, routines' next fire times, liveness) lives in `.agent/`, the one
place of the home it writes besides memory, conversations, daily logs and channel Maildirs; `settings/` and
`tools/` are read only.
"""

from __future__ import annotations

from pathlib import Path

from .config import AGENT_TOML, LLM_TOML

STATE_DIR = ".agent"
DIRS = ("daily", "conversations", "jobs", "routines", "tools", "secrets", "settings", STATE_DIR)
MAILDIR_SUBDIRS = ("tmp", "new", "cur")

SEED: dict[str, str] = {
    "AGENTS.md": "# Agents\n\nHow this agent works: answer from memory first (memory_search), write down what "
                 "should be remembered (memory_write), keep replies short.\n",
    "IDENTITY.md": "# Identity\n\nName: agent\nA personal assistant whose whole state lives in this ClawFS home.\n",
    "SOUL.md": "# Soul\n\nBe helpful, honest and brief. Never reveal secrets.\n",
    "USER.md": "# User\n\n(Who the user is: name, preferences, time zone.)\n",
    "TOOLS.md": "# Tools\n\nmemory_search, memory_read, memory_write, memory_tree; installed tools live in tools/.\n",
    "HEARTBEAT.md": "",
    "MEMORY.md": "# Memory\n\n",
    "settings/agent.toml": AGENT_TOML,
    "settings/llm.toml": LLM_TOML,
}


def maildir(home: Path, channel: str) -> dict[str, Path]:
    base = home / "channels" / channel
    return {"inbox": base / "inbox", "outbox": base / "outbox"}


def make_maildir(root: Path) -> None:
    for sub in MAILDIR_SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)


def make_channel(home: Path, channel: str) -> None:
    for box in maildir(home, channel).values():
        make_maildir(box)


def channels(home: Path) -> list[str]:
    """Every channel of the home: a folder of `channels/` with an `inbox/` Maildir."""
    root = home / "channels"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "inbox" / "new").is_dir())


def init(home: Path) -> list[str]:
    """Seed the home; returns what was created (nothing on a second run).  Exclusive creation: an existing file,
    even an empty one, is never touched."""
    if not home.is_dir():
        raise FileNotFoundError(f"{home} is not a directory; mount the store first (clawfs mount STORE {home})")
    created = []
    for d in DIRS:
        if not (home / d).exists():
            (home / d).mkdir(parents=True)
            created.append(d + "/")
    for rel, text in SEED.items():
        path = home / rel
        try:
            with open(path, "x") as f:
                f.write(text)
            created.append(rel)
        except FileExistsError:
            pass
    for sub in ("inbox", "outbox"):
        for part in MAILDIR_SUBDIRS:
            p = home / "channels" / "local" / sub / part
            if not p.exists():
                p.mkdir(parents=True)
                created.append(f"channels/local/{sub}/{part}/")
    return created
