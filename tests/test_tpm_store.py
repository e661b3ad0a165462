"""TPM key slots end to end: the real `clawfs` command in new processes against the swtpm simulator.

mkfs --tpm, then mount / fsck with no passphrase (stdin is /dev/null, so nothing can be typed); PCR 7 extended
(refused, passphrase fallback, re-seal with `key add-tpm`, old slot removed); PCR sets; another TPM; PIN, wrong
PIN and lockout; rollback protection against a restored older copy; mkfs against a TPM that is not there.

The KEK is unsealed and the master key unwrapped by the test itself (kernel.tpm + clawfs.crypto), so every test
can check that neither ever shows up in what the commands print, in the mount log or in the daemon's command
line.  TCTIs contain a comma (`swtpm:host=...,port=P`); inside `-o` it is escaped as `\\,` (the libfuse
convention for option values); see test_mount_option_tcti_as_documented for the unescaped form.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import swtpm
from faults import assert_user_error, lazy_unmount, mount_source, pids_holding
from helpers import CLAWFS, PASSPHRASE, is_mounted

from clawfs import crypto
from kernel import tpm

# The fixture, bound by assignment (see test_tpm_sealer.py: a plain import makes ruff report F811).
swtpm_tcti = swtpm.swtpm_tcti
pytestmark = pytest.mark.tpm

PIN = b"pin-7f3a-4711-tpm"
BAD_PIN = b"pin-0000-wrong"
MOUNT_HELPER = "/usr/sbin/mount.clawfs"
TIMEOUT = 60


def opt_tcti(tcti: str) -> str:
    """A TCTI as a value inside `-o a,b,c`: its commas escaped."""
    return tcti.replace(",", "\\,")


def dead_tcti() -> str:
    """A swtpm TCTI where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"swtpm:host=127.0.0.1,port={port}"


def final_error(proc: subprocess.CompletedProcess[str]) -> str:
    """A failed command: non-zero exit, no traceback, and its last stderr line is the `clawfs: ...` message."""
    cmd = " ".join(str(a) for a in proc.args)
    assert proc.returncode != 0, f"{cmd} succeeded but should have failed:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"{cmd} printed a traceback:\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert lines, f"{cmd} failed without saying why"
    assert lines[-1].startswith("clawfs: "), f"{cmd}: last stderr line is not a clawfs message: {lines[-1]!r}"
    return lines[-1]


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    cmd = " ".join(str(a) for a in proc.args)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"{cmd} printed a traceback:\n{proc.stderr}"
    return proc


def _forms(secret: bytes) -> list[str]:
    """Ways a secret could show up in text."""
    return [secret.decode("latin-1"), repr(secret), secret.hex(), secret.hex().upper(),
            base64.b64encode(secret).decode(), base64.b64encode(secret).decode().rstrip("="),
            base64.urlsafe_b64encode(secret).decode().rstrip("=")]


