"""`clawfs agent init|run|status` and `clawfs chat`: the agent runtime's commands (registered by mountd/cli.py),
and the seeding behind `clawfs mkfs --agent-home`.

Everything but the seeding of a new store works on a mounted home through plain file I/O (agent/).

`clawfs agent run` runs the runtime (`python -m agent.liveness /agent`, with no supervisor to ping) inside the
jail beneath the mount, as the mount's agent uid (`-o agent_uid`), its HTTP_PROXY served by the mount's daemon
(mountd/jail_cli.run_jailed).  The runtime sends a placeholder for `api_key_secret` (agent/llm.py); the daemon's
egress proxy, which alone reads the store's secrets, swaps in the value for the LLM endpoint of
settings/llm.toml and redacts it from the answer.  No process of the jail, and not this one, ever holds it.
The runtime's WASM tools do not run in its jail: this process holds the tool broker (mountd/toolbroker.py), whose
socket is the runtime's $CLAWFS_TOOLS_FD, and which runs each tool in a jail of its own leased as that tool.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from agent import chat as agent_chat
from agent import home as agent_home
from agent.config import ConfigError, load_agent, load_llm
from agent.routines import load_routines
from agent.state import read_status
from clawfs.errors import UserError
from sandbox import jail
from sandbox.toolworker import BROKER_ENV

from . import logs
from .jail_cli import run_jailed
from .toolbroker import Broker
from .ui import run_command

log = logging.getLogger(__name__)


def _home(mnt: str) -> Path:
    home = Path(mnt)
    if not (home / ".clawfs" / "status").exists():
        raise UserError(f"{mnt} is not a mounted ClawFS home; mount the store there first "
                        f"(clawfs mount STORE {mnt})")
    return home


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group("agent")
def agent_group() -> None:
    """Run the agent that lives in a mounted home."""


@agent_group.command("init")
@click.argument("mountpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print what was created as JSON.")
def init(mountpoint: str, as_json: bool) -> int:
    """Seed MOUNTPOINT's home (identity files, settings, channels/local/); never overwrites a file."""
    created = agent_home.init(_home(mountpoint))
    if as_json:
        _emit({"created": created})
    elif created:
        click.echo(f"created {len(created)} entries: {', '.join(created)}")
    else:
        click.echo("nothing to do: the home is already seeded")
    return 0


@agent_group.command("run")
@click.argument("mountpoint", type=click.Path())
@click.option("--channel", "channels", multiple=True, metavar="NAME",
              help="Serve only this channel (repeatable; default: every channel of channels/).")
@click.option("--allow-weaker-jail", is_flag=True, help="Run with the jail layers this host has; log each missing one.")
def run(mountpoint: str, channels: tuple[str, ...], allow_weaker_jail: bool) -> int:
    """Run the agent in the jail, in the foreground (logs to stderr; SIGTERM finishes the current turns and
    exits 0)."""
    home = _home(mountpoint)
    try:  # read here too, so that a broken file is this command's clear error, not a jailed traceback
        load_llm(home)
        load_agent(home)
    except ConfigError as e:
        raise UserError(str(e)) from e
    argv = ["python3", "-m", "agent.liveness", "/agent", *(f"--channel={c}" for c in channels)]
    inherited = jail.inherited_fds()
    # supervised by `clawfs serve` (a liveness socket): the jail starts at a normal CPU weight and the daemon
    # lowers it at the first ping (jail.settle_cpu); run by hand, nobody would, so it starts low
    weight = jail.START_CPU_WEIGHT if jail.LIVENESS_ENV in inherited else jail.CPU_WEIGHT
    broker = Broker(mountpoint, allow_weaker=allow_weaker_jail)  # each tool's calls in a jail of its own
    broker.start()
    try:
        out = run_jailed(mountpoint, argv, allow_weaker=allow_weaker_jail,
                         need_agent_uid="the runtime runs in the jail as the mount's agent uid, and this mount has "
                                        "none",
                         fds={**inherited, BROKER_ENV: broker.runtime_end.fileno()}, cpu_weight=weight)
    finally:
        broker.close()
    if out.stopped_by:
        log.warning("the runtime's jail was stopped by the %s limit", ", ".join(out.stopped_by))
    return out.code


def status_of(home: Path) -> dict[str, Any]:
    st = read_status(home)
    every = float(st.get("status_every", 1.0) or 1.0)
    fresh = bool(st) and time.time() - float(st.get("updated_at", 0)) <= max(10.0, 5 * every)
    routines, bad = load_routines(home)
    queue = {ch: len(os.listdir(home / "channels" / ch / "inbox" / "new")) for ch in agent_home.channels(home)}
    return {"running": bool(st.get("running")) and fresh, "pid": st.get("pid") if fresh else None,
            "queue": queue, "last_turn": st.get("last_turn") or None,
            "next_routines": st.get("next_routines") or {r.name: None for r in routines},
            "routine_errors": bad, "turns": st.get("turns", 0), "updated_at": st.get("updated_at")}


