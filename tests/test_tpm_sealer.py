"""kernel.tpm against the swtpm simulator: sealing, PCR binding, PIN and lockout, foreign TPMs, NV counters.

Every expected failure also checks that neither the secret nor the PIN leaks into the exception (str and repr,
along the whole __cause__/__context__ chain).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import swtpm
from swtpm import SKIP_REASON, have_swtpm, running_swtpm, tools_env

from kernel import tpm

# The fixture, bound by assignment: `from swtpm import swtpm_tcti` works for pytest too, but then ruff reports
# every test parameter of that name as a redefinition of an unused import (F811).
swtpm_tcti = swtpm.swtpm_tcti
pytestmark = pytest.mark.tpm
needs_swtpm = pytest.mark.skipif(not have_swtpm(), reason=SKIP_REASON)  # for tests without the fixture

REPO = Path(__file__).resolve().parents[1]
SECRET = b"K3K-sealed-secret:9f1c2e7a5b3d4c6e8a0b1c2d3e4f5a6b"
PIN = b"pin-4711-correct"
BAD_PIN = b"pin-0000-wrong"


def _forms(value: bytes) -> list[str]:
    """Ways a secret could show up in text."""
    return [value.decode("latin-1"), repr(value), value.hex(), base64.b64encode(value).decode()]


def assert_no_leak(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen) + repr(seen)
        for value in (SECRET, PIN, BAD_PIN):
            for form in _forms(value):
                assert form not in text, f"{type(seen).__name__} leaks a secret"
        seen = seen.__cause__ or seen.__context__


def expect(kind: type[tpm.TpmError], fn: Callable[[], Any]) -> tpm.TpmError:
    """Call fn, require it to raise ``kind`` (exactly a subclass of it), check the message for leaks."""
    with pytest.raises(kind) as info:
        fn()
    assert_no_leak(info.value)
    return info.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tpm2_tool(tcti: str, *args: str) -> None:
    if shutil.which(args[0]) is None:
        pytest.skip(f"{args[0]} not installed: make setup installs tpm2-tools")
    proc = subprocess.run(list(args), env=tools_env(tcti), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"


CHILD = """
import json, sys
from kernel import tpm
sealed = json.load(open(sys.argv[1]))
sys.stdout.write(tpm.unseal(sealed, pin=None, tcti=sys.argv[2]).hex())
try:
    tpm.unseal(sealed, pin=None, tcti="swtpm:host=127.0.0.1,port=" + sys.argv[3])
except tpm.TpmUnavailable:
    pass
