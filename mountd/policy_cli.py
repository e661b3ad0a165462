"""`clawfs policy approve MNT`: the owner applies the agent's `proposals/network.toml` to `settings/network.toml`,
after seeing what it adds and removes.  Also the helpers the owner's approvals share (mountd/tool_cli.py's
`tool approve` uses them): which uid owns a mount, the refusal when the caller is not it, the confirmation.

The agent may not write policy (clawfs/policy.py); a proposal is its way to ask, and the owner's approval, made
here as the owner through the mount, is the only way its reach grows.  What is shown is what is applied: the
proposal is read once (sandbox/proposals.py) and those bytes are written.  mountd/cli.py registers the group.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from clawfs.errors import UserError
from kernel import mounts
from sandbox import proposals

FSTYPE = "fuse.clawfs"


def mount_owner(mnt: Path) -> int | None:
    """The uid that mounted the ClawFS mount at `mnt` (FUSE's `user_id=` super option), None if `mnt` is not a
    ClawFS mount's root."""
    entry = mounts.find_by_mountpoint(str(mnt))
    if entry is None or entry.fstype != FSTYPE or entry.mountpoint != os.path.realpath(mnt):
        return None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            lf, rf = left.split(), right.split()
            if len(lf) > 4 and lf[2] == entry.dev and len(rf) > 2:
                for opt in rf[2].split(","):
                    if opt.startswith("user_id="):
                        return int(opt.removeprefix("user_id="))
    return None


def as_owner(mnt: Path) -> None:
    """Refuse unless this process is the mount's owner (a plain folder, not mounted, is the caller's own)."""
    owner = mount_owner(mnt)
    if owner is not None and owner != os.geteuid():
        raise UserError(f"only the mount's owner approves: run this as uid {owner} (this is uid {os.geteuid()})")


def diff_lines(diff: dict[str, dict[str, list[str]]]) -> list[str]:
    """`+ hosts api.x.test` / `- paths ...` lines for a human."""
    out = []
    for kind, change in diff.items():
        out += [f"  + {kind}: {x}" for x in change["added"]]
        out += [f"  - {kind}: {x}" for x in change["removed"]]
    return out or ["  (no change in reach)"]


def confirm(question: str, yes: bool) -> None:
    """Go on only with --yes or the owner's yes at a terminal."""
    if yes:
        return
    import sys

    if not sys.stdin.isatty():
        raise UserError("not applied: confirm at a terminal or pass --yes")
    if not click.confirm(question, default=False, err=True):
        raise UserError("not applied (the owner said no)")


def write_policy_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename, so a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def remove_if_unchanged(home: Path, rel: str, seen: bytes | None) -> bool:
    """Remove an applied proposal file unless the agent rewrote it since it was read (then it stays pending)."""
    try:
        now = proposals.read_file(home, rel, proposals.MAX_WASM_BYTES)
    except proposals.ProposalError:
        return False
    if now != seen:
        return False
    (home / rel).unlink(missing_ok=True)
    return True


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


@click.group("policy", context_settings={"help_option_names": ["-h", "--help"]})
def policy_group() -> None:
    """The owner's policy (settings/, tools/, secrets/): apply what the agent proposed."""


@policy_group.command("approve")
@click.argument("mnt", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Apply without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the diff and the result as JSON.")
def approve(mnt: Path, yes: bool, as_json: bool) -> int:
    """Show what MNT/proposals/network.toml adds to and removes from settings/network.toml, then apply it."""
    as_owner(mnt)
    p = proposals.network_proposal(mnt)
    if p is None:
        raise UserError(f"nothing to approve: no {mnt / proposals.PROPOSALS / proposals.NETWORK}")
    if not p.valid:
        raise UserError(f"proposal {proposals.PROPOSALS}/{proposals.NETWORK} is invalid, not applied: {p.error}")
    assert p.text is not None
    if not as_json:
        click.echo(f"settings/network.toml as proposed by the agent ({len(p.entries)} [[allow]] entries):")
        for line in diff_lines(p.diff):
            click.echo(line)
    confirm("Apply it to settings/network.toml?", yes)
    write_policy_file(mnt / "settings" / proposals.NETWORK, p.text)
    removed = remove_if_unchanged(mnt, f"{proposals.PROPOSALS}/{proposals.NETWORK}", p.text)
    if as_json:
        emit({**p.summary(), "applied": str(mnt / "settings" / proposals.NETWORK), "proposal_removed": removed})
    else:
        click.echo(f"applied to {mnt / 'settings' / proposals.NETWORK}")
        if not removed:
            click.echo("note: the proposal changed after it was read: the new one stays pending", err=True)
    return 0
