"""Policy is the owner's: what is policy in an agent home, and who may do what to it (docs/ARCHITECTURE.md,
"Policy is the owner's").

Policy is every file that decides what the agent may reach, run or spend: `settings/**`, `tools/**`,
`channels/<name>/channel.toml`, every secrets folder (`secrets/**`, `users/<id>/secrets/**`) and `.clawfs/**`.
A mount knows three kinds of caller, by the uid of the FUSE request:

- the **owner** (the uid that mounted; also every internal caller, which passes no uid): everything; an owner's
  write to policy is the approval;
- the **agent** (the mount option `agent_uid=N`, the jail's uid): everything but policy, which it may read and
  not change by any way in, and not `.clawfs/audit/`, which it may not read;
- anyone else: EACCES on everything.

This module decides by path (components relative to the mount root) and by a small `Tree` view of the store;
it holds no SQL and no crypto.  clawfs/router.py asks it and logs each refusal (`Refusal.record`) to the audit.
"""

from __future__ import annotations

import errno as _errno
import json
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import FsError

log = logging.getLogger("clawfs.policy")

# A pattern's components: a name, "*" (any one name) or a final "**" (the place and everything below it).
PATTERNS: tuple[tuple[bytes, ...], ...] = (
    (b"settings", b"**"),
    (b"tools", b"**"),
    (b".clawfs", b"**"),
    (b"secrets", b"**"),
    (b"users", b"*", b"secrets", b"**"),
    (b"channels", b"*", b"channel.toml"),
)
AUDIT = (b".clawfs", b"audit")
"""The agent may not even read below here (refusals of its own attempts, and the proxy's log)."""
PROPOSALS = b"proposals"
"""The agent's way to ask (proposals/tools/<name>/, proposals/network.toml): writable by it, applied only by the
owner (mountd/policy_cli.py)."""

OWNER, AGENT = "owner", "agent"
Path = tuple[bytes, ...]


def parts(path: bytes) -> Path:
    """b"a/b" -> (b"a", b"b"); b"" (the root) -> ()."""
    return tuple(p for p in path.split(b"/") if p)


def _fixed(pattern: tuple[bytes, ...]) -> tuple[tuple[bytes, ...], bool]:
    """(the components a path must match, whether everything below matches too)."""
    return (pattern[:-1], True) if pattern[-1] == b"**" else (pattern, False)


def _match(comps: Iterable[bytes], pattern: Iterable[bytes]) -> bool:
    return all(p == b"*" or p == c for c, p in zip(comps, pattern, strict=True))


def is_policy(path: Path) -> bool:
    """Is the place at `path` policy (an existing file or directory, or a name about to be made)?"""
    for pattern in PATTERNS:
        fixed, below = _fixed(pattern)
        if (len(path) >= len(fixed) if below else len(path) == len(fixed)) \
                and _match(path[:len(fixed)], fixed):
            return True
    return False


def is_audit(path: Path) -> bool:
    return path[:len(AUDIT)] == AUDIT


class Tree(Protocol):
    """What the rules need to see of the store (clawfs/router.py gives the VFS's)."""

    def child(self, ino: int, name: bytes) -> int | None: ...

    def children(self, ino: int) -> list[tuple[bytes, int]]: ...

    def path(self, ino: int) -> Path | None:
        """The path of `ino` (its oldest link for a file), None when it has none."""

    def paths(self, ino: int) -> list[Path]:
        """Every path of `ino`: one per link (a file's hard links)."""

    def is_dir(self, ino: int) -> bool: ...

    def is_secret(self, ino: int) -> bool:
        """Marked a secret (clawfs/home.py): for good, wherever it moved since."""


def holds_policy(path: Path, ino: int, tree: Tree) -> bool:
    """Would the directory `ino`, placed at `path`, hold a policy place below it?  (Moving it there, or away
    from there, moves policy.)  Only the few shapes of PATTERNS can: `channels/<x>/channel.toml` and
    `users/<x>/secrets` below `channels/`, `users/` and their entries, anything below the root."""
    if not path:
        return True
    for pattern in PATTERNS:
        fixed, _ = _fixed(pattern)
        if len(path) < len(fixed) and _match(path, fixed[:len(path)]) \
                and _exists_below(ino, fixed[len(path):], tree):
            return True
    return False


