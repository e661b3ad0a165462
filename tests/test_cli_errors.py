"""The command line on bad input: one line `clawfs: ...` on stderr, a non-zero exit, never a traceback; and
the key-slot, info and mkfs commands doing what they promise."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import assert_user_error, clawfs, info, mount_source, safe_unmount
from helpers import PASSPHRASE, StoreFixture, is_mounted

from clawfs import FORMAT_VERSION

fuse = pytest.mark.fuse


def _opens(store: Path, *key_args: str) -> bool:
    """True when these keys open the store (fsck runs and finds it clean)."""
    proc = clawfs("fsck", str(store), *key_args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode == 0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wrong_pass(tmp_path: Path) -> Path:
    p = tmp_path / "wrong-passphrase"
    p.write_bytes(b"not the passphrase\n")
    return p


@pytest.fixture
def mnt(store: StoreFixture) -> Iterator[Path]:
    """An empty mountpoint; anything a test mounted there by mistake is unmounted afterwards."""
    m = store.tmp / "mnt"
    m.mkdir()
    yield m
    safe_unmount(store, m)


# -- wrong keys -------------------------------------------------------------------------------------------------
def test_fsck_wrong_passphrase(store: StoreFixture, wrong_pass: Path) -> None:
    line = assert_user_error(clawfs("fsck", str(store.path), "--passphrase-file", str(wrong_pass)))
    assert "passphrase" in line.lower()
    assert _opens(store.path, *store.key_args()), "the right passphrase stopped working"


def test_fsck_missing_and_empty_passphrase_file(store: StoreFixture) -> None:
    assert_user_error(clawfs("fsck", str(store.path), "--passphrase-file", str(store.tmp / "nope")),
                      contains="does not exist")
    empty = store.tmp / "empty-pass"
    empty.write_bytes(b"")
    assert_user_error(clawfs("fsck", str(store.path), "--passphrase-file", str(empty)), contains="empty")


def test_fsck_no_key_and_no_tty(store: StoreFixture) -> None:
    assert_user_error(clawfs("fsck", str(store.path)))


@fuse
@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_mount_wrong_passphrase(store: StoreFixture, mnt: Path, wrong_pass: Path, foreground: bool) -> None:
    args = ["mount", str(store.path), str(mnt), "-o", f"passphrase_file={wrong_pass}"] + (["-f"] if foreground else [])
    line = assert_user_error(clawfs(*args, timeout=60))
    assert "passphrase" in line.lower()
    assert not is_mounted(mnt), "a mount with the wrong passphrase is mounted"
    assert _opens(store.path, *store.key_args()), "the store is locked or damaged after a failed mount"


# -- not a (usable) store ---------------------------------------------------------------------------------------
def _newer(store: StoreFixture) -> None:
    """The store file as a newer ClawFS would leave it: its schema version raised in the file itself, on purpose
    not through `Store` (which refuses such a store)."""
    with sqlite3.connect(store.path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()


def _user_version(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


@pytest.mark.parametrize("command", ["fsck", "info", "key-list", "key-add"])
def test_newer_format_refused(store: StoreFixture, command: str) -> None:
    _newer(store)
    args = {"fsck": ["fsck", str(store.path), *store.key_args()],
            "info": ["info", str(store.path)],
            "key-list": ["key", "list", str(store.path)],
            "key-add": ["key", "add", str(store.path), "recovery", *store.key_args(),
                        "--out", str(store.tmp / "rk")]}[command]
    line = assert_user_error(clawfs(*args))
    assert "newer" in line.lower() or "upgrade" in line.lower(), line
    assert _user_version(store.path) == 99, "refusing a newer store must not rewrite its version"


@fuse
def test_mount_newer_format_refused(store: StoreFixture, mnt: Path) -> None:
    _newer(store)
    line = assert_user_error(clawfs("mount", str(store.path), str(mnt), "-o", f"passphrase_file={store.passfile}"))
    assert "newer" in line.lower() or "upgrade" in line.lower(), line
    assert not is_mounted(mnt)
    assert _user_version(store.path) == 99


def _not_a_store(tmp: Path, kind: str) -> Path:
    p = tmp / f"not-a-store-{kind}"
    if kind == "text":
        p.write_text("just some notes\nnothing to see\n" * 50)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "foreign-sqlite":
        db = sqlite3.connect(p)
        db.execute("CREATE TABLE recipes (name TEXT, body TEXT)")
        db.execute("INSERT INTO recipes VALUES ('bread', 'flour, water, salt')")
        db.commit()
        db.close()
    elif kind == "directory":
        p.mkdir()
    assert kind == "missing" or p.exists()
    return p


NOT_A_STORE = ["text", "empty", "foreign-sqlite", "missing", "directory"]


@pytest.mark.parametrize("kind", NOT_A_STORE)
@pytest.mark.parametrize("command", ["fsck", "info", "key-list"])
def test_not_a_store(store: StoreFixture, kind: str, command: str) -> None:
    path = _not_a_store(store.tmp, kind)
    args = {"fsck": ["fsck", str(path), *store.key_args()], "info": ["info", str(path)],
            "key-list": ["key", "list", str(path)]}[command]
    assert_user_error(clawfs(*args))
    if kind == "missing":
        assert not path.exists(), f"clawfs {command} created the missing store"


@pytest.mark.parametrize("kind", ["text", "empty", "foreign-sqlite"])
def test_not_a_store_is_left_untouched(store: StoreFixture, kind: str) -> None:
    """Pointing clawfs at somebody else's file must not change it (nor leave -wal/-shm files beside it)."""
    path = _not_a_store(store.tmp, kind)
    before = _digest(path)
    for args in (["info", str(path)], ["fsck", str(path), *store.key_args()], ["key", "list", str(path)]):
        assert_user_error(clawfs(*args))
        assert _digest(path) == before, f"`clawfs {args[0]}` modified {kind} file {path.name}"
        leftovers = [s for s in ("-wal", "-shm", "-journal") if Path(str(path) + s).exists()]
        assert not leftovers, f"`clawfs {args[0]}` left {leftovers} beside {kind} file {path.name}"


