"""TPM 2.0 sealing, PCR reads and NV monotonic counters: the only module of the project that imports tpm2_pytss.

What it owns:

* ``seal`` / ``unseal``: a short secret (a key-encryption key, at most 128 bytes) sealed to this machine's TPM
  under a transient owner-hierarchy ECC P-256 storage key (the TCG SRK template that systemd-cryptenroll uses),
  optionally bound to PCR values (sha256 bank) and to a PIN.  The sealed form is a JSON-serialisable dict.
* ``counter_*``: NV monotonic counters (TPM2_NT_COUNTER, owner-authorised) for rollback detection.
* ``pcr_read`` / ``pcr_extend``: PCR helpers (the latter is for tests).
* The translation of TSS return codes into ``TpmError`` subclasses whose messages name the fix.  No message ever
  carries the secret, the PIN or anything derived from them.

It knows nothing about ClawFS (``kernel/`` imports nothing from the rest of the project).  tpm2_pytss is imported
lazily so that importing this module never needs libtss2, and so that ``TSS2_LOG`` can be set before the library
first logs (libtss2 otherwise prints every failed command to stderr).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = [
    "ForeignBlob",
    "PcrMismatch",
    "PinRequired",
    "RollbackDetected",
    "TpmBusy",
    "TpmError",
    "TpmLockout",
    "TpmUnavailable",
    "WrongPin",
    "counter_define",
    "counter_increment",
    "counter_index_for",
    "counter_read",
    "counter_undefine",
    "default_tcti",
    "pcr_extend",
    "pcr_read",
    "seal",
    "unseal",
]

DEFAULT_TCTI = "device:/dev/tpmrm0"
PCR_BANK = "sha256"
PRIMARY_TEMPLATE = "tcg-srk-ecc-p256"  # recorded in the blob: unseal must recreate the very same primary
BLOB_VERSION = 1
MAX_SECRET = 128  # MAX_SYM_DATA: the largest sensitive data a keyedhash object can carry
NV_OWNER_BASE = 0x01000000  # TCG handle registry: 0x01000000-0x013FFFFF is the owner's own NV range
NV_OWNER_MASK = 0x3FFFFF

# TPM return codes (TPM 2.0 Part 2, 6.6), compared after _rc_code() strips handle/parameter/session numbers.
_FMT1 = 0x080
_RC_INITIALIZE = 0x100
_RC_PCR_CHANGED = 0x128
_RC_NV_DEFINED = 0x14C
_RC_NV_SPACE = 0x14B
_RC_SENSITIVE = 0x155
_RC_VALUE, _RC_HANDLE, _RC_AUTH_FAIL, _RC_SIZE = 0x084, 0x08B, 0x08E, 0x095
_RC_KEY, _RC_POLICY_FAIL, _RC_INTEGRITY, _RC_BAD_AUTH, _RC_BINDING = 0x09C, 0x09D, 0x09F, 0x0A2, 0x0A5
_RC_LOCKOUT = 0x921
# Warnings that mean "try again shortly": RETRY, YIELDED, TESTING, CANCELED, NV_RATE, NV_UNAVAILABLE, the
# out-of-memory/handles family and PCR_CHANGED (a PCR moved between PolicyPCR and Unseal).
_BUSY = {0x922, 0x908, 0x90A, 0x909, 0x920, 0x923, 0x901, 0x902, 0x903, 0x904, 0x905, 0x906, _RC_PCR_CHANGED}
# What TPM2_Load answers for a blob whose parent seed is not this TPM's (or that was altered).
_FOREIGN = {_RC_INTEGRITY, _RC_KEY, _RC_BINDING, _RC_SENSITIVE, _RC_SIZE, _RC_VALUE}
# TSS layers (TSS2_RC bits 16-23) and their base codes.
_LAYER_TPM, _LAYER_TCTI, _LAYER_RESMGR_TPM = 0, 10 << 16, 12 << 16
_BASE_NO_CONNECTION, _BASE_TRY_AGAIN, _BASE_IO_ERROR = 8, 9, 10

_tss_module: Any = None


# --------------------------------------------------------------------------------------------------- errors


class TpmError(Exception):
    """Every failure of this module.  Messages say what to do and never contain key material or PINs."""


class TpmUnavailable(TpmError):
    """No TPM reachable: the device is missing or unreadable, or nothing listens at the TCTI address."""


class TpmBusy(TpmError):
    """The TPM asked to be retried (TPM_RC_RETRY/YIELDED/TESTING...) or the device is held open (EBUSY)."""


class PcrMismatch(TpmError):
    """The PCR policy failed: ``changed`` lists the PCRs whose values differ from the seal-time record."""

    def __init__(self, message: str, changed: list[int] | None = None) -> None:
        super().__init__(message)
        self.changed: list[int] = list(changed or [])


class WrongPin(TpmError):
    """The PIN was refused; ``tries_left`` is how many more failures the TPM tolerates (None if unknown)."""

    def __init__(self, message: str, tries_left: int | None = None) -> None:
        super().__init__(message)
        self.tries_left = tries_left


class PinRequired(WrongPin):
    """The sealed object needs a PIN and none was given (nothing was sent to the TPM, no DA failure counted)."""


class TpmLockout(TpmError):
    """Dictionary-attack lockout; ``seconds`` is the estimated wait until the TPM accepts a PIN (None if only an
    owner reset ends it or it is unknown)."""

    def __init__(self, message: str, seconds: int | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


class ForeignBlob(TpmError):
    """The sealed blob does not load: made by another TPM, this TPM was cleared since, or the blob is damaged."""


class RollbackDetected(TpmError):
    """A store's recorded counter is behind the TPM's NV counter: an older copy of the store was put back."""

    def __init__(self, message: str = "", recorded: int = 0, current: int = 0) -> None:
        super().__init__(
            message
            or f"rollback detected: the store records counter {recorded} but the TPM's counter is at {current}, "
            "so this is an older copy of a store that has been mounted since. Restore the newest copy, or "
            "accept the rollback explicitly (--accept-rollback) if you restored it on purpose."
        )
        self.recorded = recorded
        self.current = current


# ------------------------------------------------------------------------------------------ plumbing


def default_tcti() -> str:
    """The TCTI to use: ``$CLAWFS_TPM_TCTI`` if set, else the kernel's resource manager ``/dev/tpmrm0``."""
    return os.environ.get("CLAWFS_TPM_TCTI") or DEFAULT_TCTI