def _exists_below(ino: int, rest: tuple[bytes, ...], tree: Tree) -> bool:
    if not rest:
        return True
    head, tail = rest[0], rest[1:]
    if head == b"*":
        return any(_exists_below(child, tail, tree) for _, child in tree.children(ino))
    child = tree.child(ino, head)
    return child is not None and _exists_below(child, tail, tree)


class Refusal(FsError):
    """A change (or a read) the caller may not make: EACCES, with what the audit records."""

    errno = _errno.EACCES

    def __init__(self, who: str, uid: int, pid: int, op: str, path: str, reason: str) -> None:
        super().__init__(f"{who} uid {uid}: {op} {path}: {reason}")
        self.who, self.uid, self.pid, self.op, self.path, self.reason = who, uid, pid, op, path, reason

    def record(self) -> str:
        """One JSON line of `.clawfs/audit/files.jsonl`."""
        return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "who": self.who,
                           "uid": self.uid, "pid": self.pid, "op": self.op, "path": self.path,
                           "reason": self.reason, "errno": "EACCES"}, sort_keys=True)


@dataclass(frozen=True)
class Access:
    """Who the mount serves: its owner, and the agent uid/gid if it has one (None: a single-user mount)."""

    owner_uid: int
    agent_uid: int | None = None
    agent_gid: int | None = None

    def who(self, uid: int | None) -> str | None:
        """OWNER, AGENT, or None (anyone else).  No uid: an internal caller, the owner's."""
        if uid is None or uid == self.owner_uid:
            return OWNER
        if self.agent_uid is not None and uid == self.agent_uid:
            return AGENT
        return None

    def shown_mode(self, mode: int, uid: int, gid: int, audit: bool = False) -> tuple[int, int, int]:
        """(mode, uid, gid) the kernel sees (it checks them: default_permissions).  In an agent mount every inode
        is shown as the owner's, its group the agent's with the owner's bits (none below `.clawfs/audit/`), and
        nothing for others: the kernel then refuses every other uid on its own, even on cached entries."""
        if self.agent_uid is None:
            return mode, uid, gid
        user = mode & 0o700
        group = 0 if audit else user >> 3
        gid_shown = self.agent_gid if self.agent_gid is not None else self.agent_uid
        return (mode & ~0o777) | user | group, self.owner_uid, gid_shown