class Ctx:
    """One test's store directory, TPM, key files, command log and mounts."""

    def __init__(self, tmp: Path, tcti: str) -> None:
        self.tmp, self.tcti = tmp, tcti
        self.passfile = tmp / "passphrase"
        self.passfile.write_bytes(PASSPHRASE + b"\n")
        self.pinfile = tmp / "pin"
        self.pinfile.write_bytes(PIN + b"\n")
        self.badpinfile = tmp / "badpin"
        self.badpinfile.write_bytes(BAD_PIN + b"\n")
        self.mnt = tmp / "mnt"
        self.mnt.mkdir()
        self.log = tmp / "mount.log"
        self.outputs: list[str] = []
        self.keys: list[bytes] = []  # KEKs and master keys, recovered by the test (record_keys)
        self.mounted: set[Path] = set()

    # -- running things -------------------------------------------------------------------------------------
    def sh(self, *cmd: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A new process with no terminal and no key or TPM picked up from the test's environment."""
        env = {k: v for k, v in os.environ.items() if k not in ("CLAWFS_PASSPHRASE_FILE", "CLAWFS_TPM_TCTI")}
        env.update(env_extra or {})
        proc = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                              timeout=TIMEOUT)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def clawfs(self, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.sh(CLAWFS, *args, env_extra=env_extra)

    def mkfs(self, name: str, *extra: str, pin: bool = False) -> Path:
        """`clawfs mkfs --tpm` with a passphrase slot too; records the store's KEK and master key."""
        store = self.tmp / name
        pin_args = ["--tpm-pin-file", str(self.pinfile)] if pin else []
        ok(self.clawfs("mkfs", str(store), "--tpm", "--passphrase-file", str(self.passfile),
                       "--tpm-tcti", self.tcti, *pin_args, *extra))
        self.record_keys(store, pin=PIN if pin else None)
        return store

    def record_keys(self, store: Path, slot_id: int | None = None, pin: bytes | None = None) -> None:
        self.keys += tpm_secrets(store, self.tcti, pin, slot_id)

    def mount(self, store: Path, *opts: str, env_extra: dict[str, str] | None = None,
              via_mount8: bool = False) -> subprocess.CompletedProcess[str]:
        """`clawfs mount STORE MNT -o log_file=...,OPTS` (or `mount -t clawfs ...`)."""
        options = ",".join([f"log_file={self.log}", *opts])
        self.mounted.add(self.mnt)
        if via_mount8:
            return self.sh("mount", "-t", "clawfs", str(store), str(self.mnt), "-o", options, env_extra=env_extra)
        return self.clawfs("mount", str(store), str(self.mnt), "-o", options, env_extra=env_extra)

    def tcti_opt(self, tcti: str | None = None) -> str:
        return f"tpm_tcti={opt_tcti(tcti or self.tcti)}"

    def umount(self) -> None:
        ok(self.clawfs("umount", str(self.mnt)))
        assert not is_mounted(self.mnt), f"{self.mnt} is still mounted after `clawfs umount`"

    def fsck_clean(self, store: Path, *key_args: str, env_extra: dict[str, str] | None = None) -> None:
        proc = ok(self.clawfs("fsck", str(store), *key_args, "--json", env_extra=env_extra))
        report = json.loads(proc.stdout)
        assert report["clean"], f"fsck found problems: {report['problems']}"

    def key_list(self, store: Path) -> list[dict[str, Any]]:
        slots: list[dict[str, Any]] = json.loads(ok(self.clawfs("key", "list", str(store), "--json")).stdout)
        return slots

    def tpm_slots(self, store: Path) -> list[dict[str, Any]]:
        return [s for s in self.key_list(store) if s["kind"] == "tpm2"]

    def info(self, store: Path) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(ok(self.clawfs("info", str(store), "--json")).stdout)
        return data

    # -- checks ---------------------------------------------------------------------------------------------
    def check_process_titles(self, store: Path) -> None:
        """The mount daemon's command line and environment carry no key material."""
        pids = pids_holding(store)
        assert pids, f"no process holds {store} while it is mounted"
        for pid in pids:
            for what in ("cmdline", "environ"):
                with contextlib.suppress(OSError):
                    blob = Path(f"/proc/{pid}/{what}").read_bytes()
                    for secret in self.keys:
                        assert secret not in blob, f"key material in /proc/{pid}/{what}"
                        text = blob.decode("latin-1")
                        assert not any(f in text for f in _forms(secret)[1:]), f"key material in /proc/{pid}/{what}"

    def assert_no_leaks(self) -> None:
        texts = [*self.outputs, self.log.read_text(errors="replace") if self.log.exists() else ""]
        for text in texts:
            assert "Traceback" not in text, f"a traceback was printed:\n{text}"
            for secret in [PASSPHRASE, PIN, BAD_PIN, *self.keys]:
                for form in _forms(secret):
                    assert form not in text, "a secret (passphrase, PIN, KEK or master key) was printed or logged"

    def cleanup(self) -> None:
        for mnt in self.mounted:
            if is_mounted(mnt):
                with contextlib.suppress(Exception):
                    subprocess.run([CLAWFS, "umount", str(mnt)], capture_output=True, timeout=TIMEOUT)
                lazy_unmount(mnt)


def tpm_secrets(store: Path, tcti: str, pin: bytes | None, slot_id: int | None = None) -> list[bytes]:
    """(KEK, master key) of the store's tpm2 slot `slot_id` (default: the first), recovered by the test itself
    from the store file's raw rows, as an attacker holding the file and the TPM would, not through `Store`."""
    conn = sqlite3.connect(store)
    try:
        store_id = bytes(conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])
        params, wrapped = conn.execute(
            "SELECT params, wrapped FROM key_slots WHERE kind = 'tpm2' AND id = coalesce(?, id) ORDER BY id",
            (slot_id,)).fetchone()
    finally:
        conn.close()
    kek = tpm.unseal(json.loads(params)["sealed"], pin=pin, tcti=tcti)
    master = crypto.unwrap_key(kek, bytes(wrapped), store_id, "tpm2")
    assert master is not None and len(master) == crypto.MASTER_KEY_BYTES, "the tpm2 slot's KEK does not open it"
    return [kek, master]