@fuse
@pytest.mark.parametrize("kind", NOT_A_STORE)
def test_mount_not_a_store(store: StoreFixture, mnt: Path, kind: str) -> None:
    path = _not_a_store(store.tmp, kind)
    assert_user_error(clawfs("mount", str(path), str(mnt), "-o", f"passphrase_file={store.passfile}", timeout=60))
    assert not is_mounted(mnt)
    if kind == "missing":
        assert not path.exists()


# -- mountpoints ------------------------------------------------------------------------------------------------
@fuse
@pytest.mark.parametrize("problem", ["missing", "not-empty", "regular-file"])
def test_bad_mountpoint(store: StoreFixture, problem: str) -> None:
    target = store.tmp / f"mp-{problem}"
    if problem == "not-empty":
        target.mkdir()
        (target / "existing.txt").write_text("here first\n")
    elif problem == "regular-file":
        target.write_text("a file, not a directory\n")
    try:
        assert_user_error(clawfs("mount", str(store.path), str(target), "-o", f"passphrase_file={store.passfile}",
                                 timeout=60))
        assert not is_mounted(target)
    finally:
        safe_unmount(store, target)
    if problem == "missing":
        assert not target.exists(), "a failed mount created the mountpoint"
    elif problem == "not-empty":
        assert (target / "existing.txt").read_text() == "here first\n"
    else:
        assert target.read_text() == "a file, not a directory\n"
    assert _opens(store.path, *store.key_args()), "the store is locked or damaged after a refused mount"


@fuse
def test_store_already_mounted(store: StoreFixture, mnt: Path) -> None:
    store.mount(mnt)
    try:
        (mnt / "first.txt").write_text("written through the first mount\n")
        second = store.tmp / "mnt2"
        second.mkdir()
        try:
            line = assert_user_error(clawfs("mount", str(store.path), str(second), "-o",
                                            f"passphrase_file={store.passfile}", timeout=60))
            assert "in use" in line or "mounted" in line, line
            assert not is_mounted(second), "the same store is mounted twice"
        finally:
            safe_unmount(store, second)
        # the same mountpoint again (already a mount point)
        assert_user_error(clawfs("mount", str(store.path), str(mnt), "-o", f"passphrase_file={store.passfile}",
                                 timeout=60))
        # fsck refuses too, while the store is mounted
        assert_user_error(clawfs("fsck", str(store.path), *store.key_args()), contains="in use")
        # and the first mount still works
        assert mount_source(mnt) is not None and mount_source(mnt)[0] == "fuse.clawfs"  # type: ignore[index]
        assert (mnt / "first.txt").read_text() == "written through the first mount\n"
        (mnt / "second.txt").write_text("still writable\n")
        assert sorted(os.listdir(mnt)) == ["first.txt", "second.txt"]
    finally:
        store.umount(mnt)
    store.assert_clean()


