"""The mount daemon's own reads of a home's files, by path, through the Store (never through FUSE): what the
egress proxy in the daemon (mountd/proxy_service.py) needs of the owner's policy and secrets.

- `read(store, path)`: a regular file's bytes (policy files: settings/llm.toml, settings/network.toml,
  tools/NAME/capabilities.json), None when there is none.  A secret-flagged file is refused here as through
  the mount: policy is read with this, values never.
- `secret(store, name, user=None)`: the value of `secrets/NAME` (or `users/USER/secrets/NAME`), the one narrow
  door to a secret's value.  Only the daemon calls it, in the process that holds the key, for the proxy's
  CredentialSource; nothing returns it to a FUSE caller.  A trailing newline is dropped (`echo KEY > secrets/x`
  is how an owner writes one).
- `secret_values(store)`: every such value of the home (secrets/ and each users/<id>/secrets/), for the
  proxy's exact-value leak check.

Every function runs where the store's connection lives (the mount's loop thread: `fuse_ops.loop_caller`), and
reads through that connection, so it sees writes the mount has not committed yet: an owner's edit is read at the
next request.  No lookup here takes a kernel reference (it never goes through the VFS's `lookup`).
"""

from __future__ import annotations

import stat

from . import home
from .errors import PermissionDenied
from .store import ROOT, Store

MAX_READ = 1 << 20  # a policy file or a secret is small; a larger one is cut here rather than held whole


def _walk(store: Store, path: str) -> int | None:
    ino = ROOT
    for part in path.split("/"):
        if not part:
            continue
        if part in (".", ".."):
            return None
        row = store.find(ino)
        if row is None or not stat.S_ISDIR(row.mode):
            return None
        found = store.lookup(ino, part.encode())
        if found is None:
            return None
        ino = found
    return ino


def _contents(store: Store, ino: int) -> bytes | None:
    row = store.find(ino)
    if row is None or not stat.S_ISREG(row.mode):
        return None
    return store.read(row, 0, min(row.size, MAX_READ))


def read(store: Store, path: str) -> bytes | None:
    """The regular file at `path` (relative to the mount root), None if there is none; secrets refused."""
    ino = _walk(store, path)
    if ino is None:
        return None
    row = store.find(ino)
    if row is not None and home.is_secret(row.flags):
        raise PermissionDenied(f"{path}: secret values are write-only")
    return _contents(store, ino)


def listdir(store: Store, path: str) -> list[str]:
    """The names in the directory at `path` ([] if there is none)."""
    ino = _walk(store, path)
    row = store.find(ino) if ino is not None else None
    if row is None or not stat.S_ISDIR(row.mode):
        return []
    return [name.decode("utf-8", "surrogateescape") for _, name, _ in store.entries(row.id)]


def _secrets_dir(user: str | None) -> str:
    return "secrets" if user is None else f"users/{user}/secrets"


def secret(store: Store, name: str, user: str | None = None) -> str | None:
    """The value of secret `name` (of `user`, default the home's own), None if there is none.  Only a file that
    carries the secret mark counts: nothing else can be read through this door."""
    if not name or "/" in name or name in (".", ".."):
        return None
    if user is not None and ("/" in user or user in ("", ".", "..")):
        return None
    ino = _walk(store, f"{_secrets_dir(user)}/{name}")
    row = store.find(ino) if ino is not None else None
    if row is None or not home.is_secret(row.flags):
        return None
    data = _contents(store, row.id)
    return None if data is None else data.decode("utf-8", "replace").rstrip("\r\n")


def secret_values(store: Store) -> list[str]:
    """Every secret value of the home: secrets/ and each users/<id>/secrets/."""
    values = []
    for user in [None, *listdir(store, "users")]:
        for name in listdir(store, _secrets_dir(user)):
            value = secret(store, name, user)
            if value:
                values.append(value)
    return values