def _tss() -> Any:
    """Import tpm2_pytss on first use, after silencing libtss2's own stderr logging."""
    global _tss_module
    if _tss_module is None:
        os.environ.setdefault("TSS2_LOG", "all+NONE")
        try:
            import tpm2_pytss  # type: ignore[import-untyped]
        except ImportError as e:  # also raised when the C bindings do not match the installed libtss2
            raise TpmUnavailable(f"tpm2-pytss cannot be loaded ({e}): `make setup` installs it and libtss2") from e
        _tss_module = tpm2_pytss
    return _tss_module


def _rc_code(rc: int) -> tuple[int, int]:
    """(layer, code) of a TSS2 return code; for TPM format-1 codes the handle/parameter/session number is
    dropped so that e.g. AUTH_FAIL on session 1 (0x98E) compares equal to AUTH_FAIL (0x08E)."""
    layer, code = rc & 0xFF0000, rc & 0xFFFF
    if layer == _LAYER_RESMGR_TPM:  # tpm2-abrmd passes TPM codes through in its own layer
        layer = _LAYER_TPM
    if layer == _LAYER_TPM and code & _FMT1:
        code = _FMT1 | (code & 0x3F)
    return layer, code


def _tpm_code(err: Exception) -> int | None:
    """The TPM-layer code of a TSS2_Exception, None if it came from the TSS itself (TCTI, ESAPI, MU...)."""
    layer, code = _rc_code(int(getattr(err, "rc", -1)) & 0xFFFFFFFF)
    return code if layer == _LAYER_TPM else None