@fuse
def test_umount_not_mounted(store: StoreFixture, mnt: Path) -> None:
    assert_user_error(clawfs("umount", str(mnt)), contains="not mounted")


# -- mkfs -------------------------------------------------------------------------------------------------------
def test_mkfs_existing_store_refused(store: StoreFixture, tmp_path: Path) -> None:
    other_pass = tmp_path / "other-pass"
    other_pass.write_bytes(b"another passphrase\n")
    before = info(store.path)
    line = assert_user_error(clawfs("mkfs", str(store.path), "--passphrase-file", str(other_pass)))
    assert "--force" in line, line
    after = info(store.path)
    assert after["store_id"] == before["store_id"], "mkfs without --force replaced the store"
    assert _opens(store.path, *store.key_args()), "the original store no longer opens with its passphrase"
    assert not _opens(store.path, "--passphrase-file", str(other_pass))
    # with --force it really is replaced (so the refusal above was not an accident)
    proc = clawfs("mkfs", str(store.path), "--passphrase-file", str(other_pass), "--force")
    assert proc.returncode == 0, proc.stderr
    assert info(store.path)["store_id"] != before["store_id"]
    assert _opens(store.path, "--passphrase-file", str(other_pass))


def test_mkfs_no_key_no_tty(tmp_path: Path) -> None:
    target = tmp_path / "new.claw"
    line = assert_user_error(clawfs("mkfs", str(target)))
    assert "terminal" in line or "--passphrase-file" in line, line
    assert not target.exists(), "a refused mkfs left a store behind"


def test_mkfs_missing_passphrase_file(tmp_path: Path) -> None:
    target = tmp_path / "new.claw"
    assert_user_error(clawfs("mkfs", str(target), "--passphrase-file", str(tmp_path / "nope")),
                      contains="does not exist")
    assert not target.exists()


def test_mkfs_bad_block_size(tmp_path: Path) -> None:
    (tmp_path / "p").write_bytes(PASSPHRASE)
    target = tmp_path / "new.claw"
    for bad in ("1000", "2M", "lots"):
        assert_user_error(clawfs("mkfs", str(target), "--passphrase-file", str(tmp_path / "p"), "--block-size", bad))
        assert not target.exists(), f"mkfs --block-size {bad} left a store behind"


RECOVERY_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){7}\n?$")


