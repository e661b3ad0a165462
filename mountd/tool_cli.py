"""`clawfs tool list|run|check|install`: the WASM tools of an agent home (`<MNT>/tools/<name>/`).

MNT is the mount's root (any agent home folder works: the tool host reads plain files).  The host itself is
sandbox/toolhost.py, imported when a command runs (wasmtime need not load for `clawfs --help`).  `run` goes out
through the in-process egress policy with no credential source: no secret value reaches this process (see
docs/ARCHITECTURE.md, "Tool host").  mountd/cli.py registers the group; this module does not import it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from clawfs.errors import UserError

if TYPE_CHECKING:
    from sandbox.toolhost import ToolHost
    from sandbox.wasm import WasmRuntime


log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clawfs" / "wasm"


cache_option = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                            envvar="CLAWFS_WASM_CACHE",
                            help="Where compiled tools are cached (default ~/.cache/clawfs/wasm).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
home_argument = click.argument("mnt", type=click.Path(exists=True, file_okay=False, path_type=Path))


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def _runtime(cache_dir: Path | None) -> WasmRuntime:
    from sandbox.wasm import WasmRuntime

    return WasmRuntime(cache_dir or default_cache_dir())


def _host(mnt: Path, cache_dir: Path | None) -> ToolHost:
    from sandbox.toolhost import ToolHost

    return ToolHost(mnt, runtime=_runtime(cache_dir))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def tool() -> None:
    """The agent's WASM tools (IronClaw's near:agent components) under MNT/tools/."""


@tool.command("list")
@home_argument
@cache_option
@json_option
def list_(mnt: Path, cache_dir: Path | None, as_json: bool) -> int:
    """The installed tools: name, WIT version, description, capabilities."""
    from sandbox.errors import ToolError

    host = _host(mnt, cache_dir)
    rows: list[dict[str, Any]] = []
    for name in host.names():
        try:
            t = host.tool(name)
            description, _ = host.texts(t)
            rows.append({"name": name, "wit_version": t.loaded.wit_version, "description": description,
                         "capabilities": t.capabilities.summary()})
        except ToolError as e:  # one broken tool is listed as such, the others still are
            rows.append({"name": name, "error": e.as_dict()})
    if as_json:
        _emit(rows)
    elif not rows:
        click.echo(f"no tools installed under {mnt / 'tools'}", err=True)
    for r in rows if not as_json else []:
        if "error" in r:
            click.echo(f"{r['name']}\t(unusable: {r['error']['kind']}: {r['error']['reason']})")
            continue
        caps = r["capabilities"]
        reach = ", ".join(caps["http"]) or "no network"
        click.echo(f"{r['name']}\tnear:agent@{r['wit_version']}\t{r['description'].splitlines()[0][:80]}\t"
                   f"[{reach}]")
    return 0


@tool.command()
@home_argument
@click.argument("name")
@click.option("--params", default="{}", show_default=True, help="The tool's parameters (JSON).")
@click.option("--context", "context", default=None, help="Invocation context (JSON), for tools that need one "
              "(IronClaw 0.4.1 tools: e.g. '{\"capability_id\": \"slack.search_messages\"}').")
@cache_option
@json_option
def run(mnt: Path, name: str, params: str, context: str | None, cache_dir: Path | None, as_json: bool) -> int:
    """Run tool NAME once and print its output (exit 1 with the reason on a tool error)."""
    from sandbox.errors import ToolError

    for label, text in (("--params", params), ("--context", context)):
        if text is not None:
            try:
                json.loads(text)
            except ValueError as e:
                raise UserError(f"{label} is not JSON ({e}); quote it for the shell, e.g. --params "
                                "'{\"text\": \"hi\"}'", exit_code=2) from None
    host = _host(mnt, cache_dir)
    start = time.perf_counter()
    try:
        out = host.run(name, params, context)
    except ToolError as e:
        _log_lines(name, e.logs)
        if as_json:
            ms = round((time.perf_counter() - start) * 1000, 3)
            _emit({"ok": False, "output": None, "error": e.as_dict(), "ms": ms,
                   "logs": [{"level": lv, "message": m} for lv, m in e.logs]})
            return 1
        raise UserError(f"tool {name}: {e.kind}: {e.reason}") from None
    _log_lines(name, out.logs)
    if as_json:
        try:
            output: Any = json.loads(out.output)
        except ValueError:
            output = out.output
        _emit({"ok": True, "output": output, "error": None, "ms": round(out.ms, 3), "fuel": out.fuel,
               "logs": [{"level": lv, "message": m} for lv, m in out.logs]})
    else:
        click.echo(out.output)
    return 0


def _log_lines(name: str, lines: list[tuple[str, str]]) -> None:
    for level, message in lines:  # shown with `clawfs -v`; in --json output always
        log.info("tool %s: %s: %s", name, level, message)


def _check(path: Path, cache_dir: Path | None, name: str | None = None) -> tuple[Any, dict[str, Any]]:
    from sandbox.errors import ToolError
    from sandbox.packages import PackageError, resolve
    from sandbox.toolhost import check_tool

    try:
        pkg = resolve(path)
    except PackageError as e:
        raise UserError(f"{e}") from None
    pkg.name = name or pkg.name
    try:
        binary = pkg.wasm.read_bytes()
        report = check_tool(_runtime(cache_dir), pkg.name, binary, pkg.capabilities, pkg.wasm.parent)
    except OSError as e:
        raise UserError(f"cannot read {pkg.wasm}: {e.strerror}") from None
    except ToolError as e:
        raise UserError(f"{path}: {e.kind}: {e.reason}") from None
    if pkg.note:
        report["note"] = pkg.note
    return pkg, report


@tool.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@cache_option
@json_option
def check(path: Path, cache_dir: Path | None, as_json: bool) -> int:
    """Check a tool before it is installed: a tool folder (tool.wasm + capabilities.json), IronClaw's
    <name>.wasm + <name>.capabilities.json, or an IronClaw package folder (manifest.toml + wasm/)."""
    _, report = _check(path, cache_dir)
    if as_json:
        _emit(report)
    else:
        click.echo(f"{report['name']}: ok, near:agent@{report['wit_version']}, "
                   f"network: {', '.join(report['capabilities']['http']) or 'none'}")
        if report.get("note"):
            click.echo(f"note: {report['note']}", err=True)
    return 0


@tool.command()
@home_argument
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Install under this name (default: from the package).")
@click.option("--force", is_flag=True, help="Replace an installed tool of the same name.")
@cache_option
@json_option
def install(mnt: Path, path: Path, name: str | None, force: bool, cache_dir: Path | None, as_json: bool) -> int:
    """Check PATH (as `check` does) and copy it to MNT/tools/<name>/ as tool.wasm + capabilities.json."""
    from sandbox.toolhost import TOOL_NAME

    if name is not None and not TOOL_NAME.match(name):
        raise UserError(f"--name {name!r}: use lower-case letters, digits, - and _ (at most 64)", exit_code=2)
    pkg, report = _check(path, cache_dir, name)
    if not TOOL_NAME.match(pkg.name):
        raise UserError(f"cannot name the tool from {path}: give one with --name")
    dest = mnt / "tools" / pkg.name
    if dest.exists() and not force:
        raise UserError(f"{dest} exists: pass --force to replace it")
    _copy_in(mnt / "tools", pkg.name, pkg.wasm, pkg.capabilities)
    report["installed"] = str(dest)
    if as_json:
        _emit(report)
    else:
        click.echo(f"installed {pkg.name} (near:agent@{report['wit_version']}) in {dest}")
        if report.get("note"):
            click.echo(f"note: {report['note']}", err=True)
    return 0


def _copy_in(tools: Path, name: str, wasm: Path, capabilities: str | None, *, keep: tuple[str, ...] = ()) -> None:
    """Build the tool's folder beside its place, then swap it in: a reader sees the old tool or the new one.
    `keep`: files of the installed folder carried over (an approval keeps the owner's limits.toml)."""
    tools.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=tools))
    try:
        shutil.copyfile(wasm, staging / "tool.wasm")
        if capabilities is not None:
            (staging / "capabilities.json").write_text(capabilities, encoding="utf-8")
        for kept in keep:
            if (tools / name / kept).is_file():
                shutil.copyfile(tools / name / kept, staging / kept)
        os.chmod(staging, 0o755)
        dest = tools / name
        if dest.exists():
            old = tools / f".{name}.old.{os.getpid()}"
            os.rename(dest, old)
            os.rename(staging, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, dest)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"cannot install into {tools}: {e.strerror}") from None


