"""`clawfs status MNT [--json]`: one look at a live mount: the daemon's `.clawfs/status` (read through the
mount, printed as it is, whatever sections the daemon has), the jail's layers on this host
(sandbox.jail.status(): each in force or why not) and the agent's pending proposals with what each would add
(sandbox/proposals.py).  Exit 0, or 1 when MNT is not a ClawFS mount.  mountd/cli.py registers the command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from clawfs.errors import UserError
from kernel import mounts
from sandbox import jail, proposals

from .policy_cli import FSTYPE


def read_daemon_status(mnt: Path) -> dict[str, Any]:
    entry = mounts.find_by_mountpoint(str(mnt))
    if entry is None or entry.fstype != FSTYPE or entry.mountpoint != os.path.realpath(mnt):
        raise UserError(f"{mnt} is not a ClawFS mount (mount a store there with `clawfs mount STORE {mnt}`)")
    path = mnt / ".clawfs" / "status"
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise UserError(f"{path} is not JSON ({e}): is the daemon a matching version?") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def collect(mnt: Path) -> dict[str, Any]:
    status = read_daemon_status(mnt)
    return {**status, "mount": str(mnt), "jail": jail.status(),
            "proposals": [p.summary() for p in proposals.pending(mnt)]}


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items() if not isinstance(v, dict | list))
    if isinstance(value, list):
        return f"{len(value)} items"
    return str(value)


def human(s: dict[str, Any]) -> list[str]:
    out = [f"mount: {s['mount']}"]
    if s.get("index_off"):
        out.append(f"index: off ({s['index_off']})")
    else:
        out.append(f"index: {s.get('files')} files, {s.get('chunks')} chunks, {s.get('pending')} pending, "
                   f"model {s.get('model')}")
    known = {"mount", "jail", "proposals", "embedder", "dim", "files", "chunks", "vectors", "pending",
             "vectors_in_memory", "search_mode", "loaded", "last_indexed_ns", "settings", "model", "index_off"}
    for key in sorted(set(s) - known):  # sections other parts of the daemon add (the proxy's, ...)
        out.append(f"{key}: {_short(s[key])}")
    layers = s["jail"]
    missing = [f"{n} ({v['detail']})" for n, v in layers.items() if not v["ok"]]
    out.append(f"jail: {', '.join(n for n, v in layers.items() if v['ok']) or 'no layer'} in force"
               + (f"; MISSING: {'; '.join(missing)}" if missing else ""))
    pending = s["proposals"]
    if not pending:
        out.append("proposals: none")
    for p in pending:
        if not p["valid"]:
            out.append(f"proposal {p['kind']} {p['name']}: INVALID ({p['error']})")
            continue
        adds = "; ".join(f"+{k} {', '.join(c['added'])}" for k, c in p["diff"].items() if c["added"])
        removes = "; ".join(f"-{k} {', '.join(c['removed'])}" for k, c in p["diff"].items() if c["removed"])
        what = p.get("change", "change")
        approve = f"clawfs tool approve {s['mount']} {p['name']}" if p["kind"] == "tool" \
            else f"clawfs policy approve {s['mount']}"
        out.append(f"proposal {p['kind']} {p['name']}: {what}, {adds or 'adds no reach'}"
                   + (f", {removes}" if removes else "") + f" -> {approve}")
    return out


@click.command("status")
@click.argument("mnt", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
def status(mnt: Path, as_json: bool) -> int:
    """A live mount at a glance: index and daemon status, the jail's layers, the agent's pending proposals."""
    s = collect(mnt)
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        for line in human(s):
            click.echo(line)
    return 0