def test_mkfs_recovery_key_file(tmp_path: Path) -> None:
    target, out = tmp_path / "r.claw", tmp_path / "recovery.txt"
    proc = clawfs("mkfs", str(target), "--recovery-key-file", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert RECOVERY_RE.match(text), f"recovery key file holds {text!r}"
    assert stat.S_IMODE(out.stat().st_mode) & 0o077 == 0, "the recovery key file is readable by others"
    assert _opens(target, "--recovery-key-file", str(out))
    # one changed digit is a wrong key; garbage is a malformed key
    digits = text.strip()
    wrong = tmp_path / "wrong-recovery.txt"
    wrong.write_text(("0" if digits[0] != "0" else "1") + digits[1:] + "\n")
    assert_user_error(clawfs("fsck", str(target), "--recovery-key-file", str(wrong)), contains="recovery")
    wrong.write_text("not a key\n")
    assert_user_error(clawfs("fsck", str(target), "--recovery-key-file", str(wrong)), contains="malformed")
    # mkfs never overwrites an existing recovery key file
    line = assert_user_error(clawfs("mkfs", str(tmp_path / "r2.claw"), "--recovery-key-file", str(out)))
    assert "exists" in line
    assert out.read_text() == text
    assert not (tmp_path / "r2.claw").exists()


def test_mkfs_keyfile_created_when_missing(tmp_path: Path) -> None:
    target, kf = tmp_path / "k.claw", tmp_path / "key.bin"
    proc = clawfs("mkfs", str(target), "--keyfile", str(kf))
    assert proc.returncode == 0, proc.stderr
    assert kf.exists(), "mkfs --keyfile did not create the missing keyfile"
    assert len(kf.read_bytes()) >= 32
    assert stat.S_IMODE(kf.stat().st_mode) & 0o077 == 0, "the new keyfile is readable by others"
    assert _opens(target, "--keyfile", str(kf))
    other = tmp_path / "other-key.bin"
    other.write_bytes(os.urandom(32))
    assert_user_error(clawfs("fsck", str(target), "--keyfile", str(other)), contains="keyfile")
    # an existing keyfile is used as it is, not replaced
    kf2 = tmp_path / "existing-key.bin"
    kf2.write_bytes(b"K" * 40)
    proc = clawfs("mkfs", str(tmp_path / "k2.claw"), "--keyfile", str(kf2))
    assert proc.returncode == 0, proc.stderr
    assert kf2.read_bytes() == b"K" * 40
    assert _opens(tmp_path / "k2.claw", "--keyfile", str(kf2))


def test_mkfs_keyfile_too_short(tmp_path: Path) -> None:
    kf = tmp_path / "short.bin"
    kf.write_bytes(b"short")
    assert_user_error(clawfs("mkfs", str(tmp_path / "s.claw"), "--keyfile", str(kf)), contains="16 bytes")
    assert not (tmp_path / "s.claw").exists()


# -- key slots --------------------------------------------------------------------------------------------------
def _slots(store: Path) -> list[dict[str, object]]:
    proc = clawfs("key", "list", str(store), "--json")
    assert proc.returncode == 0, proc.stderr
    slots: list[dict[str, object]] = json.loads(proc.stdout)
    return slots


def test_key_slots_lifecycle(store: StoreFixture, tmp_path: Path) -> None:
    p1 = store.key_args()
    assert [s["kind"] for s in _slots(store.path)] == ["passphrase"]
    plain = clawfs("key", "list", str(store.path))
    assert plain.returncode == 0 and "passphrase" in plain.stdout, plain.stderr

    # a second passphrase
    pass2 = tmp_path / "pass2"
    pass2.write_bytes(b"second passphrase\n")
    assert not _opens(store.path, "--passphrase-file", str(pass2))
    proc = clawfs("key", "add", str(store.path), "passphrase", *p1, "--new-passphrase-file", str(pass2))
    assert proc.returncode == 0, proc.stderr
    assert _opens(store.path, "--passphrase-file", str(pass2)), "the added passphrase does not open the store"

    # a keyfile
    kf = tmp_path / "key.bin"
    kf.write_bytes(os.urandom(32))
    assert_user_error(clawfs("key", "add", str(store.path), "keyfile", *p1))  # no --new-keyfile
    proc = clawfs("key", "add", str(store.path), "keyfile", *p1, "--new-keyfile", str(kf))
    assert proc.returncode == 0, proc.stderr
    assert _opens(store.path, "--keyfile", str(kf))

    # a recovery key, written to --out, unlocking with another new slot (the keyfile)
    out = tmp_path / "recovery.txt"
    proc = clawfs("key", "add", str(store.path), "recovery", "--keyfile", str(kf), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert RECOVERY_RE.match(out.read_text()), out.read_text()
    assert out.read_text().strip() not in proc.stdout + proc.stderr, "the key went to --out and to the terminal"
    assert stat.S_IMODE(out.stat().st_mode) & 0o077 == 0
    assert _opens(store.path, "--recovery-key-file", str(out))
    line = assert_user_error(clawfs("key", "add", str(store.path), "recovery", *p1, "--out", str(out)))
    assert "exists" in line

    slots = _slots(store.path)
    assert [s["kind"] for s in slots] == ["passphrase", "passphrase", "keyfile", "recovery"], slots
    assert len({s["id"] for s in slots}) == 4

    # adding with a wrong key is refused and adds nothing
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"wrong\n")
    assert_user_error(clawfs("key", "add", str(store.path), "passphrase", "--passphrase-file", str(wrong),
                             "--new-passphrase-file", str(wrong)))
    assert len(_slots(store.path)) == 4

    # remove the second passphrase: it stops working, the others still work
    slot2 = slots[1]["id"]
    proc = clawfs("key", "remove", str(store.path), str(slot2), *p1)
    assert proc.returncode == 0, proc.stderr
    assert slot2 not in [s["id"] for s in _slots(store.path)]
    line = assert_user_error(clawfs("fsck", str(store.path), "--passphrase-file", str(pass2)))
    assert "passphrase" in line
    assert _opens(store.path, *p1) and _opens(store.path, "--keyfile", str(kf))
    assert _opens(store.path, "--recovery-key-file", str(out))

    assert_user_error(clawfs("key", "remove", str(store.path), "999", *p1), contains="999")
    assert_user_error(clawfs("key", "remove", str(store.path), str(slots[0]["id"]), "--passphrase-file",
                             str(wrong)))
    assert len(_slots(store.path)) == 3

    # down to one slot; the last one cannot go
    for s in _slots(store.path)[1:]:
        proc = clawfs("key", "remove", str(store.path), str(s["id"]), *p1)
        assert proc.returncode == 0, proc.stderr
    assert not _opens(store.path, "--keyfile", str(kf))
    assert not _opens(store.path, "--recovery-key-file", str(out))
    last = _slots(store.path)
    assert len(last) == 1
    line = assert_user_error(clawfs("key", "remove", str(store.path), str(last[0]["id"]), *p1))
    assert "last" in line
    assert _slots(store.path) == last
    assert _opens(store.path, *p1)


# -- info -------------------------------------------------------------------------------------------------------
def test_info_json_fields(tmp_path: Path) -> None:
    (tmp_path / "p").write_bytes(PASSPHRASE)
    target = tmp_path / "i.claw"
    t0 = time.time_ns()
    proc = clawfs("mkfs", str(target), "--passphrase-file", str(tmp_path / "p"), "--block-size", "16K")
    assert proc.returncode == 0, proc.stderr
    i = info(target)  # no key needed, stdin is not a terminal
    expected = {"path", "format_version", "block_size", "store_id", "created_ns", "slots", "counts",
                "mounted_flag", "unclean_shutdowns"}
    assert expected <= set(i), f"missing fields: {expected - set(i)}"
    assert i["path"] == str(target.resolve())
    assert i["format_version"] == FORMAT_VERSION
    assert i["block_size"] == 16384
    assert re.fullmatch(r"[0-9a-f]{32}", i["store_id"]), i["store_id"]
    assert t0 - 10**9 <= i["created_ns"] <= time.time_ns() + 10**9
    assert [(s["kind"], s["kdf"]) for s in i["slots"]] == [("passphrase", "argon2id")]
    assert i["counts"] == {"inodes": 1, "entries": 0, "blocks": 0, "stored_bytes": 0}
    assert i["mounted_flag"] is False and i["unclean_shutdowns"] == 0
    assert "passphrase" in clawfs("info", str(target)).stdout  # the human format works too


@fuse
def test_info_counts_and_mounted_flag(store: StoreFixture, mnt: Path) -> None:
    store.mount(mnt)
    try:
        (mnt / "f.bin").write_bytes(os.urandom(100_000))
        (mnt / "d").mkdir()
        os.sync()
        i = info(store.path)
        assert i["mounted_flag"] is True, "info does not show the store as mounted while it is"
    finally:
        store.umount(mnt)
    i = info(store.path)
    assert i["mounted_flag"] is False
    assert i["counts"]["inodes"] == 3 and i["counts"]["entries"] == 2
    assert i["counts"]["blocks"] == 2 and i["counts"]["stored_bytes"] > 100_000


# -- help -------------------------------------------------------------------------------------------------------
def _command_paths() -> list[list[str]]:
    import click

    from mountd.cli import cli

    paths: list[list[str]] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):  # not .commands: the lazily loaded ones too (cli.LazyGroup)
            cmd = group.get_command(ctx, name)
            assert cmd is not None, name
            paths.append([*prefix, name])
            if isinstance(cmd, click.Group):
                walk(cmd, [*prefix, name])

    walk(cli, [])
    return paths


