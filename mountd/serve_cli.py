"""`clawfs serve STORE MNT [-o OPTS] [--no-agent] [--foreground]`: the command over mountd/serve.py (registered
by mountd/cli.py)."""

from __future__ import annotations

import os

import click

from clawfs.errors import UserError

from . import credentials, options, serve
from .supervisor import RestartPolicy


@click.command("serve")
@click.argument("store", type=click.Path())
@click.argument("mountpoint", type=click.Path())
@click.option("-o", "opts", multiple=True, metavar="OPTS", help="Mount options, as for `clawfs mount`.")
@click.option("--no-agent", is_flag=True, help="Mount and serve webhooks only; run no agent runtime.")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground (systemd: Type=notify); log to stderr.")
@click.option("--runtime", type=click.Choice(["jail", "host"]), default="jail", show_default=True,
              help="jail: `clawfs agent run` (the jailed runtime); host: the runtime as a plain process, as the "
                   "mount's agent uid if any (hosts without the jail, tests).")
@click.option("--ping-timeout", default=30.0, show_default=True,
              help="Seconds without a liveness ping before the runtime is killed and restarted.")
@click.option("--start-timeout", default=120.0, show_default=True,
              help="Seconds to wait for the runtime's first liveness ping before giving up the start.")
@click.pass_context
def serve_command(ctx: click.Context, store: str, mountpoint: str, opts: tuple[str, ...], no_agent: bool,
                  foreground: bool, runtime: str, ping_timeout: float, start_timeout: float) -> int:
    """Unlock STORE, mount it on MOUNTPOINT, serve its webhooks and run its agent beneath it; returns once READY
    (or with the reason it is not).  `clawfs umount MOUNTPOINT` or SIGTERM stops all of it."""
    mo = options.parse(list(opts))
    if not os.path.exists(store):
        raise UserError(f"{store}: no such store (create one with `clawfs mkfs {store}`)")
    serve.systemd_credentials(mo)
    creds = credentials.gather(mo.passphrase_file, mo.keyfile, mo.recovery_key_file, tpm_tcti=mo.tpm_tcti,
                               tpm_pin_file=mo.tpm_pin_file, use_tpm=mo.use_tpm)
    cfg = serve.ServeConfig(store, mountpoint, mo, agent=not no_agent, runtime=runtime, ping_timeout=ping_timeout,
                            start_timeout=start_timeout, policy=RestartPolicy())
    return serve.serve(cfg, creds, foreground=foreground, verbose=bool(ctx.find_root().obj.get("verbose")))
