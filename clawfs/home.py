"""The agent home's special places, as the VFS enforces them (layout: docs/ARCHITECTURE.md, "The agent home").

Secrets live in `secrets/` at the root of the home (the default user's) and in `users/<id>/secrets/` (another
user's).  Their names are visible; their values are write-only through the mount: an agent or a user may create,
overwrite, rename and delete a secret, never read it back.  Tools get a secret's value only by injection at the
host boundary (the sandbox reads it through the store API, not the mount), as IronClaw's `secret-exists` host
call promises.

The mark is a flag on the inode (`FLAG_SECRET`), set when a file or directory is created in a secrets directory,
or a file is moved or linked into one, and never cleared: a secret moved out of `secrets/` stays unreadable, and
a hard link cannot expose it.  A directory that is not already a secrets directory cannot be moved into one
(EXDEV: `mv` then copies file by file, and each copy is marked).  The indexer never reads a marked inode.
A secrets directory stays where it is: it cannot be renamed, removed or replaced, nor moved by renaming `users`
or `users/<id>`, and nothing but a directory can take its name (EPERM), so `secrets` can never become a symlink
or a file that would send new secrets somewhere readable.

Earlier versions of a document live under a `.versions/` directory beside it (`.versions/MEMORY.md/2.md`; the
IronClaw migration writes them).  They are indexed like any file, but searches leave them out unless the search
is confined to a `.versions/` directory: otherwise every note with a history would fill the results with its
own past.
"""

from __future__ import annotations

from .db.database import FLAG_SECRET

SECRETS = b"secrets"
VERSIONS = b".versions"

__all__ = ["FLAG_SECRET", "SECRETS", "VERSIONS", "is_secret", "is_secrets_path", "is_version", "may_hold_secrets_dir",
           "names_secrets_dir"]


def is_secret(flags: int) -> bool:
    return bool(flags & FLAG_SECRET)


def names_secrets_dir(parent_path: bytes | None, name: bytes) -> bool:
    """True when `name` in the directory at `parent_path` (relative to the root, b"" for the root) is a
    secrets directory: `secrets` at the root or in `users/<id>/`."""
    if name != SECRETS or parent_path is None:
        return False
    parts = parent_path.split(b"/") if parent_path else []
    return not parts or (len(parts) == 2 and parts[0] == b"users")


def is_secrets_path(path: bytes) -> bool:
    """Is `path` (relative to the root) the place of a secrets directory: `secrets` or `users/<id>/secrets`?"""
    head, _, name = path.rpartition(b"/")
    return names_secrets_dir(head, name)


def may_hold_secrets_dir(path: bytes) -> bool:
    """Can a directory at `path` hold a secrets directory below it (`users` or `users/<id>`)?"""
    parts = path.split(b"/") if path else []
    return len(parts) in (1, 2) and parts[0] == b"users"


def is_version(path: bytes) -> bool:
    """Is `path` (relative to the root) inside a `.versions/` directory, i.e. an earlier version of a file?"""
    return VERSIONS in path.split(b"/")[:-1]