def test_help_for_every_command() -> None:
    paths = _command_paths()
    expected = {("mkfs",), ("mount",), ("umount",), ("fsck",), ("info",), ("key",), ("key", "list"),
                ("key", "add"), ("key", "remove")}
    assert expected <= {tuple(p) for p in paths}, f"commands missing: {expected - {tuple(p) for p in paths}}"
    for path in [[], *paths]:
        for flag in ("--help", "-h"):
            proc = clawfs(*path, flag)
            what = " ".join(["clawfs", *path, flag])
            assert proc.returncode == 0, f"{what} exited {proc.returncode}: {proc.stderr}"
            assert "Traceback" not in proc.stderr
            assert proc.stdout.startswith(f"Usage: clawfs {' '.join(path)}".rstrip()), f"{what}:\n{proc.stdout}"


# -- messages that point the right way (issue 19) ---------------------------------------------------------------
def test_mount_without_a_key_names_the_mount_options(store: StoreFixture, mnt: Path) -> None:
    line = assert_user_error(clawfs("mount", str(store.path), str(mnt)))
    assert "passphrase_file=" in line and "--passphrase-file" not in line, line
    assert not is_mounted(mnt)


def _daemon_pid(store: Path) -> int:
    """The mount daemon holding `store` (the process with the store file open)."""
    from faults import pids_holding

    pids = [p for p in pids_holding(store) if p != os.getpid()]
    assert len(pids) == 1, pids
    return pids[0]


