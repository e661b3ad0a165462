"""clawfs/home_files.py: the daemon's reads by path through the Store: policy files readable, secret values only
through `secret`/`secret_values` and only for files carrying the secret mark, names that escape refused."""

from __future__ import annotations

import pytest
from test_secrets import _mkdirs
from test_vfs import CTX, new_file, vfs  # noqa: F401  (the fixture)

from clawfs import home_files
from clawfs.errors import PermissionDenied
from clawfs.vfs import VFS


def _file(v: VFS, parent: int, name: bytes, data: bytes) -> int:
    fh, ino = new_file(v, name, data, parent=parent)
    v.release(fh)
    return ino


def test_policy_files_read_secrets_only_through_their_door(vfs: VFS) -> None:  # noqa: F811
    settings = _mkdirs(vfs, b"settings")
    _file(vfs, settings, b"llm.toml", b'[llm]\nbase_url = "http://x"\n')
    secrets = _mkdirs(vfs, b"secrets")
    _file(vfs, secrets, b"api_key", b"sk-value-1\n")
    users = _mkdirs(vfs, b"users")
    bob_secrets = vfs.mkdir(vfs.mkdir(users, b"bob", 0o700, CTX).ino, b"secrets", 0o700, CTX).ino
    _file(vfs, bob_secrets, b"gh", b"ghp-bob")
    notes = _mkdirs(vfs, b"notes")
    _file(vfs, notes, b"plain", b"not a secret")
    store = vfs.store

    assert home_files.read(store, "settings/llm.toml") == b'[llm]\nbase_url = "http://x"\n'
    assert home_files.read(store, "settings/absent.toml") is None
    assert home_files.read(store, "settings") is None  # a directory is no file
    with pytest.raises(PermissionDenied):
        home_files.read(store, "secrets/api_key")
    assert home_files.listdir(store, "secrets") == ["api_key"]

    assert home_files.secret(store, "api_key") == "sk-value-1"  # the trailing newline dropped
    assert home_files.secret(store, "gh", user="bob") == "ghp-bob"
    assert home_files.secret(store, "gh") is None
    for name in ("../notes/plain", "..", "", "a/b"):
        assert home_files.secret(store, name) is None
    assert home_files.secret(store, "plain", user="../notes") is None
    assert sorted(home_files.secret_values(store)) == ["ghp-bob", "sk-value-1"]


def test_a_file_without_the_mark_is_no_secret(vfs: VFS) -> None:  # noqa: F811
    # A plain `secrets` directory below notes/ is not a secrets directory: its files carry no mark.
    notes = _mkdirs(vfs, b"notes")
    fake = vfs.mkdir(notes, b"secrets", 0o700, CTX).ino
    _file(vfs, fake, b"k", b"v")
    assert home_files.secret(vfs.store, "k") is None
    assert home_files.secret_values(vfs.store) == []