def _classify(rc: int, op: str, tcti: str) -> TpmError:
    """The TpmError for a return code that the caller did not handle specially."""
    layer, code = _rc_code(rc)
    if layer != _LAYER_TPM and code == _BASE_TRY_AGAIN:
        return TpmBusy(f"the TPM at {tcti} is busy ({op}); try again in a moment")
    if layer == _LAYER_TCTI or (layer != _LAYER_TPM and code in (_BASE_NO_CONNECTION, _BASE_IO_ERROR)):
        return TpmUnavailable(
            f"cannot talk to a TPM at {tcti} ({op}): is the device there, or is the simulator listening? "
            "Choose another with --tpm-tcti or CLAWFS_TPM_TCTI, or use another key slot."
        )
    if layer != _LAYER_TPM:
        return TpmError(f"TPM software stack error while trying to {op} (rc {rc:#x}) via {tcti}")
    if code in _BUSY:
        return TpmBusy(f"the TPM is busy (rc {code:#x}) while trying to {op}; try again in a moment")
    if code == _RC_LOCKOUT:
        return TpmLockout(_lockout_text(None))
    if code in (_RC_AUTH_FAIL, _RC_BAD_AUTH):
        return TpmError(
            f"the TPM refused the owner authorization needed to {op}: the owner hierarchy has a password "
            "(ClawFS uses the empty owner authorization, as systemd-cryptenroll does)"
        )
    if code == _RC_INITIALIZE:
        return TpmUnavailable(f"the TPM at {tcti} has not been started (TPM2_Startup missing); {op} impossible")
    return TpmError(f"the TPM failed to {op} (rc {code:#x})")


class _Conn:
    """One ESAPI context plus the transient handles and sessions to flush when it closes."""

    def __init__(self, tss: Any, ctx: Any) -> None:
        self.tss, self.ctx = tss, ctx
        self._flush: list[Any] = []
        self._close: list[Any] = []

    def flush_later(self, handle: Any) -> Any:
        self._flush.append(handle)
        return handle

    def close_later(self, handle: Any) -> Any:
        self._close.append(handle)
        return handle

    def close(self) -> None:
        # Flush in reverse order; failures are ignored because the connection may be the thing that broke,
        # and a session the TPM already flushed (continueSession clear) reports an error we do not care about.
        for handle in reversed(self._flush):
            with contextlib.suppress(Exception):
                self.ctx.flush_context(handle)
        for handle in reversed(self._close):
            with contextlib.suppress(Exception):
                self.ctx.tr_close(handle)
        self.ctx.close()


def _preflight_device(tcti: str) -> None:
    """For ``device:`` TCTIs, open the node ourselves first: libtss2 reports ENOENT, EACCES and EBUSY all as one
    IO error, and the user needs to know which."""
    name, _, conf = tcti.partition(":")
    if name != "device":
        return
    path = conf or "/dev/tpm0"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TpmUnavailable(
            f"no TPM device at {path}: this machine has no TPM 2.0 (or its driver is not loaded). Use another "
            "key slot, or point --tpm-tcti / CLAWFS_TPM_TCTI at a TPM."
        ) from None
    except PermissionError:
        raise TpmUnavailable(f"permission denied opening {path}: run as root or join the 'tss' group") from None
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise TpmBusy(f"{path} is held open by another process; use /dev/tpmrm0 or try again") from None
        raise TpmUnavailable(f"cannot open {path}: {os.strerror(e.errno or 0)}") from None
    os.close(fd)


@contextlib.contextmanager
def _connect(tcti: str, op: str) -> Iterator[_Conn]:
    """An ESAPI connection for one operation; TSS errors not handled inside are translated by _classify."""
    tss = _tss()
    _preflight_device(tcti)
    try:
        conn = _Conn(tss, tss.ESAPI(tcti))
    except tss.TSS2_Exception as e:
        raise _classify(int(e.rc), op, tcti) from e
    except RuntimeError as e:  # TCTILdr.parse on a malformed string
        raise TpmUnavailable(f"bad TCTI string {tcti!r}: expected e.g. device:/dev/tpmrm0") from e
    try:
        yield conn
    except tss.TSS2_Exception as e:
        raise _classify(int(e.rc), op, tcti) from e
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------- PCRs