@tool.command()
@home_argument
@click.argument("name")
@click.option("--yes", is_flag=True, help="Install without asking.")
@cache_option
@json_option
def approve(mnt: Path, name: str, yes: bool, cache_dir: Path | None, as_json: bool) -> int:
    """Show what the agent's proposal MNT/proposals/tools/NAME/ would add to (or remove from) what tool NAME
    may reach, then install it into MNT/tools/NAME/ and remove the proposal.  Run as the mount's owner."""
    from sandbox import proposals

    from .policy_cli import as_owner, confirm, diff_lines, remove_if_unchanged

    as_owner(mnt)
    p = proposals.tool_proposal(mnt, name)
    if p is None:
        raise UserError(f"nothing to approve: no proposal {mnt / proposals.PROPOSALS / proposals.TOOLS / name}"
                        + (f" (pending: {', '.join(proposals.tool_names(mnt))})" if proposals.tool_names(mnt)
                           else ""))
    if not p.valid:
        raise UserError(f"proposal {name} is invalid, not installed: {p.error}")
    assert p.wasm is not None
    base = f"{proposals.PROPOSALS}/{proposals.TOOLS}/{name}"
    with tempfile.TemporaryDirectory(prefix="clawfs-approve-") as tmp:
        # what was read (and diffed) is what is checked and installed, whatever the agent writes meanwhile
        staged = Path(tmp) / name
        staged.mkdir()
        (staged / "tool.wasm").write_bytes(p.wasm)
        if p.capabilities_text is not None:
            (staged / "capabilities.json").write_text(p.capabilities_text, encoding="utf-8")
        try:
            pkg, report = _check(staged, cache_dir, name)
        except UserError as e:
            raise UserError(f"proposal {name} is invalid, not installed: {e}") from None
        summary = p.summary()
        if not as_json:
            binary = "" if not p.installed else ", binary changed" if p.wasm_changed else ", same binary"
            click.echo(f"tool {name}: {summary['change']} (near:agent@{report['wit_version']}{binary}); its reach:")
            for line in diff_lines(p.diff):
                click.echo(line)
        confirm(f"Install {name} into {mnt / 'tools' / name}?", yes)
        _copy_in(mnt / "tools", name, pkg.wasm, pkg.capabilities, keep=("limits.toml",))
    removed = remove_if_unchanged(mnt, f"{base}/tool.wasm", p.wasm) and \
        (p.capabilities_text is None or remove_if_unchanged(
            mnt, f"{base}/capabilities.json", p.capabilities_text.encode("utf-8")))
    if removed:
        try:
            (mnt / base).rmdir()
        except OSError:
            removed = False  # the agent put something else there: left for it (or the owner) to clear
    if as_json:
        _emit({**summary, "installed": str(mnt / "tools" / name), "proposal_removed": removed,
               "wit_version": report["wit_version"]})
    else:
        click.echo(f"installed {name} in {mnt / 'tools' / name}")
        if not removed:
            click.echo(f"note: {mnt / base} changed after it was read and stays pending", err=True)
    return 0