@pytest.fixture
def ctx(tmp_path: Path, swtpm_tcti: str) -> Iterator[Ctx]:
    c = Ctx(tmp_path, swtpm_tcti)
    try:
        yield c
    finally:
        c.cleanup()


def write_and_read(mnt: Path) -> dict[str, bytes]:
    files = {"notes.txt": b"sealed by the TPM\n", "sub/data.bin": os.urandom(200_000)}
    (mnt / "sub").mkdir()
    for name, data in files.items():
        (mnt / name).write_bytes(data)
    for name, data in files.items():
        assert (mnt / name).read_bytes() == data, f"{name} reads back different"
    return files


def assert_files(mnt: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (mnt / name).read_bytes() == data, f"{name} differs after remount"


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.fuse
def test_mkfs_tpm_then_mount_and_fsck_without_passphrase(ctx: Ctx) -> None:
    store = ctx.mkfs("agent.claw")
    assert ctx.info(store)["rollback_protection"] is False

    proc = ctx.mount(store, ctx.tcti_opt())
    ok(proc)
    assert is_mounted(ctx.mnt)
    assert "TPM slot" not in proc.stderr, f"the TPM slot did not open first:\n{proc.stderr}"
    files = write_and_read(ctx.mnt)
    ctx.check_process_titles(store)
    ctx.umount()
    ctx.fsck_clean(store, "--tpm-tcti", ctx.tcti)

    # The same through CLAWFS_TPM_TCTI, for mount and fsck.
    ok(ctx.mount(store, env_extra={"CLAWFS_TPM_TCTI": ctx.tcti}))
    assert_files(ctx.mnt, files)
    ctx.umount()
    ctx.fsck_clean(store, env_extra={"CLAWFS_TPM_TCTI": ctx.tcti})

    # It really is the TPM that opens it: without it (notpm / --no-tpm) and without a passphrase, nothing does.
    line = final_error(ctx.mount(store, ctx.tcti_opt(), "notpm"))
    assert "no key given" in line, line
    assert not is_mounted(ctx.mnt)
    line = final_error(ctx.clawfs("fsck", str(store), "--tpm-tcti", ctx.tcti, "--no-tpm"))
    assert "no key given" in line, line
    ok(ctx.mount(store, ctx.tcti_opt(), "notpm", f"passphrase_file={ctx.passfile}"))
    assert_files(ctx.mnt, files)
    ctx.umount()
    ctx.assert_no_leaks()


@pytest.mark.fuse
def test_mount_t_clawfs_without_passphrase(ctx: Ctx) -> None:
    if not (os.path.exists(MOUNT_HELPER) or shutil.which("mount.clawfs", path="/sbin:/usr/sbin")):
        pytest.skip(f"mount(8) helper {MOUNT_HELPER} is not installed (`make setup` installs it)")
    store = ctx.mkfs("agent.claw")
    ok(ctx.mount(store, ctx.tcti_opt(), via_mount8=True))
    assert mount_source(ctx.mnt) == ("fuse.clawfs", str(store.resolve()))
    files = write_and_read(ctx.mnt)
    ctx.umount()
    ok(ctx.mount(store, via_mount8=True, env_extra={"CLAWFS_TPM_TCTI": ctx.tcti}))
    assert_files(ctx.mnt, files)
    ctx.umount()
    ctx.fsck_clean(store, "--tpm-tcti", ctx.tcti)
    ctx.assert_no_leaks()


@pytest.mark.parametrize(
    ("pcr_arg", "pcrs", "shown", "extend", "still_opens"),
    [
        (None, [7], "pcrs=7", 0, True),  # the default binds PCR 7 only: a change of PCR 0 does not matter
        ("none", [], "pcrs=none", 7, True),
        ("0,2,7", [0, 2, 7], "pcrs=0,2,7", 2, False),
    ],
    ids=["default", "none", "0,2,7"],
)
def test_key_list_shows_pcrs_and_binding_holds(ctx: Ctx, pcr_arg: str | None, pcrs: list[int], shown: str,
                                               extend: int, still_opens: bool) -> None:
    store = ctx.mkfs("agent.claw", *(["--tpm-pcrs", pcr_arg] if pcr_arg else []))
    slots = ctx.key_list(store)
    tpm2 = [s for s in slots if s["kind"] == "tpm2"]
    assert len(tpm2) == 1, f"expected one tpm2 slot: {slots}"
    assert tpm2[0]["pcrs"] == pcrs
    assert tpm2[0]["pin"] is False
    assert [s["kind"] for s in slots].count("passphrase") == 1
    text = ok(ctx.clawfs("key", "list", str(store))).stdout.splitlines()
    rows = [line.split("\t") for line in text]
    tpm_rows = [r for r in rows if len(r) > 2 and r[1] == "tpm2"]
    assert len(tpm_rows) == 1 and tpm_rows[0][0] == str(tpm2[0]["id"]) and tpm_rows[0][2] == shown, text

    tpm.pcr_extend(extend, b"a different boot", ctx.tcti)
    proc = ctx.clawfs("fsck", str(store), "--tpm-tcti", ctx.tcti, "--json")
    if still_opens:
        ok(proc)
        assert json.loads(proc.stdout)["clean"]
    else:
        line = final_error(proc)
        assert f"PCR {extend} " in line, f"the message does not name PCR {extend}: {line}"
        assert "clawfs key add-tpm" in line, line
    ctx.assert_no_leaks()


@pytest.mark.fuse
def test_pcr7_changed_refused_then_fallback_reseal_and_remove(ctx: Ctx) -> None:
    store = ctx.mkfs("agent.claw")
    ok(ctx.mount(store, ctx.tcti_opt()))
    files = write_and_read(ctx.mnt)
    ctx.umount()
    (old_slot,) = [s["id"] for s in ctx.tpm_slots(store)]

    tpm.pcr_extend(7, b"Secure Boot db update", ctx.tcti)

    proc = ctx.mount(store, ctx.tcti_opt())
    line = final_error(proc)
    assert not is_mounted(ctx.mnt)
    assert "PCR 7 " in line, f"the message does not name PCR 7: {line}"
    assert "clawfs key add-tpm" in line, f"the message does not say how to re-seal: {line}"

    proc = ok(ctx.mount(store, ctx.tcti_opt(), f"passphrase_file={ctx.passfile}"))
    assert is_mounted(ctx.mnt)
    warning = proc.stderr + ctx.log.read_text()
    assert f"TPM slot {old_slot}" in warning and "PCR 7 " in warning, (
        f"no warning that the TPM slot did not open:\n{warning}")
    assert_files(ctx.mnt, files)
    ctx.umount()

    ok(ctx.clawfs("key", "add-tpm", str(store), "--passphrase-file", str(ctx.passfile), "--tpm-tcti", ctx.tcti))
    tpm2 = ctx.tpm_slots(store)
    assert len(tpm2) == 2 and tpm2[0]["id"] == old_slot, tpm2
    new_slot = tpm2[1]["id"]
    assert tpm2[1]["pcrs"] == [7]
    ctx.record_keys(store, new_slot)
    ok(ctx.clawfs("key", "remove", str(store), str(old_slot), "--passphrase-file", str(ctx.passfile)))
    assert [s["id"] for s in ctx.tpm_slots(store)] == [new_slot]
    assert [s["kind"] for s in ctx.key_list(store)].count("passphrase") == 1

    proc = ok(ctx.mount(store, ctx.tcti_opt()))
    assert is_mounted(ctx.mnt)
    assert "TPM slot" not in proc.stderr, f"the new slot did not open first:\n{proc.stderr}"
    assert_files(ctx.mnt, files)
    ctx.umount()
    ctx.fsck_clean(store, "--tpm-tcti", ctx.tcti)
    ctx.assert_no_leaks()


@pytest.mark.fuse
def test_store_against_another_tpm(ctx: Ctx) -> None:
    store = ctx.mkfs("agent.claw")
    with swtpm.running_swtpm(ctx.tmp / "swtpm-other") as other:
        proc = ctx.mount(store, ctx.tcti_opt(other))
        line = final_error(proc)
        assert not is_mounted(ctx.mnt)
        assert "different TPM" in line, f"the message does not say the slot is from another TPM: {line}"
        assert "clawfs key add-tpm" in line, line

        proc = ok(ctx.mount(store, ctx.tcti_opt(other), f"passphrase_file={ctx.passfile}"))
        assert is_mounted(ctx.mnt)
        assert "different TPM" in proc.stderr + ctx.log.read_text(), proc.stderr
        files = write_and_read(ctx.mnt)
        ctx.umount()
    # Back on the TPM that sealed it: no passphrase needed.
    ok(ctx.mount(store, ctx.tcti_opt()))
    assert_files(ctx.mnt, files)
    ctx.umount()
    ctx.assert_no_leaks()


@pytest.mark.fuse
def test_pin(ctx: Ctx) -> None:
    store = ctx.mkfs("agent.claw", pin=True)
    (slot,) = ctx.tpm_slots(store)
    assert slot["pin"] is True and slot["pcrs"] == [7], slot
    assert "\tpcrs=7,pin\t" in ok(ctx.clawfs("key", "list", str(store))).stdout

    ok(ctx.mount(store, ctx.tcti_opt(), f"tpm_pin_file={ctx.pinfile}"))
    files = write_and_read(ctx.mnt)
    ctx.umount()

    line = final_error(ctx.mount(store, ctx.tcti_opt(), f"tpm_pin_file={ctx.badpinfile}"))
    assert not is_mounted(ctx.mnt)
    assert "wrong TPM PIN" in line, f"the message does not say the PIN is wrong: {line}"

    proc = ok(ctx.mount(store, ctx.tcti_opt(), f"tpm_pin_file={ctx.badpinfile}", f"passphrase_file={ctx.passfile}"))
    assert "wrong TPM PIN" in proc.stderr, proc.stderr
    assert_files(ctx.mnt, files)
    ctx.umount()

    # No PIN and no terminal to ask on: a clear message, and no PIN attempt counted by the TPM.
    line = final_error(ctx.mount(store, ctx.tcti_opt()))
    assert not is_mounted(ctx.mnt)
    assert "PIN" in line and ("tpm_pin_file" in line or "tpm-pin-file" in line), line
    assert "wrong" not in line, f"no PIN was given, yet the message speaks of a wrong one: {line}"

    # Two wrong PINs so far; swtpm locks out at three: the right PIN must still open it.
    ok(ctx.mount(store, ctx.tcti_opt(), f"tpm_pin_file={ctx.pinfile}"))
    assert_files(ctx.mnt, files)
    ctx.umount()
    ctx.fsck_clean(store, "--tpm-tcti", ctx.tcti, "--tpm-pin-file", str(ctx.pinfile))
    ctx.assert_no_leaks()


def test_pin_lockout(ctx: Ctx) -> None:
    store = ctx.mkfs("agent.claw", pin=True)
    bad = ["fsck", str(store), "--tpm-tcti", ctx.tcti, "--tpm-pin-file", str(ctx.badpinfile), "--json"]
    lines = [final_error(ctx.clawfs(*bad)) for _ in range(4)]
    assert all("PIN" in line for line in lines[:3]), lines
    assert "lockout" in lines[2], f"the last allowed failure does not warn of the lockout: {lines[2]}"
    assert "lockout" in lines[3] and "wrong TPM PIN" not in lines[3], lines[3]
    # Locked out, the right PIN is refused too, with the lockout message; the passphrase still works.
    good = ["fsck", str(store), "--tpm-tcti", ctx.tcti, "--tpm-pin-file", str(ctx.pinfile), "--json"]
    line = final_error(ctx.clawfs(*good))
    assert "lockout" in line and "tpm2_dictionarylockout" in line, line
    proc = ok(ctx.clawfs(*good, "--passphrase-file", str(ctx.passfile)))
    assert json.loads(proc.stdout)["clean"]
    ctx.assert_no_leaks()


def _store_files(store: Path) -> list[Path]:
    return [Path(str(store) + suffix) for suffix in ("", "-wal", "-shm")]


@pytest.mark.fuse
def test_rollback_protection(ctx: Ctx) -> None:
    store = ctx.mkfs("agent.claw", "--tpm-rollback-protection")
    assert ctx.info(store)["rollback_protection"] is True
    ok(ctx.mount(store, ctx.tcti_opt()))
    files = write_and_read(ctx.mnt)
    ctx.umount()

    # Copy the unmounted store aside (main file and any WAL; the shared-memory index is rebuilt).
    saved = ctx.tmp / "saved"
    saved.mkdir()
    for f in _store_files(store)[:2]:
        if f.exists():
            shutil.copy2(f, saved / f.name)

    for i in range(2):
        ok(ctx.mount(store, ctx.tcti_opt()))
        (ctx.mnt / f"newer-{i}.txt").write_bytes(b"written after the copy\n")
        ctx.umount()

    for f in _store_files(store):
        f.unlink(missing_ok=True)
    for f in saved.iterdir():
        shutil.copy2(f, ctx.tmp / f.name)

    line = assert_user_error(ctx.mount(store, ctx.tcti_opt()), contains="rollback")
    assert "accept_rollback" in line, f"the message does not say how to accept the rollback: {line}"
    assert not is_mounted(ctx.mnt)
    # A read-only mount of the old copy is refused as well, and so is a mount with a passphrase.
    assert_user_error(ctx.mount(store, ctx.tcti_opt(), "ro"), contains="rollback")
    assert_user_error(ctx.mount(store, ctx.tcti_opt(), f"passphrase_file={ctx.passfile}"), contains="rollback")
    assert not is_mounted(ctx.mnt)

    ok(ctx.mount(store, ctx.tcti_opt(), "accept_rollback"))
    assert is_mounted(ctx.mnt)
    assert_files(ctx.mnt, files)
    assert not (ctx.mnt / "newer-0.txt").exists(), "the restored copy is not the old one"
    ctx.umount()
    assert "rolled-back" in ctx.log.read_text(), "accepting a rollback leaves no trace in the log"

    # Accepted once, the store is current again: a plain mount works, twice.
    for _ in range(2):
        ok(ctx.mount(store, ctx.tcti_opt()))
        assert_files(ctx.mnt, files)
        ctx.umount()
    ctx.fsck_clean(store, "--tpm-tcti", ctx.tcti)
    assert ctx.info(store)["rollback_protection"] is True
    ctx.assert_no_leaks()


@pytest.mark.parametrize("extra", [[], ["--tpm-rollback-protection"]], ids=["plain", "rollback"])
def test_mkfs_tpm_nothing_listening(ctx: Ctx, extra: list[str]) -> None:
    store = ctx.tmp / "agent.claw"
    proc = ctx.clawfs("mkfs", str(store), "--tpm", "--passphrase-file", str(ctx.passfile),
                      "--tpm-tcti", dead_tcti(), *extra)
    line = assert_user_error(proc, contains="TPM")
    assert "--tpm-tcti" in line or "CLAWFS_TPM_TCTI" in line, line
    left = [f.name for f in _store_files(store) if f.exists()]
    assert not left, f"a failed mkfs left {left} behind"
    ctx.assert_no_leaks()


def test_mkfs_force_tpm_nothing_listening_keeps_old_store(ctx: Ctx) -> None:
    """A mkfs --force that fails before it can create anything must not have destroyed the old store."""
    store = ctx.mkfs("agent.claw")
    before = store.read_bytes()
    proc = ctx.clawfs("mkfs", str(store), "--force", "--tpm", "--passphrase-file", str(ctx.passfile),
                      "--tpm-tcti", dead_tcti())
    assert_user_error(proc, contains="TPM")
    assert store.exists(), "mkfs --force deleted the existing store, then failed to seal: the data is gone"
    assert store.read_bytes() == before, "the failed mkfs --force changed the existing store"
    ctx.fsck_clean(store, "--tpm-tcti", ctx.tcti)


def test_tpm_unlock_failures_are_one_line(ctx: Ctx) -> None:
    """Each TPM failure without another key: exactly one line `clawfs: ...` (no log line repeating it)."""
    plain = ctx.mkfs("plain.claw")
    with_pin = ctx.mkfs("pin.claw", pin=True)
    cases: list[tuple[str, list[str]]] = [
        ("PIN required", ["fsck", str(with_pin), "--tpm-tcti", ctx.tcti]),
        ("wrong PIN", ["fsck", str(with_pin), "--tpm-tcti", ctx.tcti, "--tpm-pin-file", str(ctx.badpinfile)]),
        ("no TPM", ["fsck", str(plain), "--tpm-tcti", dead_tcti()]),
        ("mount, no TPM", ["mount", str(plain), str(ctx.mnt), "-o", ctx.tcti_opt(dead_tcti())]),
    ]
    results = [(what, ctx.clawfs(*args)) for what, args in cases]
    tpm.pcr_extend(7, b"changed", ctx.tcti)
    results.append(("mount, PCR 7 changed", ctx.clawfs("mount", str(plain), str(ctx.mnt), "-o", ctx.tcti_opt())))
    failures = []
    for what, proc in results:
        assert not is_mounted(ctx.mnt)
        final_error(proc)
        lines = proc.stderr.strip().splitlines()
        if len(lines) != 1:
            failures.append(f"{what}: {len(lines)} lines on stderr:\n{proc.stderr}")
    assert not failures, "\n".join(failures)
    ctx.assert_no_leaks()


@pytest.mark.fuse
def test_mount_option_tcti_as_documented(ctx: Ctx) -> None:
    """`-o tpm_tcti=swtpm:host=127.0.0.1,port=P` (the issue's TCTI form, unescaped): it mounts, or the one-line
    refusal says how to write a comma inside an option value."""
    store = ctx.mkfs("agent.claw")
    proc = ctx.mount(store, f"tpm_tcti={ctx.tcti}")
    if proc.returncode == 0:
        assert is_mounted(ctx.mnt)
        ctx.umount()
    else:
        line = assert_user_error(proc)
        assert "\\," in line, f"refused without saying how to write the TCTI in -o: {line}"


def test_key_add_tpm_prints_only_its_result(ctx: Ctx) -> None:
    """`key add-tpm` says what it added, nothing else (no Python warnings about its own options)."""
    store = ctx.mkfs("agent.claw")
    proc = ok(ctx.clawfs("key", "add-tpm", str(store), "--passphrase-file", str(ctx.passfile),
                         "--tpm-tcti", ctx.tcti, "--tpm-pcrs", "none"))
    tpm2 = ctx.tpm_slots(store)
    assert [s["pcrs"] for s in tpm2] == [[7], []], tpm2
    ctx.record_keys(store, tpm2[1]["id"])
    assert proc.stderr.strip().splitlines() == [f"clawfs: added tpm2 slot {tpm2[1]['id']} (pcrs none)"], proc.stderr
    ctx.assert_no_leaks()
