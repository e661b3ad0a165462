"""Secrets in the agent home: names visible, values write-only (clawfs/home.py), through the VFS and a real mount."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from helpers import make_store, store_bytes
from test_vfs import CTX, errno_of, new_file, vfs  # noqa: F401  (the fixture)

from clawfs import home
from clawfs.store import ROOT
from clawfs.vfs import VFS


def _mkdirs(v: VFS, *names: bytes) -> int:
    ino = ROOT
    for name in names:
        ino = v.mkdir(ino, name, 0o700, CTX).ino
    return ino


def test_secret_value_is_write_only(vfs: VFS) -> None:  # noqa: F811
    secrets = _mkdirs(vfs, b"secrets")
    fh, ino = new_file(vfs, b"openai_key", b"sk-proj-abc", parent=secrets)
    assert vfs.uncached(fh)
    assert errno_of(vfs.read, fh, 0, 100) == errno.EACCES
    vfs.release(fh)
    assert errno_of(vfs.open, ino, os.O_RDONLY) == errno.EACCES
    fh = vfs.open(ino, os.O_RDWR | os.O_TRUNC)  # overwrite is allowed (the kernel opens O_WRONLY as O_RDWR)
    vfs.write(fh, 0, b"sk-new")
    vfs.release(fh)
    assert vfs.getattr(ino).size == 6
    assert vfs.store.read(vfs.store.get(ino), 0, 10) == b"sk-new"  # the host boundary reads it from the store


def test_secret_stays_secret_when_moved_or_linked(vfs: VFS) -> None:  # noqa: F811
    secrets = _mkdirs(vfs, b"secrets")
    fh, ino = new_file(vfs, b"token", b"value", parent=secrets)
    vfs.release(fh)
    vfs.rename(secrets, b"token", ROOT, b"token")
    assert errno_of(vfs.open, ino, os.O_RDONLY) == errno.EACCES
    vfs.link(ino, ROOT, b"token2")
    assert errno_of(vfs.open, ino, os.O_RDONLY) == errno.EACCES


def test_file_moved_into_secrets_becomes_secret(vfs: VFS) -> None:  # noqa: F811
    secrets = _mkdirs(vfs, b"secrets")
    fh, ino = new_file(vfs, b"plain", b"value")
    vfs.release(fh)
    vfs.rename(ROOT, b"plain", secrets, b"plain")
    assert errno_of(vfs.open, ino, os.O_RDONLY) == errno.EACCES


def test_directory_cannot_be_moved_into_secrets(vfs: VFS) -> None:  # noqa: F811
    secrets = _mkdirs(vfs, b"secrets")
    _mkdirs(vfs, b"notes")
    assert errno_of(vfs.rename, ROOT, b"notes", secrets, b"notes") == errno.EXDEV
    bob = _mkdirs(vfs, b"users", b"bob")
    assert errno_of(vfs.rename, ROOT, b"notes", bob, b"secrets") == errno.EXDEV  # would become a secrets dir
    vfs.rename(ROOT, b"notes", bob, b"notes")  # anywhere else is fine


def test_per_user_secrets_dir_and_plain_secrets_names_elsewhere(vfs: VFS) -> None:  # noqa: F811
    alice_secrets = _mkdirs(vfs, b"users", b"alice", b"secrets")
    fh, ino = new_file(vfs, b"k", b"v", parent=alice_secrets)
    vfs.release(fh)
    assert errno_of(vfs.open, ino, os.O_RDONLY) == errno.EACCES
    elsewhere = _mkdirs(vfs, b"projects", b"secrets")  # only the home's and users/<id>/ secrets dirs are special
    fh, ino = new_file(vfs, b"notes.md", b"readable", parent=elsewhere)
    vfs.release(fh)
    fh = vfs.open(ino, os.O_RDONLY)
    assert vfs.read(fh, 0, 100) == b"readable"
    vfs.release(fh)


def test_names_secrets_dir() -> None:
    assert home.names_secrets_dir(b"", b"secrets")
    assert home.names_secrets_dir(b"users/bob", b"secrets")
    assert not home.names_secrets_dir(b"users", b"secrets")
    assert not home.names_secrets_dir(b"projects/x", b"secrets")
    assert not home.names_secrets_dir(b"", b"secret")


@pytest.mark.fuse
def test_secrets_through_a_real_mount(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    mnt = tmp_path / "mnt"
    store.mount(mnt)
    try:
        (mnt / "secrets").mkdir()
        subprocess.run(["sh", "-c", f"printf 'sk-SECRETVALUE-7781' > {mnt}/secrets/openai_api_key"], check=True)
        assert os.listdir(mnt / "secrets") == ["openai_api_key"]
        st = (mnt / "secrets" / "openai_api_key").stat()
        assert st.st_size == 19 and st.st_mode & 0o777 == 0o600
        assert (mnt / "secrets").stat().st_mode & 0o777 == 0o700
        cat = subprocess.run(["cat", str(mnt / "secrets" / "openai_api_key")], capture_output=True, text=True)
        assert cat.returncode != 0 and "Permission denied" in cat.stderr
        grep = subprocess.run(["grep", "-r", "SECRETVALUE", str(mnt)], capture_output=True, text=True)
        assert "SECRETVALUE" not in grep.stdout
        # O_RDWR opens succeed, but reading is refused
        with pytest.raises(PermissionError), open(mnt / "secrets" / "openai_api_key", "r+b") as f:
            f.read()
        subprocess.run(["mv", str(mnt / "secrets" / "openai_api_key"), str(mnt / "moved")], check=True)
        assert subprocess.run(["cat", str(mnt / "moved")], capture_output=True).returncode != 0
    finally:
        store.umount(mnt)
    assert b"SECRETVALUE" not in store_bytes(store.path)
    store.assert_clean()