@agent_group.command("status")
@click.argument("mountpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(mountpoint: str, as_json: bool) -> int:
    """Running or not, queue depth, last turn, next routine fires."""
    s = status_of(_home(mountpoint))
    if as_json:
        _emit(s)
        return 0
    running = f"running (pid {s['pid']})" if s["running"] else "not running"
    click.echo(f"runtime: {running}")
    click.echo("queue: " + (", ".join(f"{k} {v}" for k, v in s["queue"].items()) or "no channels"))
    lt = s["last_turn"]
    if lt:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lt.get("at", 0)))
        click.echo(f"last turn: {when} {lt.get('channel')}/{lt.get('thread')} {lt.get('status')} "
                   f"({lt.get('seconds')} s, {lt.get('tool_calls')} tool calls)")
    else:
        click.echo("last turn: none")
    for name, nxt in sorted(s["next_routines"].items()):
        click.echo(f"routine {name}: next fire {nxt or 'not scheduled yet'}")
    for name, why in sorted(s["routine_errors"].items()):
        click.echo(f"routine file {name}: not used: {why}")
    return 0


@click.command("chat")
@click.argument("mountpoint", type=click.Path())
@click.argument("message", required=False)
@click.option("--channel", default="local", show_default=True, help="The channel to talk on.")
@click.option("--thread", default="cli", show_default=True, help="The conversation thread.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the reply.")
@click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")
def chat(mountpoint: str, message: str | None, channel: str, thread: str, timeout: float, as_json: bool) -> int:
    """Deliver MESSAGE to the agent and print its reply; without MESSAGE, an interactive prompt."""
    home = _home(mountpoint)
    if message is not None:
        return _one(home, message, channel, thread, timeout, as_json)
    while True:
        try:
            line = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            return 0
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip():
            _one(home, line, channel, thread, timeout, as_json)


def _one(home: Path, message: str, channel: str, thread: str, timeout: float, as_json: bool) -> int:
    try:
        reply = agent_chat.ask(home, message, channel=channel, thread=thread, timeout=timeout)
    except agent_chat.NoReply as e:
        raise UserError(str(e)) from e
    if as_json:
        _emit(reply.__dict__)
    else:
        click.echo(reply.text)
    return 0


def seed_new_store(store: str, slots: list[tuple[str, bytes]]) -> list[str]:
    """`clawfs mkfs --agent-home`: write the seed of `agent home init` into a new, unmounted store (the same
    files, through the VFS: the store is not mounted yet)."""
    from clawfs import keys
    from clawfs.errors import FsError
    from clawfs.store import ROOT, Store
    from clawfs.vfs import VFS, Ctx

    creds = keys.Credentials(passphrases=[s for k, s in slots if k == "passphrase"],
                             keyfiles=[s for k, s in slots if k == "keyfile"],
                             recovery_keys=[s for k, s in slots if k == "recovery"])
    st = Store.open(store, creds)
    created: list[str] = []
    try:
        vfs = VFS(st)
        ctx = Ctx(uid=os.getuid(), gid=os.getgid())

        def mkdirs(parts: list[str]) -> int:
            ino = ROOT
            for part in parts:
                try:
                    ino = vfs.lookup(ino, part.encode()).ino
                except FsError:
                    ino = vfs.mkdir(ino, part.encode(), 0o755, ctx).ino
            return ino

        for d in agent_home.DIRS:
            mkdirs([d])
            created.append(d + "/")
        for box in ("inbox", "outbox"):
            for sub in agent_home.MAILDIR_SUBDIRS:
                mkdirs(["channels", "local", box, sub])
        for rel, text in agent_home.SEED.items():
            *dirs, name = rel.split("/")
            parent = mkdirs(dirs)
            fh, _ = vfs.create(parent, name.encode(), 0o644, os.O_RDWR, ctx)
            try:
                vfs.write(fh, 0, text.encode())
            finally:
                vfs.release(fh)
            created.append(rel)
    finally:
        st.close()
    return created


def main(argv: list[str] | None = None) -> None:
    """`python -m mountd.agent_cli run MNT`: `clawfs agent run` without the rest of the CLI, whose import costs
    0.5 s of CPU (every command's module, the FUSE daemon, the index engine) - clawfs serve's jailed runtime,
    restarted after each crash.  Errors and exit codes as mountd/cli.py's main."""
    logs.to_stderr()
    run_command(agent_group, argv, "clawfs agent")


if __name__ == "__main__":
    main()
