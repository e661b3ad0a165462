"""A secrets directory stays where it is (clawfs/home.py): `secrets/` and `users/<id>/secrets/` cannot be
renamed, removed or replaced, by any way in (EPERM), and nothing but a directory may take their name, so
`secrets` can never be swapped for a symlink that sends new secrets somewhere readable.  Through the VFS, and
the attack of issue 19 on a real mount."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from helpers import make_store
from test_vfs import CTX, errno_of, new_file, vfs  # noqa: F401  (the fixture)

from clawfs.store import ROOT
from clawfs.vfs import RENAME_EXCHANGE, VFS

EPERM = errno.EPERM


def _mkdirs(v: VFS, *names: bytes, parent: int = ROOT) -> int:
    ino = parent
    for name in names:
        ino = v.mkdir(ino, name, 0o700, CTX).ino
    return ino


def test_root_secrets_cannot_be_renamed_removed_or_replaced(vfs: VFS) -> None:  # noqa: F811
    _mkdirs(vfs, b"secrets")
    assert errno_of(vfs.rename, ROOT, b"secrets", ROOT, b"x") == EPERM
    assert errno_of(vfs.rmdir, ROOT, b"secrets") == EPERM
    _mkdirs(vfs, b"empty")
    assert errno_of(vfs.rename, ROOT, b"empty", ROOT, b"secrets") == EPERM  # a rename over it
    assert errno_of(vfs.rename, ROOT, b"empty", ROOT, b"secrets", RENAME_EXCHANGE) == EPERM
    fh, _ = new_file(vfs, b"plain", b"x")
    vfs.release(fh)
    assert errno_of(vfs.rename, ROOT, b"plain", ROOT, b"secrets", RENAME_EXCHANGE) == EPERM
    assert vfs.lookup(ROOT, b"secrets").ino  # still there, still a directory
    assert vfs.lookup(ROOT, b"empty").ino and vfs.lookup(ROOT, b"plain").ino


def test_nothing_but_a_directory_takes_the_name(vfs: VFS) -> None:  # noqa: F811
    """Before `secrets/` exists: no symlink, file or hard link may be called `secrets` at its places."""
    assert errno_of(vfs.symlink, ROOT, b"secrets", b"pub", CTX) == EPERM
    assert errno_of(vfs.create, ROOT, b"secrets", 0o644, os.O_WRONLY, CTX) == EPERM
    fh, ino = new_file(vfs, b"plain", b"x")
    vfs.release(fh)
    assert errno_of(vfs.link, ino, ROOT, b"secrets") == EPERM
    assert errno_of(vfs.rename, ROOT, b"plain", ROOT, b"secrets") == EPERM
    vfs.symlink(ROOT, b"pub", b"x", CTX)
    assert errno_of(vfs.rename, ROOT, b"pub", ROOT, b"secrets") == EPERM
    alice = _mkdirs(vfs, b"users", b"alice")
    assert errno_of(vfs.symlink, alice, b"secrets", b"../../pub", CTX) == EPERM
    # elsewhere `secrets` is an ordinary name
    other = _mkdirs(vfs, b"projects")
    vfs.symlink(other, b"secrets", b"x", CTX)


def test_user_secrets_and_the_directories_above(vfs: VFS) -> None:  # noqa: F811
    alice = _mkdirs(vfs, b"users", b"alice")
    users = vfs.lookup(ROOT, b"users").ino
    _mkdirs(vfs, b"bob", parent=users)
    vfs.rename(users, b"bob", users, b"robert")  # no secrets below yet: an ordinary rename
    vfs.rename(ROOT, b"users", ROOT, b"people")
    vfs.rename(ROOT, b"people", ROOT, b"users")
    _mkdirs(vfs, b"secrets", parent=alice)
    assert errno_of(vfs.rename, alice, b"secrets", alice, b"old") == EPERM
    assert errno_of(vfs.rmdir, alice, b"secrets") == EPERM
    assert errno_of(vfs.rename, users, b"alice", users, b"mallory") == EPERM  # a rename of its parent
    assert errno_of(vfs.rename, ROOT, b"users", ROOT, b"people") == EPERM  # ... or of the parent's parent
    elsewhere = _mkdirs(vfs, b"tmp")
    assert errno_of(vfs.rename, users, b"alice", elsewhere, b"alice") == EPERM
    _mkdirs(vfs, b"empty")
    assert errno_of(vfs.rename, ROOT, b"empty", alice, b"secrets") == EPERM
    vfs.rename(users, b"robert", users, b"bob")  # bob has no secrets: still free to move
    assert vfs.lookup(alice, b"secrets").ino


@pytest.mark.fuse
def test_the_attack_on_a_real_mount(tmp_path: Path) -> None:
    """Issue 19: `mv MNT/secrets MNT/x; mkdir MNT/pub; ln -s pub MNT/secrets; echo KEY > MNT/secrets/k`."""
    store = make_store(tmp_path)
    mnt = tmp_path / "mnt"
    store.mount(mnt)
    try:
        (mnt / "secrets").mkdir()
        for argv in (["mv", f"{mnt}/secrets", f"{mnt}/x"], ["rmdir", f"{mnt}/secrets"],
                     ["rm", "-rf", f"{mnt}/secrets"]):
            proc = subprocess.run(argv, capture_output=True, text=True)
            assert proc.returncode != 0 and "not permitted" in proc.stderr, (argv, proc.stderr)
        (mnt / "pub").mkdir()
        proc = subprocess.run(["mv", "-T", f"{mnt}/pub", f"{mnt}/secrets"], capture_output=True, text=True)
        assert proc.returncode != 0
        with pytest.raises(OSError) as e:
            os.symlink("pub", mnt / "secrets")
        assert e.value.errno == errno.EEXIST
        assert (mnt / "secrets").is_dir() and not (mnt / "secrets").is_symlink()
        (mnt / "secrets" / "k").write_text("KEY")
        assert os.listdir(mnt / "pub") == []
        with pytest.raises(PermissionError):
            (mnt / "secrets" / "k").read_text()
    finally:
        store.umount(mnt)
    store.assert_clean()