def _check_pcrs(pcrs: list[int]) -> list[int]:
    out = sorted(set(pcrs))
    if any(not isinstance(p, int) or not 0 <= p <= 23 for p in out):
        raise ValueError(f"PCR numbers must be 0..23, got {pcrs}")
    return out


def _selection(tss: Any, pcrs: list[int]) -> Any:
    return tss.TPML_PCR_SELECTION([tss.TPMS_PCR_SELECTION(hash=tss.TPM2_ALG.SHA256, pcrs=pcrs)])


def _read_pcrs(conn: _Conn, pcrs: list[int]) -> dict[int, bytes]:
    """Current sha256-bank values; TPM2_PCR_Read answers at most 8 digests per call, hence the chunks."""
    values: dict[int, bytes] = {}
    for i in range(0, len(pcrs), 8):
        chunk = pcrs[i : i + 8]
        _, _, digests = conn.ctx.pcr_read(_selection(conn.tss, chunk))
        got = [bytes(d) for d in digests]
        if len(got) != len(chunk):
            raise TpmError(f"the TPM has no sha256 PCR bank for PCRs {chunk}; seal without PCRs (--tpm-pcrs none)")
        values.update(zip(chunk, got, strict=True))
    return values


def pcr_read(pcrs: list[int], tcti: str) -> dict[int, str]:
    """Current values (hex) of the given PCRs in the sha256 bank."""
    pcrs = _check_pcrs(pcrs)
    with _connect(tcti, "read PCRs") as conn:
        return {p: v.hex() for p, v in _read_pcrs(conn, pcrs).items()}


def pcr_extend(pcr: int, data: bytes, tcti: str) -> None:
    """Extend sha256(data) into PCR ``pcr`` of the sha256 bank (tests use it to simulate a changed boot)."""
    (pcr,) = _check_pcrs([pcr])
    with _connect(tcti, f"extend PCR {pcr}") as conn:
        tss = conn.tss
        digest = tss.TPMT_HA(hashAlg=tss.TPM2_ALG.SHA256)
        digest.digest.sha256 = hashlib.sha256(data).digest()
        conn.ctx.pcr_extend(tss.ESYS_TR(pcr), tss.TPML_DIGEST_VALUES([digest]))


# ------------------------------------------------------------------------------------- seal / unseal


def _create_primary(conn: _Conn) -> Any:
    """The owner-hierarchy storage key: the TCG SRK template (ECC NIST P-256, restricted decrypt, AES-128-CFB)
    that systemd-cryptenroll uses.  The TPM derives it deterministically from the owner seed, so recreating it
    at unseal time gives the same key without keeping anything persistent in the TPM."""
    tss = conn.tss
    attrs = tss.TPMA_OBJECT
    template = tss.TPMT_PUBLIC.parse(
        "ecc256:aes128cfb",
        objectAttributes=attrs.RESTRICTED
        | attrs.DECRYPT
        | attrs.FIXEDTPM
        | attrs.FIXEDPARENT
        | attrs.SENSITIVEDATAORIGIN
        | attrs.USERWITHAUTH
        | attrs.NODA,
        nameAlg="sha256",
    )
    handle, _, _, _, _ = conn.ctx.create_primary(None, tss.TPM2B_PUBLIC(template), tss.ESYS_TR.OWNER)
    return conn.flush_later(handle)


def _start_session(conn: _Conn, primary: Any, kind: str, attrs: int) -> Any:
    """A session salted with the primary key and AES-128-CFB parameter encryption, so neither the secret (in
    Create / out of Unseal) nor material for an offline PIN search crosses the bus in the clear."""
    tss = conn.tss
    sym = tss.TPMT_SYM_DEF(algorithm=tss.TPM2_ALG.AES)
    sym.keyBits.aes, sym.mode.aes = 128, tss.TPM2_ALG.CFB
    session = conn.ctx.start_auth_session(
        primary, tss.ESYS_TR.NONE, getattr(tss.TPM2_SE, kind), sym, tss.TPM2_ALG.SHA256
    )
    conn.flush_later(session)
    conn.ctx.trsess_set_attributes(session, attrs | tss.TPMA_SESSION.CONTINUESESSION)
    return session