"""


def test_round_trip_in_a_new_process(swtpm_tcti: str, tmp_path: Path) -> None:
    sealed = tpm.seal(SECRET, pcrs=[7], pin=None, tcti=swtpm_tcti)
    blob = tmp_path / "sealed.json"
    blob.write_text(json.dumps(sealed))
    assert sealed["pcrs"] == [7] and sealed["pcr_bank"] == "sha256" and sealed["pin"] is False
    assert set(sealed["pcr_values"]) == {"7"} and sealed["primary"] == tpm.PRIMARY_TEMPLATE
    assert not any(form in blob.read_text() for form in _forms(SECRET))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(blob), swtpm_tcti, str(free_port())],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert bytes.fromhex(proc.stdout) == SECRET
    assert proc.stderr == ""  # libtss2's own error logging is silenced, even for the failed connection


def test_pcr_change_is_reported_and_reseal_works(swtpm_tcti: str) -> None:
    sealed = tpm.seal(SECRET, pcrs=[0, 7], pin=None, tcti=swtpm_tcti)
    assert tpm.unseal(sealed, pin=None, tcti=swtpm_tcti) == SECRET
    tpm.pcr_extend(7, b"a different Secure Boot policy", swtpm_tcti)
    err = expect(tpm.PcrMismatch, lambda: tpm.unseal(sealed, pin=None, tcti=swtpm_tcti))
    assert isinstance(err, tpm.PcrMismatch) and err.changed == [7]
    assert "PCR 7" in str(err) and "clawfs key add-tpm" in str(err)
    resealed = tpm.seal(SECRET, pcrs=[0, 7], pin=None, tcti=swtpm_tcti)
    assert tpm.unseal(resealed, pin=None, tcti=swtpm_tcti) == SECRET


def test_no_pcrs_ignores_pcr_changes(swtpm_tcti: str) -> None:
    sealed = tpm.seal(SECRET, pcrs=[], pin=None, tcti=swtpm_tcti)
    assert sealed["pcrs"] == [] and sealed["pcr_values"] == {}
    tpm.pcr_extend(7, b"anything", swtpm_tcti)
    assert tpm.unseal(sealed, pin=None, tcti=swtpm_tcti) == SECRET


@pytest.mark.parametrize("pcrs", [[7], []])
def test_pin(swtpm_tcti: str, pcrs: list[int]) -> None:
    sealed = tpm.seal(SECRET, pcrs=pcrs, pin=PIN, tcti=swtpm_tcti)
    assert sealed["pin"] is True
    assert tpm.unseal(sealed, pin=PIN, tcti=swtpm_tcti) == SECRET
    err = expect(tpm.WrongPin, lambda: tpm.unseal(sealed, pin=BAD_PIN, tcti=swtpm_tcti))
    assert not isinstance(err, tpm.PinRequired)
    expect(tpm.PinRequired, lambda: tpm.unseal(sealed, pin=None, tcti=swtpm_tcti))
    assert tpm.unseal(sealed, pin=PIN, tcti=swtpm_tcti) == SECRET


def test_wrong_pins_lead_to_lockout(swtpm_tcti: str) -> None:
    tpm2_tool(swtpm_tcti, "tpm2_dictionarylockout", "--setup-parameters",
              "--max-tries=3", "--recovery-time=600", "--lockout-recovery-time=600")  # fmt: skip
    sealed = tpm.seal(SECRET, pcrs=[7], pin=PIN, tcti=swtpm_tcti)
    wrong: list[tpm.WrongPin] = []
    for _ in range(10):
        try:
            tpm.unseal(sealed, pin=BAD_PIN, tcti=swtpm_tcti)
        except tpm.WrongPin as e:
            assert_no_leak(e)
            wrong.append(e)
        except tpm.TpmLockout:
            break
    else:
        pytest.fail("ten wrong PINs never locked the TPM out")
    assert [e.tries_left for e in wrong] == [2, 1, 0]
    assert "2 more failure(s)" in str(wrong[0]) and "--clear-lockout" in str(wrong[-1])
    # Locked out: even the right PIN is refused, and the message says how to get out.
    err = expect(tpm.TpmLockout, lambda: tpm.unseal(sealed, pin=PIN, tcti=swtpm_tcti))
    assert "tpm2_dictionarylockout --clear-lockout" in str(err)
    assert isinstance(err, tpm.TpmLockout) and err.seconds is not None and 0 < err.seconds <= 600
    tpm2_tool(swtpm_tcti, "tpm2_dictionarylockout", "--clear-lockout")
    assert tpm.unseal(sealed, pin=PIN, tcti=swtpm_tcti) == SECRET


def test_blob_from_another_tpm_is_foreign(swtpm_tcti: str, tmp_path: Path) -> None:
    sealed = tpm.seal(SECRET, pcrs=[7], pin=None, tcti=swtpm_tcti)
    with running_swtpm(tmp_path / "other-machine") as other:
        err = expect(tpm.ForeignBlob, lambda: tpm.unseal(sealed, pin=None, tcti=other))
    assert "different TPM" in str(err)
    assert tpm.unseal(sealed, pin=None, tcti=swtpm_tcti) == SECRET


@needs_swtpm
def test_same_state_after_restart_still_unseals(tmp_path: Path) -> None:
    """A restart with the same state is a reboot: seeds (and so the primary) survive, PCRs are reset."""
    state = tmp_path / "machine"
    with running_swtpm(state) as tcti:
        sealed = tpm.seal(SECRET, pcrs=[7], pin=None, tcti=tcti)
        tpm.pcr_extend(7, b"changed until reboot", tcti)
        expect(tpm.PcrMismatch, lambda: tpm.unseal(sealed, pin=None, tcti=tcti))
    with running_swtpm(state) as tcti:
        assert tpm.unseal(sealed, pin=None, tcti=tcti) == SECRET


@needs_swtpm  # unsealing needs no TPM here, but making the blob does
def test_no_tpm_is_unavailable(tmp_path: Path) -> None:
    with running_swtpm() as tcti:
        sealed = tpm.seal(SECRET, pcrs=[], pin=None, tcti=tcti)
    nobody = f"swtpm:host=127.0.0.1,port={free_port()}"
    err = expect(tpm.TpmUnavailable, lambda: tpm.unseal(sealed, pin=None, tcti=nobody))
    assert "CLAWFS_TPM_TCTI" in str(err)
    missing = f"device:{tmp_path / 'tpmrm0'}"
    err = expect(tpm.TpmUnavailable, lambda: tpm.unseal(sealed, pin=None, tcti=missing))
    assert "no TPM device" in str(err)
    expect(tpm.TpmUnavailable, lambda: tpm.seal(SECRET, pcrs=[7], pin=None, tcti=nobody))
    expect(tpm.TpmUnavailable, lambda: tpm.counter_read(tpm.counter_index_for(b"x"), nobody))


def test_malformed_blob(swtpm_tcti: str) -> None:
    sealed = tpm.seal(SECRET, pcrs=[7], pin=None, tcti=swtpm_tcti)
    expect(tpm.TpmError, lambda: tpm.unseal({**sealed, "public": "!!"}, pin=None, tcti=swtpm_tcti))
    expect(tpm.TpmError, lambda: tpm.unseal({"version": 1}, pin=None, tcti=swtpm_tcti))
    private = bytearray(base64.b64decode(sealed["private"]))
    private[-1] ^= 1  # a flipped bit fails the TPM's integrity check like a foreign blob does
    damaged = {**sealed, "private": base64.b64encode(bytes(private)).decode()}
    expect(tpm.ForeignBlob, lambda: tpm.unseal(damaged, pin=None, tcti=swtpm_tcti))


def test_nv_counter(swtpm_tcti: str) -> None:
    index = tpm.counter_index_for(b"store-id-1")
    assert index == tpm.counter_index_for(b"store-id-1") != tpm.counter_index_for(b"store-id-2")
    assert 0x01000000 <= index <= 0x013FFFFF
    assert tpm.counter_read(index, swtpm_tcti) is None
    start = tpm.counter_define(index, swtpm_tcti)
    assert tpm.counter_define(index, swtpm_tcti) == start  # idempotent, no increment
    assert tpm.counter_read(index, swtpm_tcti) == start
    assert tpm.counter_increment(index, swtpm_tcti) == start + 1
    assert tpm.counter_increment(index, swtpm_tcti) == start + 2
    assert tpm.counter_read(index, swtpm_tcti) == start + 2
    tpm.counter_undefine(index, swtpm_tcti)
    assert tpm.counter_read(index, swtpm_tcti) is None
    tpm.counter_undefine(index, swtpm_tcti)  # idempotent too
    expect(tpm.TpmError, lambda: tpm.counter_increment(index, swtpm_tcti))
    # A re-defined counter never goes back below what any counter of this TPM reached (anti-rollback).
    assert tpm.counter_define(index, swtpm_tcti) >= start + 2


def test_pcr_read_and_extend(swtpm_tcti: str) -> None:
    before = tpm.pcr_read(list(range(24)), swtpm_tcti)  # more than the 8 PCRs one TPM2_PCR_Read returns
    assert sorted(before) == list(range(24)) and before[7] == "00" * 32
    tpm.pcr_extend(7, b"event", swtpm_tcti)
    after = tpm.pcr_read([7], swtpm_tcti)
    assert after[7] != before[7] and len(after[7]) == 64


def test_rc_classification() -> None:
    """Return codes swtpm cannot be made to produce on demand."""
    for rc in (0x922, 0x908, 0x90A, 0xA0009):  # RETRY, YIELDED, TESTING, TCTI try-again
        assert isinstance(tpm._classify(rc, "unseal a key", "device:/dev/tpmrm0"), tpm.TpmBusy)
    assert isinstance(tpm._classify(0x921, "unseal a key", "t"), tpm.TpmLockout)
    assert isinstance(tpm._classify(0xA000A, "unseal a key", "t"), tpm.TpmUnavailable)  # TCTI IO error
    assert tpm._rc_code(0x98E) == (0, 0x08E)  # AUTH_FAIL on session 1 is AUTH_FAIL


def test_exceptions_survive_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(tpm.PcrMismatch("message", [7])))
    assert isinstance(err, tpm.PcrMismatch) and str(err) == "message"
    assert "--accept-rollback" in str(tpm.RollbackDetected(recorded=3, current=5))


def test_default_tcti(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAWFS_TPM_TCTI", raising=False)
    assert tpm.default_tcti() == "device:/dev/tpmrm0"
    monkeypatch.setenv("CLAWFS_TPM_TCTI", "swtpm:host=127.0.0.1,port=2321")
    assert tpm.default_tcti() == "swtpm:host=127.0.0.1,port=2321"


def test_input_validation() -> None:
    with pytest.raises(ValueError):
        tpm.seal(b"", pcrs=[7], pin=None, tcti="device:/nonexistent")
    with pytest.raises(ValueError):
        tpm.seal(b"x" * 129, pcrs=[7], pin=None, tcti="device:/nonexistent")
    with pytest.raises(ValueError):
        tpm.seal(b"x", pcrs=[24], pin=None, tcti="device:/nonexistent")