@fuse
def test_remount_over_a_dead_mount_clears_it(store: StoreFixture, mnt: Path) -> None:
    """A daemon killed outright leaves a dead FUSE mount (ENOTCONN): mounting again clears it and says so, and
    says at mount and in `info` that the store was not cleanly unmounted."""
    store.mount(mnt)
    with open(mnt / "kept", "w") as f:
        f.write("acknowledged\n")
        f.flush()
        os.fsync(f.fileno())
    os.kill(_daemon_pid(store.path), 9)
    with pytest.raises(OSError):
        os.stat(mnt / "kept")
    assert is_mounted(mnt)
    shown = clawfs("info", str(store.path))
    assert "NOT cleanly unmounted" in shown.stdout and "fsck" in shown.stderr, shown
    proc = clawfs("mount", str(store.path), str(mnt), "-o", f"passphrase_file={store.passfile},noindex")
    assert proc.returncode == 0, proc.stderr
    try:
        assert "does not exist" not in proc.stderr
        assert "stale mount" in proc.stderr and "unmounted" in proc.stderr, proc.stderr
        assert "not cleanly unmounted" in proc.stderr and "clawfs fsck" in proc.stderr, proc.stderr
        assert (mnt / "kept").read_text() == "acknowledged\n"
    finally:
        store.umount(mnt)
    assert "clean" in clawfs("info", str(store.path)).stdout


def test_damaged_key_slot_is_said_to_fail_authentication(store: StoreFixture) -> None:
    """An edited KDF field cannot be told from a wrong passphrase, so the message says both; an out-of-bounds
    or unreadable one is refused at once, without a traceback, as a damaged slot."""
    def set_params(params: str) -> None:
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE key_slots SET params = ? WHERE kind = 'passphrase'", (params,))
        db.close()

    with sqlite3.connect(store.path) as db:
        original = json.loads(db.execute("SELECT params FROM key_slots WHERE kind = 'passphrase'").fetchone()[0])
    db.close()
    set_params(json.dumps({**original, "iterations": original["iterations"] + 1}))
    line = assert_user_error(clawfs("fsck", str(store.path), *store.key_args()))
    assert "failed authentication" in line and "damaged" in line, line
    for bad, said in (({**original, "memory_kib": 2**40}, "memory_kib"), ({**original, "lanes": "four"}, "lanes"),
                      ({**original, "salt": "***"}, "salt")):
        set_params(json.dumps(bad))
        line = assert_user_error(clawfs("fsck", str(store.path), *store.key_args()))
        assert "damaged" in line and said in line, line
    set_params("{not json")
    for args in (["fsck", str(store.path), *store.key_args()], ["info", str(store.path)],
                 ["key", "list", str(store.path)]):
        line = assert_user_error(clawfs(*args))
        assert "damaged" in line, line
    set_params(json.dumps(original))
    assert _opens(store.path, *store.key_args())