def _pin_auth(pin: bytes) -> bytes:
    """The object's authValue for a PIN: sha256, so any PIN length fits the 32-byte limit (systemd does the
    same).  Trailing zero bytes are dropped because the TPM drops them from stored authValues."""
    return hashlib.sha256(pin).digest().rstrip(b"\0")


def _apply_policy(conn: _Conn, session: Any, pcrs: list[int], pcr_digest: bytes | None, pin: bool) -> None:
    """The policy: PolicyPCR over ``pcrs`` (skipped when empty), then PolicyAuthValue when a PIN is set.
    ``pcr_digest`` is the expected digest in a trial session and None (= current values) for the real one."""
    if pcrs:
        conn.ctx.policy_pcr(session, pcr_digest, _selection(conn.tss, pcrs))
    if pin:
        conn.ctx.policy_auth_value(session)


def _policy_digest(conn: _Conn, primary: Any, pcrs: list[int], values: dict[int, bytes], pin: bool) -> bytes:
    """The authPolicy for the sealed object, computed by the TPM in a trial session from the recorded values."""
    session = _start_session(conn, primary, "TRIAL", 0)
    pcr_digest = hashlib.sha256(b"".join(values[p] for p in pcrs)).digest()
    _apply_policy(conn, session, pcrs, pcr_digest, pin)
    return bytes(conn.ctx.policy_get_digest(session))


def _sealed_template(conn: _Conn, policy: bytes | None, pin: bool) -> Any:
    """keyedhash, fixedtpm|fixedparent; noda unless a PIN is set (then wrong PINs count towards lockout);
    with no policy at all, plain userwithauth and an empty authValue."""
    tss = conn.tss
    attrs = tss.TPMA_OBJECT.FIXEDTPM | tss.TPMA_OBJECT.FIXEDPARENT
    if not pin:
        attrs |= tss.TPMA_OBJECT.NODA
    if policy is None:
        attrs |= tss.TPMA_OBJECT.USERWITHAUTH
    template = tss.TPMT_PUBLIC.parse("keyedhash", objectAttributes=attrs, nameAlg="sha256", authPolicy=policy)
    return tss.TPM2B_PUBLIC(template)


def seal(secret: bytes, *, pcrs: list[int], pin: bytes | None, tcti: str) -> dict[str, Any]:
    """Seal ``secret`` (1..128 bytes) to this TPM, bound to the current values of ``pcrs`` (sha256 bank; [] for
    no PCR binding) and to ``pin`` if given.  Returns a JSON-serialisable dict to store next to the data."""
    if not 1 <= len(secret) <= MAX_SECRET:
        raise ValueError(f"a TPM-sealed secret must be 1..{MAX_SECRET} bytes, got {len(secret)}")
    pcrs = _check_pcrs(pcrs)
    with _connect(tcti, "seal a key") as conn:
        tss = conn.tss
        primary = _create_primary(conn)
        values = _read_pcrs(conn, pcrs) if pcrs else {}
        policy = _policy_digest(conn, primary, pcrs, values, pin is not None) if pcrs or pin is not None else None
        sensitive = tss.TPM2B_SENSITIVE_CREATE(
            tss.TPMS_SENSITIVE_CREATE(userAuth=_pin_auth(pin) if pin is not None else b"", data=secret)
        )
        # DECRYPT: the first command parameter (inSensitive, holding the secret) travels encrypted.
        session = _start_session(conn, primary, "HMAC", tss.TPMA_SESSION.DECRYPT)
        private, public, _, _, _ = conn.ctx.create(
            primary, sensitive, _sealed_template(conn, policy, pin is not None), session1=session
        )
        return {
            "version": BLOB_VERSION,
            "primary": PRIMARY_TEMPLATE,
            "public": base64.b64encode(public.marshal()).decode(),
            "private": base64.b64encode(private.marshal()).decode(),
            "pcr_bank": PCR_BANK,
            "pcrs": pcrs,
            "pcr_values": {str(p): values[p].hex() for p in pcrs},
            "pin": pin is not None,
        }


