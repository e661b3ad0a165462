"""Turning key options (files, prompts) into `clawfs.keys.Credentials`, with messages that say what to fix."""

from __future__ import annotations

import getpass
import os
import sys

from clawfs import keys
from clawfs.errors import UserError

MAX_RECOVERY_FILE = 4096  # 64 hex digits with dashes, spaces and a newline, with room to spare


def _read(path: str, what: str, limit: int) -> bytes:
    """At most `limit` bytes of `path`: a larger file (or /dev/zero) is refused after reading `limit + 1`."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except PermissionError:
        raise UserError(f"{what} {path} is not readable (permission denied)") from None
    if len(data) > limit:
        raise UserError(f"{what} {path} is larger than {limit} bytes; it should hold the key alone")
    return data


def read_passphrase_file(path: str, what: str = "passphrase file") -> bytes:
    data = _read(path, what, keys.MAX_SECRET_BYTES + 2)  # + its newline
    data = data[:-1] if data.endswith(b"\n") else data  # `echo pass > file` works as people expect
    data = data[:-1] if data.endswith(b"\r") else data
    if not data:
        raise UserError(f"{what} {path} is empty")
    keys.check_secret("passphrase", data)
    return data


def read_keyfile(path: str) -> bytes:
    data = _read(path, "keyfile", keys.MAX_KEYFILE_BYTES)
    keys.check_secret("keyfile", data)
    return data


def read_recovery_key(path: str) -> bytes:
    return keys.parse_recovery_key(_read(path, "recovery key file", MAX_RECOVERY_FILE).decode("ascii", "replace"))


MOUNT_KEY_OPTIONS = "-o passphrase_file=F, -o keyfile=F or -o recovery_key_file=F"
"""How `clawfs mount` takes a key (the other commands take --passphrase-file and the like)."""


def prompt_passphrase(*, confirm: bool, how: str = keys.Credentials.how_to_pass) -> bytes:
    if not sys.stdin.isatty():
        raise UserError(f"no key given and stdin is not a terminal: pass {how}")
    first = getpass.getpass("Passphrase: ").encode()
    if not first:
        raise UserError("the passphrase is empty")
    if confirm and getpass.getpass("Repeat passphrase: ").encode() != first:
        raise UserError("the two passphrases differ")
    return first


def read_pin_file(path: str) -> bytes:
    data = read_passphrase_file(path, "TPM PIN file")  # same rules: one trailing newline dropped, empty refused
    return data


def prompt_pin(*, confirm: bool = False) -> bytes:
    if not sys.stdin.isatty():
        raise UserError("the TPM slot needs a PIN and stdin is not a terminal: pass --tpm-pin-file")
    first = getpass.getpass("TPM PIN: ").encode()
    if confirm and getpass.getpass("Repeat TPM PIN: ").encode() != first:
        raise UserError("the two PINs differ")
    if not first:
        raise UserError("the PIN is empty")
    return first


def gather(passphrase_file: str | None = None, keyfile: str | None = None,
           recovery_key_file: str | None = None, *, tpm_tcti: str | None = None, tpm_pin_file: str | None = None,
           use_tpm: bool = True, prompt: bool = True, how: str | None = None) -> keys.Credentials:
    """Credentials from files; prompts (passphrase, TPM PIN) are deferred until unlocking needs them, and
    offered only on a terminal.  `how`: how the command takes a key, for messages (default: the options)."""
    creds = keys.Credentials(tpm=use_tpm, tpm_tcti=tpm_tcti)
    if how is not None:
        creds.how_to_pass = how
    if passphrase_file:
        creds.passphrases.append(read_passphrase_file(passphrase_file))
    if keyfile:
        creds.keyfiles.append(read_keyfile(keyfile))
    if recovery_key_file:
        creds.recovery_keys.append(read_recovery_key(recovery_key_file))
    if tpm_pin_file:
        creds.tpm_pin = read_pin_file(tpm_pin_file)
    env_pass = os.environ.get("CLAWFS_PASSPHRASE_FILE")
    if creds.empty() and env_pass:
        creds.passphrases.append(read_passphrase_file(env_pass))
    if prompt and sys.stdin.isatty():
        if creds.empty():
            creds.ask_passphrase = lambda: prompt_passphrase(confirm=False)
        creds.ask_pin = prompt_pin
    return creds