@pytest.mark.parametrize("option", ["--passphrase-file", "--keyfile", "--recovery-key-file"])
def test_endless_key_file_is_refused(store: StoreFixture, option: str) -> None:
    """`--passphrase-file /dev/zero` reads a bounded prefix and says the file is too large."""
    line = assert_user_error(clawfs("fsck", str(store.path), option, "/dev/zero"))
    assert "larger than" in line, line


def test_key_add_passphrase_names_new_passphrase_file(store: StoreFixture) -> None:
    line = assert_user_error(clawfs("key", "add", str(store.path), "passphrase", *store.key_args()))
    assert "--new-passphrase-file" in line, line
    assert "--passphrase-file" not in line.replace("--new-passphrase-file", ""), line


def test_key_add_new_keyfile_created_when_missing(store: StoreFixture) -> None:
    """As `mkfs --keyfile` does: a missing keyfile is made with 32 random bytes, 0600."""
    kf = store.tmp / "made-by-key-add.bin"
    proc = clawfs("key", "add", str(store.path), "keyfile", *store.key_args(), "--new-keyfile", str(kf))
    assert proc.returncode == 0, proc.stderr
    assert "created keyfile" in proc.stderr
    assert len(kf.read_bytes()) == 32 and stat.S_IMODE(kf.stat().st_mode) == 0o600
    assert _opens(store.path, "--keyfile", str(kf))
    line = assert_user_error(clawfs("key", "add", str(store.path), "keyfile", *store.key_args(),
                                    "--new-keyfile", str(store.tmp / "no" / "dir" / "k")))
    assert "does not exist" in line, line


@fuse
def test_search_says_cut_queries_and_pending_files(store: StoreFixture, mnt: Path) -> None:
    """A 10 kB query through a mount is cut to a name's 255 bytes (said in bytes, not 'None tokens'); a search
    says how many files still wait to be indexed."""
    assert clawfs("reindex", str(store.path), *store.key_args(), "--embedder", "hashing-384").returncode == 0
    store.mount(mnt, index=True)
    try:
        (mnt / "grant.md").write_text("the analytical engine grant is due in March\n")
        deadline = time.monotonic() + 120
        while json.loads((mnt / ".clawfs" / "status").read_text())["pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
        proc = clawfs("search", "grant " * 1700, "--mount", str(mnt))
        assert proc.returncode == 0, proc.stderr
        assert "None" not in proc.stderr and "255 bytes" in proc.stderr, proc.stderr
    finally:
        store.umount(mnt)
    store.mount(mnt)  # no indexer: what is written now waits in the queue
    try:
        for i in range(3):
            (mnt / f"later-{i}.md").write_text(f"note {i} about the grant\n")
    finally:
        store.umount(mnt)
    proc = clawfs("search", "grant", "--store", str(store.path), *store.key_args())
    assert proc.returncode == 0, proc.stderr
    assert "3 files are still waiting to be indexed" in proc.stderr, proc.stderr


def test_make_demo_keeps_the_previous_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make demo` run again moves the store it told the user to mount again aside, and says where."""
    from mountd import demo

    root = tmp_path / "demo"
    root.mkdir()
    (root / "agent.claw").write_bytes(b"the user's demo store")
    (root / "passphrase").write_text("pw\n")
    aside = demo.clear_previous(root)
    assert aside is not None and not root.exists()
    assert (aside / "agent.claw").read_bytes() == b"the user's demo store"
    assert (aside / "passphrase").read_text() == "pw\n"
    assert aside.name in capsys.readouterr().out
    root.mkdir()
    (root / "mnt").mkdir()
    assert demo.clear_previous(root) is None and not root.exists()  # nothing of value: simply cleared


def test_mkfs_into_a_missing_directory(tmp_path: Path) -> None:
    """Not "no such store": the folder is what is missing.  (Read-only media: tests/test_store_media.py.)"""
    (tmp_path / "p").write_bytes(PASSPHRASE)
    target = tmp_path / "not" / "here" / "s.claw"
    line = assert_user_error(clawfs("mkfs", str(target), "--passphrase-file", str(tmp_path / "p")))
    assert "does not exist" in line and str(target.parent) in line and "no such store" not in line, line
    assert not target.parent.exists()