def _parse_sealed(tss: Any, sealed: dict[str, Any]) -> tuple[Any, Any, list[int], dict[int, str], bool]:
    """Validate and decode a dict made by seal(); anything off is a TpmError naming the problem."""
    try:
        if sealed["version"] != BLOB_VERSION or sealed["primary"] != PRIMARY_TEMPLATE:
            raise TpmError(f"unsupported TPM slot format {sealed['version']}/{sealed['primary']}; re-seal it")
        if sealed["pcr_bank"] != PCR_BANK:
            raise TpmError(f"unsupported PCR bank {sealed['pcr_bank']!r}; re-seal the TPM slot")
        pcrs = _check_pcrs([int(p) for p in sealed["pcrs"]])
        recorded = {int(k): str(v) for k, v in sealed["pcr_values"].items()}
        public, _ = tss.TPM2B_PUBLIC.unmarshal(base64.b64decode(sealed["public"], validate=True))
        private, _ = tss.TPM2B_PRIVATE.unmarshal(base64.b64decode(sealed["private"], validate=True))
        return public, private, pcrs, recorded, bool(sealed["pin"])
    except (KeyError, TypeError, ValueError, binascii.Error, tss.TSS2_Exception) as e:
        raise TpmError(f"the TPM slot data is malformed ({type(e).__name__}); remove and re-add the slot") from e


def _da_state(conn: _Conn) -> tuple[int, int, int] | None:
    """(failed tries, max tries, seconds per forgiven failure) of the dictionary-attack logic, None if the TPM
    will not say (best effort: only used to make messages more useful)."""
    tss = conn.tss
    try:
        _, data = conn.ctx.get_capability(tss.TPM2_CAP.TPM_PROPERTIES, tss.TPM2_PT.LOCKOUT_COUNTER, 3)
        props = {int(p.property): int(p.value) for p in data.data.tpmProperties}
        pt = tss.TPM2_PT
        return props[pt.LOCKOUT_COUNTER], props[pt.MAX_AUTH_FAIL], props[pt.LOCKOUT_INTERVAL]
    except Exception:
        return None


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"


def _lockout_wait(da: tuple[int, int, int]) -> int:
    """Seconds until the failure count drops below the maximum: the TPM forgives one failure per interval."""
    failed, max_tries, interval = da
    return max(1, failed - max_tries + 1) * interval


def _lockout_text(
    da: tuple[int, int, int] | None,
    text: str = "the TPM is in dictionary-attack lockout after too many wrong PINs and refuses every PIN for now.",
) -> str:
    if da is not None and da[2] > 0:
        text += (
            f" It forgives one failure every {_duration(da[2])}, so it accepts a PIN again in at most about "
            f"{_duration(_lockout_wait(da))}."
        )
    elif da is not None:
        text += " Its lockout interval is 0, so only a reset ends it."
    return text + (
        " The TPM owner can end it now with `tpm2_dictionarylockout --clear-lockout`. Meanwhile use another key "
        "slot (passphrase, keyfile or recovery key)."
    )


def _lockout(conn: _Conn) -> TpmLockout:
    da = _da_state(conn)
    return TpmLockout(_lockout_text(da), _lockout_wait(da) if da is not None and da[2] > 0 else None)


def _wrong_pin(conn: _Conn) -> WrongPin:
    da = _da_state(conn)
    left = max(0, da[1] - da[0]) if da is not None else None
    if left == 0:
        return WrongPin(_lockout_text(da, "wrong TPM PIN, and that was the last try: the TPM is now in lockout."), 0)
    more = f"; {left} more failure(s) before the TPM locks out" if left is not None else ""
    return WrongPin(f"wrong TPM PIN{more}. Try again, or use another key slot.", left)


