"""Turning key options (files, prompts) into `clawfs.keys.Credentials`, with messages that say what to fix."""

from __future__ import annotations

import getpass
import os
import sys

from clawfs import keys
from clawfs.errors import UserError


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except PermissionError:
        raise UserError(f"{what} {path} is not readable (permission denied)") from None


def read_passphrase_file(path: str) -> bytes:
    data = _read(path, "passphrase file")
    data = data[:-1] if data.endswith(b"\n") else data  # `echo pass > file` works as people expect
    data = data[:-1] if data.endswith(b"\r") else data
    if not data:
        raise UserError(f"passphrase file {path} is empty")
    return data


def read_keyfile(path: str) -> bytes:
    data = _read(path, "keyfile")
    keys.check_secret("keyfile", data)
    return data


def read_recovery_key(path: str) -> bytes:
    return keys.parse_recovery_key(_read(path, "recovery key file").decode("ascii", "replace"))


def prompt_passphrase(*, confirm: bool) -> bytes:
    if not sys.stdin.isatty():
        raise UserError("no key given and stdin is not a terminal: pass --passphrase-file, --keyfile or "
                        "--recovery-key-file")
    first = getpass.getpass("Passphrase: ").encode()
    if not first:
        raise UserError("the passphrase is empty")
    if confirm and getpass.getpass("Repeat passphrase: ").encode() != first:
        raise UserError("the two passphrases differ")
    return first


def read_pin_file(path: str) -> bytes:
    data = read_passphrase_file(path)  # same rules: one trailing newline dropped, empty refused
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
           use_tpm: bool = True, prompt: bool = True) -> keys.Credentials:
    """Credentials from files; prompts (passphrase, TPM PIN) are deferred until unlocking needs them, and
    offered only on a terminal."""
    creds = keys.Credentials(tpm=use_tpm, tpm_tcti=tpm_tcti)
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