class Gate:
    """The checks of one mount, made before the VFS is asked.  `check_*` raise `Refusal` (and hand it to
    `audit` first) or return the caller's kind.  Whether an inode is policy is worked out from all its paths
    (any link under policy makes it policy) and cached until the next change of names (`renamed`), so a write
    through a descriptor costs a dict lookup."""

    def __init__(self, access: Access, tree: Tree, audit: Callable[[Refusal], None]) -> None:
        self.access = access
        self.tree = tree
        self.audit = audit
        self._policy: dict[int, bool] = {}

    def renamed(self) -> None:
        """Names changed (rename, link, unlink): what is policy may have too."""
        self._policy.clear()

    def _refuse(self, who: str, uid: int | None, pid: int, op: str, path: Path | None, reason: str) -> Refusal:
        shown = "/" + b"/".join(path).decode("utf-8", "replace") if path is not None else "?"
        r = Refusal(who, -1 if uid is None else uid, pid, op, shown, reason)
        self.audit(r)
        return r

    def who(self, uid: int | None, pid: int, op: str, ino: int) -> str:
        """The caller's kind; anyone but the owner and the agent is refused everything."""
        who = self.access.who(uid)
        if who is None:
            raise self._refuse("other", uid, pid, op, self.tree.path(ino), "neither the owner nor the agent")
        return who

    def inode_is_policy(self, ino: int) -> bool:
        """Policy if ANY of its links is (a hard link from a writable folder to a policy file is the policy
        file), or if it is marked a secret."""
        cached = self._policy.get(ino)
        if cached is None:
            cached = self.tree.is_secret(ino) or any(is_policy(p) for p in self.tree.paths(ino))
            self._policy[ino] = cached
        return cached

    def read(self, uid: int | None, pid: int, op: str, ino: int, path: Path | None = None) -> str:
        """Looking, listing, reading: the owner and the agent, except the audit for the agent."""
        who = self.who(uid, pid, op, ino)
        if who == AGENT:
            path = path if path is not None else self.tree.path(ino)
            if path is not None and is_audit(path):
                raise self._refuse(who, uid, pid, op, path, "the audit is the owner's to read")
        return who

    def change(self, uid: int | None, pid: int, op: str, ino: int) -> str:
        """A change of the inode itself (write, truncate, chmod, xattrs, a link to it)."""
        who = self.who(uid, pid, op, ino)
        if who == AGENT and self.inode_is_policy(ino):
            shown = next((p for p in self.tree.paths(ino) if is_policy(p)), None) or self.tree.path(ino)
            raise self._refuse(who, uid, pid, op, shown, "policy is the owner's")
        return who

    def name(self, uid: int | None, pid: int, op: str, parent: int, name: bytes, ino: int | None = None) -> str:
        """Making, removing or replacing the entry `name` in `parent` (`ino`: what it names now or will)."""
        who = self.who(uid, pid, op, parent)
        if who != AGENT:
            return who
        base = self.tree.path(parent)
        if base is None:
            return who  # a directory already unlinked: nothing can be made in it
        path = (*base, name)
        if is_policy(path):
            raise self._refuse(who, uid, pid, op, path, "policy is the owner's")
        if ino is not None and self.tree.is_dir(ino) and holds_policy(path, ino, self.tree):
            raise self._refuse(who, uid, pid, op, path, "it would move policy below it")
        return who

    def rename(self, uid: int | None, pid: int, old: tuple[int, bytes, int], new: tuple[int, bytes, int | None],
               exchange: bool) -> str:
        """Both ends: the source leaves its place, the destination's is made (and replaced if it exists)."""
        old_parent, old_name, src = old
        new_parent, new_name, dst = new
        self.name(uid, pid, "rename", old_parent, old_name, src)  # as the entry it is now
        who = self.name(uid, pid, "rename", new_parent, new_name, src)  # as the entry it becomes
        if dst is not None:
            self.name(uid, pid, "rename", new_parent, new_name, dst)
            if exchange:
                self.name(uid, pid, "rename", old_parent, old_name, dst)
        return who


class Settings(Protocol):
    """The part of the store the audit lives in: sealed settings, in the caller's unit of work."""

    def setting(self, key: str) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...

    def transaction(self) -> AbstractContextManager[None]: ...


AUDIT_KEY = "audit.files"
NETWORK_AUDIT_KEY = "audit.network"
"""`.clawfs/audit/network.jsonl`: every request of the egress proxy (mountd/proxy_service.py)."""
AUDIT_MAX = 256 * 1024
"""Bytes of one generation of the audit: past it, the current one becomes the previous one (two kept), so a
refusal loop costs bounded space and every refusal rewrites at most this much."""


class AuditLog:
    """`.clawfs/audit/files.jsonl` (or another audit file, by `key`): JSON lines in the encrypted store (a sealed
    setting), read by the owner through the mount.  Called with a Refusal: the refusals the daemon saw.  A
    read-only mount only logs them."""

    def __init__(self, store: Settings, *, readonly: bool = False, key: str = AUDIT_KEY) -> None:
        self.store, self.readonly, self.key = store, readonly, key

    def __call__(self, refusal: Refusal) -> None:
        log.warning("refused: %s", refusal)
        self.append([refusal.record()])

    def append(self, records: list[str]) -> None:
        """Add JSON lines (one unit of work for them all)."""
        if self.readonly or not records:
            return
        try:
            with self.store.transaction():
                lines: list[str] = self.store.setting(self.key) or []
                lines.extend(records)
                if sum(len(x) + 1 for x in lines) > AUDIT_MAX:
                    self.store.set_setting(self.key + ".1", lines)
                    lines = []
                self.store.set_setting(self.key, lines)
        except FsError as e:  # a full disk: the refusal stands, its record is in the daemon's log only
            log.error("audit records lost (%s): %s", e, records)

    def text(self) -> bytes:
        lines = (self.store.setting(self.key + ".1") or []) + (self.store.setting(self.key) or [])
        return "".join(x + "\n" for x in lines).encode()