def _pcr_mismatch(conn: _Conn, pcrs: list[int], recorded: dict[int, str]) -> PcrMismatch:
    try:
        now = _read_pcrs(conn, pcrs)
        changed = [p for p in pcrs if recorded.get(p) != now[p].hex()]
    except Exception:  # the report is a courtesy: the policy failure itself is what matters
        changed = []
    shown = changed or pcrs
    one = len(shown) == 1
    return PcrMismatch(
        f"the TPM refused to unseal: PCR{'' if one else 's'} {', '.join(map(str, shown))} no longer "
        f"match{'es' if one else ''} the values "
        "recorded at seal time (firmware, Secure Boot or boot-loader change?). Unlock with another key slot, "
        "then re-seal with `clawfs key add-tpm`.",
        changed,
    )


def _load(conn: _Conn, primary: Any, public: Any, private: Any) -> Any:
    """Load the sealed object under the recreated primary; a blob from another TPM fails its integrity check."""
    try:
        return conn.flush_later(conn.ctx.load(primary, private, public))
    except conn.tss.TSS2_Exception as e:
        if _tpm_code(e) in _FOREIGN:
            raise ForeignBlob(
                "the TPM slot was sealed by a different TPM (or this TPM was cleared since, or the slot is damaged) "
                "and cannot be unsealed here. Unlock with another key slot, then re-seal with `clawfs key add-tpm`."
            ) from e
        raise


def unseal(sealed: dict[str, Any], *, pin: bytes | None, tcti: str) -> bytes:
    """Recover the secret sealed by seal().  Raises PcrMismatch, WrongPin/PinRequired, TpmLockout, ForeignBlob,
    TpmUnavailable, TpmBusy or TpmError."""
    tss = _tss()
    public, private, pcrs, recorded, needs_pin = _parse_sealed(tss, sealed)
    if needs_pin and pin is None:
        raise PinRequired("this TPM slot is protected by a PIN: give it with --tpm-pin-file (mount: -o tpm_pin_file=)")
    with _connect(tcti, "unseal a key") as conn:
        primary = _create_primary(conn)
        obj = _load(conn, primary, public, private)
        if pcrs or needs_pin:
            session = _start_session(conn, primary, "POLICY", tss.TPMA_SESSION.ENCRYPT)
            _apply_policy(conn, session, pcrs, None, needs_pin)
        else:
            session = _start_session(conn, primary, "HMAC", tss.TPMA_SESSION.ENCRYPT)
        if needs_pin and pin is not None:
            conn.ctx.tr_set_auth(obj, _pin_auth(pin))
        try:
            return bytes(conn.ctx.unseal(obj, session1=session))
        except tss.TSS2_Exception as e:
            code = _tpm_code(e)
            if code == _RC_POLICY_FAIL:
                raise _pcr_mismatch(conn, pcrs, recorded) from e
            if code in (_RC_AUTH_FAIL, _RC_BAD_AUTH):
                raise _wrong_pin(conn) from e
            if code == _RC_LOCKOUT:
                raise _lockout(conn) from e
            raise


# ---------------------------------------------------------------------------------------- NV counters


def counter_index_for(ident: bytes) -> int:
    """A stable NV index in the owner range for a store id: 0x01000000 + the low 22 bits of sha256(ident)."""
    return NV_OWNER_BASE + (int.from_bytes(hashlib.sha256(ident).digest()[-4:], "big") & NV_OWNER_MASK)


def _check_index(index: int) -> None:
    if not NV_OWNER_BASE <= index <= NV_OWNER_BASE + NV_OWNER_MASK:
        raise ValueError(f"NV index {index:#x} is outside the owner range 0x01000000-0x013fffff")


def _nv_handle(conn: _Conn, index: int) -> Any | None:
    """ESAPI handle for a defined NV index, None when the index is not defined."""
    try:
        return conn.close_later(conn.ctx.tr_from_tpmpublic(conn.tss.TPM2_HANDLE(index)))
    except conn.tss.TSS2_Exception as e:
        if _tpm_code(e) == _RC_HANDLE:
            return None
        raise


