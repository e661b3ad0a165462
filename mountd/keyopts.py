"""The key options every command that opens a store takes (passphrase, keyfile, recovery key, TPM), gathered
into one `creds` argument.  A module of its own so that every command module (cli.py, bench_cli.py) imports it
and none imports another: mountd/cli.py composes them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from . import credentials

KEY_OPTION_NAMES = ("passphrase_file", "keyfile", "recovery_key_file", "tpm_tcti", "tpm_pin_file", "no_tpm")
key_options = [
    click.option("--passphrase-file", type=click.Path(), help="File holding the passphrase."),
    click.option("--keyfile", type=click.Path(), help="Key file (any bytes, at least 16)."),
    click.option("--recovery-key-file", type=click.Path(), help="File holding the recovery key."),
    click.option("--tpm-tcti", envvar="CLAWFS_TPM_TCTI",
                 help="TPM to use (default device:/dev/tpmrm0; e.g. swtpm:host=127.0.0.1,port=2321)."),
    click.option("--tpm-pin-file", type=click.Path(), help="File holding the TPM slot's PIN."),
    click.option("--no-tpm", is_flag=True, help="Do not try TPM slots."),
]
# `key add-tpm` takes --tpm-pin-file for the new slot; the PIN that unlocks an existing slot is this one there.
unlock_pin_option = click.option("--unlock-tpm-pin-file", "tpm_pin_file", type=click.Path(),
                                 help="File holding the PIN of the existing TPM slot used to unlock.")


def with_key_options(fn: Callable[..., Any], *, for_new_tpm_slot: bool = False) -> Callable[..., Any]:
    """Add the key options; the command receives them gathered as `creds` (prompts deferred until needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = {name: kwargs.pop(name) for name in KEY_OPTION_NAMES}
        kwargs["creds"] = credentials.gather(k["passphrase_file"], k["keyfile"], k["recovery_key_file"],
                                             tpm_tcti=k["tpm_tcti"], tpm_pin_file=k["tpm_pin_file"],
                                             use_tpm=not k["no_tpm"])
        return fn(*args, **kwargs)

    opts = [unlock_pin_option if for_new_tpm_slot and o is key_options[4] else o for o in key_options]
    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper
