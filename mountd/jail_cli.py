"""`clawfs jail exec MNT [--tool NAME] -- CMD [ARGS...]`: run a command inside the jail the agent runtime gets,
beneath a live read-write mount, with the egress proxy serving the jail's HTTP_PROXY from this process.

Policy comes from the mount: settings/llm.toml's base_url (the LLM endpoint, allowed even on loopback),
settings/network.toml's `[[allow]]` entries (host, path_prefix, methods) for the runtime, and with --tool NAME
the tool's own tools/NAME/capabilities.json instead. Exit status: CMD's own; 1 when the jail cannot be built
(the message names the cause and the fix); 2 bad usage."""

from __future__ import annotations

import io
import json
import sys
import tomllib
from pathlib import Path
from typing import IO, Any

import click

from clawfs.errors import UserError
from sandbox import capabilities, jail, proxy
from sandbox.capabilities import Endpoint, HttpCapability
from sandbox.egress import Egress, ToolIdentity


def _toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e}): fix the file") from None


def llm_endpoint(home: Path) -> proxy.LlmEndpoint | None:
    url = _toml(home / "settings" / "llm.toml").get("llm", {}).get("base_url")
    return proxy.LlmEndpoint.from_url(url) if isinstance(url, str) and url else None


def network_allowlist(home: Path) -> HttpCapability | None:
    path = home / "settings" / "network.toml"
    entries = _toml(path).get("allow", [])
    if not isinstance(entries, list):
        raise UserError(f"{path}: `allow` must be an array of tables ([[allow]] host = ...)")
    allow = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("host"), str):
            raise UserError(f"{path}: each [[allow]] needs host = \"name\"")
        allow.append(Endpoint(e["host"].lower(), e.get("path_prefix"),
                              tuple(m.upper() for m in e.get("methods", []))))
    return HttpCapability(allowlist=tuple(allow)) if allow else None


def client_for(home: Path, tool: str | None) -> proxy.ProxyClient:
    if tool is None:
        return proxy.ProxyClient(ToolIdentity("runtime"), network_allowlist(home))
    path = home / "tools" / tool / "capabilities.json"
    if not path.exists():
        raise UserError(f"no tool {tool!r} in {home}/tools (see `clawfs tool list`)")
    try:
        caps = capabilities.load(path)
    except capabilities.CapabilitiesError as e:
        raise UserError(f"{path}: {e}") from None
    return proxy.ProxyClient(ToolIdentity(tool), caps.http)


@click.group("jail")
def jail_group() -> None:
    """The agent's jail: run and inspect it."""


@jail_group.command("exec")
@click.argument("mnt", type=click.Path(exists=True, file_okay=False))
@click.argument("cmd", nargs=-1, required=True)
@click.option("--tool", help="Run with this installed tool's network allowlist (tools/NAME/capabilities.json).")
@click.option("--allow-weaker-jail", is_flag=True, help="Run with the layers this host has; log each missing one.")
@click.option("--audit-log", type=click.Path(dir_okay=False), help="Append the proxy's JSON lines here.")
@click.option("--uid", type=click.IntRange(1, 2**31 - 2), default=jail.JAIL_UID, show_default=True,
              help="The jail's host uid (and gid): the mount's -o agent_uid.")
@click.option("--json", "as_json", is_flag=True, help="After CMD ends, print the jail's figures as JSON on stderr.")
def jail_exec(mnt: str, cmd: tuple[str, ...], tool: str | None, allow_weaker_jail: bool, audit_log: str | None,
              uid: int, as_json: bool) -> int:
    """Run CMD in the jail beneath the mount MNT (at /agent), HTTP_PROXY pointing at the egress proxy."""
    home = Path(mnt)
    client = client_for(home, tool)
    stream: IO[str] = open(audit_log, "a") if audit_log else io.StringIO()  # noqa: SIM115 (closed below)
    egress = Egress()
    px = proxy.EgressProxy(egress, proxy.Audit(stream), llm_endpoint(home))
    try:
        try:
            cfg = jail.JailConfig(mount=str(home.resolve()), uid=uid, gid=uid, allow_weaker=allow_weaker_jail)
            j = jail.start(cfg, list(cmd))
        except jail.JailError as e:
            raise UserError(str(e)) from None
        assert j.proxy_socket is not None
        px.serve(j.proxy_socket, client)
        code = j.wait()
        if as_json:
            click.echo(json.dumps({"exit": code, "start_seconds": round(j.ready_seconds, 4),
                                   "stopped_by": j.stopped_by, "proxy": px.audit.counts}), err=True)
        elif j.stopped_by:
            click.echo(f"clawfs jail: stopped by the {', '.join(j.stopped_by)} limit", err=True)
        return code
    finally:
        px.close()
        egress.close()
        stream.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(jail_group())


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