def _nv_written(conn: _Conn, nv: Any, index: int) -> bool:
    """Whether the index is our kind of counter and has been incremented at least once."""
    tss = conn.tss
    public, _ = conn.ctx.nv_read_public(nv)
    attrs = tss.TPMA_NV(public.nvPublic.attributes)
    owner_rw = tss.TPMA_NV.OWNERWRITE | tss.TPMA_NV.OWNERREAD
    if attrs.nt != tss.TPM2_NT.COUNTER or attrs & owner_rw != owner_rw:
        raise TpmError(
            f"NV index {index:#x} is already used by something other than an owner-authorised counter; "
            "refusing to touch it"
        )
    return bool(attrs & tss.TPMA_NV.WRITTEN)


def _nv_value(conn: _Conn, nv: Any) -> int:
    data = conn.ctx.nv_read(nv, 8, 0, auth_handle=conn.tss.ESYS_TR.OWNER)
    return int.from_bytes(bytes(data), "big")


def counter_read(index: int, tcti: str) -> int | None:
    """The counter's value; None when the index is not defined, 0 if defined but never incremented."""
    _check_index(index)
    with _connect(tcti, f"read NV counter {index:#x}") as conn:
        nv = _nv_handle(conn, index)
        if nv is None:
            return None
        return _nv_value(conn, nv) if _nv_written(conn, nv, index) else 0


def counter_define(index: int, tcti: str) -> int:
    """Define the NV counter (owner-authorised read and write, no DA) if needed and make sure it has been
    incremented once (an unwritten counter cannot be read).  Idempotent; returns the current value, which a new
    counter starts at the highest value any counter of this TPM ever had (TPM 2.0 Part 1, 37.2.4)."""
    _check_index(index)
    with _connect(tcti, f"define NV counter {index:#x}") as conn:
        tss = conn.tss
        nv = _nv_handle(conn, index)
        if nv is None:
            nv_attrs = (
                tss.TPM2_NT.COUNTER << tss.TPMA_NV.TPM2_NT_SHIFT
                | tss.TPMA_NV.OWNERWRITE
                | tss.TPMA_NV.OWNERREAD
                | tss.TPMA_NV.NO_DA
            )
            public = tss.TPM2B_NV_PUBLIC(
                nvPublic=tss.TPMS_NV_PUBLIC(
                    nvIndex=index, nameAlg=tss.TPM2_ALG.SHA256, attributes=nv_attrs, dataSize=8
                )
            )
            try:
                nv = conn.close_later(conn.ctx.nv_define_space(None, public, tss.ESYS_TR.OWNER))
            except tss.TSS2_Exception as e:
                if _tpm_code(e) == _RC_NV_SPACE:
                    raise TpmError("the TPM's NV memory is full; undefine unused NV indices") from e
                if _tpm_code(e) != _RC_NV_DEFINED:  # lost a race with another definer: fine
                    raise
                nv = _nv_handle(conn, index)
        if not _nv_written(conn, nv, index):
            conn.ctx.nv_increment(nv, auth_handle=tss.ESYS_TR.OWNER)
        return _nv_value(conn, nv)


def counter_increment(index: int, tcti: str) -> int:
    """Advance the counter by one and return the new value.  Each call writes TPM NV memory, which wears and is
    rate-limited: advance once per mount, never per file write."""
    _check_index(index)
    with _connect(tcti, f"increment NV counter {index:#x}") as conn:
        nv = _nv_handle(conn, index)
        if nv is None:
            raise TpmError(f"NV counter {index:#x} is not defined (was rollback protection set up on this TPM?)")
        _nv_written(conn, nv, index)  # refuses an index that is not a counter
        conn.ctx.nv_increment(nv, auth_handle=conn.tss.ESYS_TR.OWNER)
        return _nv_value(conn, nv)


def counter_undefine(index: int, tcti: str) -> None:
    """Delete the NV counter; nothing to do when it is not defined."""
    _check_index(index)
    with _connect(tcti, f"undefine NV counter {index:#x}") as conn:
        nv = _nv_handle(conn, index)
        if nv is not None:
            _nv_written(conn, nv, index)  # never delete an index that is not one of ours
            conn.ctx.nv_undefine_space(nv, conn.tss.ESYS_TR.OWNER)
