"""`clawfs jail exec MNT [--tool NAME] -- CMD [ARGS...]` and `clawfs jail check`: run a command inside the jail the
agent runtime gets, beneath a live read-write mount, with HTTP_PROXY served by the mount's daemon.

This process builds the jail (it needs root) and holds it: the jail's listening proxy socket goes to the mount's
daemon over its control socket (mountd/control_socket.py) with the tool's name, and the daemon serves it until
CMD ends (mountd/proxy_service.py: policy read live from the store, credentials injected there, every request
in `.clawfs/audit/network.jsonl`).  The jail runs as the mount's agent uid (`-o agent_uid`), which the daemon
reports; `--uid` overrides it.  `run_jailed` is the same for `clawfs agent run`.

Exit status: CMD's own; 1 when the jail cannot be built or the mount has no daemon to serve its proxy (the
message names the cause and the fix); 2 bad usage."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from clawfs.errors import UserError
from sandbox import jail

from .control_socket import JailLease


@dataclass
class Outcome:
    code: int
    start_seconds: float
    stopped_by: list[str]
    proxy: dict[str, int]


@dataclass
class _Forward:
    """SIGTERM/SIGINT to this process go to the jail (its init passes them to CMD), which then ends as CMD
    decides: `clawfs agent run` finishes its turns and exits 0.  One that comes before the jail exists is kept
    and passed on as soon as it does (so the jail is never left behind without its holder)."""
    running: jail.Jail | None = None
    pending: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        if self.running is None:
            self.pending = signum
            return
        with contextlib.suppress(ProcessLookupError):
            self.running.proc.send_signal(signum)

    def attach(self, j: jail.Jail) -> None:
        self.running = j
        if self.pending is not None:
            self(self.pending, None)


@contextlib.contextmanager
def _forward_signals() -> Iterator[_Forward]:
    forward = _Forward()
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield forward
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_jailed(mnt: str, argv: list[str], *, tool: str | None = None, uid: int | None = None,
               allow_weaker: bool = False, need_agent_uid: str | None = None,
               env: dict[str, str] | None = None, fds: dict[str, int] | None = None,
               cpu_weight: int = jail.CPU_WEIGHT) -> Outcome:
    """Run argv in a jail beneath the mount `mnt`, its proxy served by the mount's daemon; wait for it.
    `need_agent_uid`: refuse (with this as the reason) a mount that has no agent uid.  `fds`: as jail.start's.
    `cpu_weight`: the jail's at start (jail.START_CPU_WEIGHT for a runtime whose supervisor lowers it)."""
    home = Path(mnt).resolve()
    lease = JailLease.open(str(home), tool)
    with _forward_signals() as forward:
        try:
            if need_agent_uid and lease.agent_uid is None:
                raise UserError(f"{need_agent_uid}: mount the store with -o allow_other,agent_uid=N "
                                f"(N a uid of its own for the agent, e.g. {jail.JAIL_UID})")
            jail_uid = uid if uid is not None else lease.agent_uid if lease.agent_uid is not None else jail.JAIL_UID
            jail_gid = (lease.agent_gid if uid is None and lease.agent_gid is not None else jail_uid)
            cfg = jail.JailConfig(mount=str(home), uid=jail_uid, gid=jail_gid, allow_weaker=allow_weaker,
                                  env=env or {}, ca_pem=lease.ca_pem, cpu_weight=cpu_weight)
            try:
                j = jail.start(cfg, argv, fds=fds)
            except jail.JailError as e:
                raise UserError(str(e)) from None
        except BaseException:
            lease.close()
            raise
        try:
            assert j.proxy_socket is not None
            group: dict[str, Any] | None = asdict(j.cgroup) if j.cgroup else None
            lease.hand_over(j.proxy_socket, group, j.root_dir)
            j.proxy_socket.close()  # the daemon holds its own copy
            j.proxy_socket = None
        except BaseException:
            j.kill()
            j.wait()
            lease.close()
            raise
        forward.attach(j)
        code = j.wait()
    counts = lease.end()
    return Outcome(code, round(j.ready_seconds, 4), j.stopped_by, counts)


@click.group("jail")
def jail_group() -> None:
    """The agent's jail: run and inspect it."""


@jail_group.command("exec")
@click.argument("mnt", type=click.Path(exists=True, file_okay=False))
@click.argument("cmd", nargs=-1, required=True)
@click.option("--tool", help="Run with this installed tool's network allowlist (tools/NAME/capabilities.json).")
@click.option("--allow-weaker-jail", is_flag=True, help="Run with the layers this host has; log each missing one.")
@click.option("--uid", type=click.IntRange(1, 2**31 - 2), default=None,
              help=f"The jail's host uid (and gid); default the mount's -o agent_uid, else {jail.JAIL_UID}.")
@click.option("--json", "as_json", is_flag=True, help="After CMD ends, print the jail's figures as JSON on stderr.")
def jail_exec(mnt: str, cmd: tuple[str, ...], tool: str | None, allow_weaker_jail: bool, uid: int | None,
              as_json: bool) -> int:
    """Run CMD in the jail beneath the mount MNT (at /agent), HTTP_PROXY pointing at the daemon's egress proxy."""
    out = run_jailed(mnt, list(cmd), tool=tool, uid=uid, allow_weaker=allow_weaker_jail)
    if as_json:
        click.echo(json.dumps({"exit": out.code, "start_seconds": out.start_seconds, "stopped_by": out.stopped_by,
                               "proxy": out.proxy}), err=True)
    elif out.stopped_by:
        click.echo(f"clawfs jail: stopped by the {', '.join(out.stopped_by)} limit", err=True)
    return out.code


@jail_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the layers as JSON.")
def jail_check(as_json: bool) -> int:
    """Which jail layers this host allows; exit 1 if one is missing (each line names the cause and the fix)."""
    layers = jail.status()
    if as_json:
        click.echo(json.dumps(layers, indent=2, sort_keys=True))
    else:
        for name, layer in layers.items():
            click.echo(f"{name:9} {'ok' if layer['ok'] else 'MISSING'}  {layer['detail']}")
    return 0 if all(layer["ok"] for layer in layers.values()) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(jail_group())
