"""The `clawfs` command line.  Quiet by default, logs to stderr, `--json` where output is data.

Exit codes: 0 success, 1 an error the message explains, 2 bad usage, 4 fsck found problems, 130 interrupted.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from clawfs import fsck as fsck_mod
from clawfs import keys, tpm_slots
from clawfs.errors import StoreBusy, UserError
from clawfs.store import DEFAULT_BLOCK_SIZE, Store, StoreInfo, StoreLock, read_info
from kernel import tpm

from . import credentials, logs, options
from .keyopts import with_key_options
from .ui import parse_size, run_command


def _write_secret(path: str, data: bytes, *, exclusive: bool = True) -> None:
    """Write a secret file readable by its owner only (0600), never over an existing one when `exclusive`."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class LazyGroup(click.Group):
    """A group whose `lazy` commands' modules are imported only when one of them runs (or `--help` lists them):
    click's documented lazy-loading pattern.  `clawfs agent run` and the rest need not import every command's
    module."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}  # command name -> "module.attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, attr = self.lazy[cmd_name].rsplit(".", 1)
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command), f"{self.lazy[cmd_name]} is not a click command"
        return cmd


LAZY_COMMANDS = {
    "agent": "mountd.agent_cli.agent_group", "bench": "mountd.bench_cli.bench", "chat": "mountd.agent_cli.chat",
    "jail": "mountd.jail_cli.jail_group", "policy": "mountd.policy_cli.policy_group",
    "serve": "mountd.serve_cli.serve_command", "status": "mountd.status_cli.status", "tool": "mountd.tool_cli.tool",
}


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clawfs")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages to stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """ClawFS: an AI agent's home as one encrypted, searchable filesystem."""
    ctx.obj = {"verbose": verbose}
    logs.to_stderr(verbose)


tpm_seal_options = [
    click.option("--tpm-pcrs", default="7", show_default=True,
                 help="PCRs the TPM slot is bound to: e.g. 7, 0,2,7 or none."),
    click.option("--tpm-pin", is_flag=True, help="Protect the TPM slot with a PIN (asked on the terminal)."),
    click.option("--tpm-pin-file", "new_tpm_pin_file", type=click.Path(), help="Read the new TPM slot's PIN here."),
    click.option("--tpm-rollback-protection", is_flag=True,
                 help="Keep a TPM monotonic counter so an older copy of the store is refused at mount."),
]


def with_tpm_seal_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(tpm_seal_options):
        fn = opt(fn)
    return fn


def _tpm_spec(tcti: str | None, tpm_pcrs: str, tpm_pin: bool, pin_file: str | None,
              rollback: bool) -> tpm_slots.TpmSpec:
    pin = credentials.read_pin_file(pin_file) if pin_file else (
        credentials.prompt_pin(confirm=True) if tpm_pin else None)
    return tpm_slots.TpmSpec(tpm_slots.parse_pcrs(tpm_pcrs), pin, tcti or tpm.default_tcti(), rollback)


def _keyfile(path: str) -> bytes:
    """A new slot's keyfile: read, or made with 32 random bytes when it does not exist (mkfs and key add)."""
    if not os.path.lexists(path):
        _check_can_create(path, "the keyfile")
        _write_secret(path, os.urandom(32))
        click.echo(f"clawfs: created keyfile {path}; keep a copy somewhere safe", err=True)
    return credentials.read_keyfile(path)


def _check_can_create(path: str, what: str | None = None) -> None:
    """Say why `path` cannot be created before trying: its directory is missing, read-only or not ours."""
    parent = os.path.dirname(os.path.abspath(path))
    what = what or path
    if not os.path.isdir(parent):
        raise UserError(f"cannot create {what}: the directory {parent} does not exist (`mkdir -p {parent}`)")
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise UserError(f"cannot create {what}: {parent} is on a read-only filesystem")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot create {what}: the directory {parent} is not writable (permission denied)")


def _store_log_file(store: str) -> str:
    """The daemon's log when `-o log_file` names none: one per store, beside the default log."""
    base = os.path.basename(store) or "store"
    digest = hashlib.sha256(os.path.realpath(store).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return os.path.join(os.path.dirname(logs.default_log_file()), f"{base}-{digest}.log")


def _info(store: str) -> StoreInfo:
    """What the store tells without a key; a key slot whose parameters are not JSON is said to be damaged."""
    try:
        return read_info(store)
    except ValueError as e:
        raise UserError(f"{store}: a key slot is damaged (its parameters are unreadable: {e})") from None


def _warn_if_unclean(store: str) -> None:
    """A store whose last mount did not end cleanly, now that nothing holds it: say so on the terminal."""
    if _in_use(store):
        return  # the mount that follows says why
    i = _info(store)
    if i.mounted_flag:
        click.echo(f"clawfs: warning: {store} was not cleanly unmounted last time "
                   f"({i.unclean_shutdowns + 1} unclean shutdowns so far); run `clawfs fsck {store}` to check it",
                   err=True)


# -- mkfs -------------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("store", type=click.Path())
@click.option("--passphrase-file", type=click.Path(), help="Add a passphrase slot from this file.")
@click.option("--keyfile", type=click.Path(),
              help="Add a keyfile slot; the file is created with 32 random bytes if it does not exist.")
@click.option("--recovery-key-file", type=click.Path(),
              help="Add a recovery slot and write its key to this new file.")
@click.option("--block-size", default=str(DEFAULT_BLOCK_SIZE), show_default=True,
              help="Plaintext bytes per encrypted block (4K..1M, a power of two).")
@click.option("--kdf", type=click.Choice(["argon2id", "scrypt"]), default="argon2id", show_default=True,
              help="Passphrase key derivation.")
@click.option("--force", is_flag=True, help="Overwrite an existing store (its contents are lost).")
@click.option("--tpm", "use_tpm", is_flag=True, help="Add a TPM 2.0 slot: the store opens on this machine alone.")
@with_tpm_seal_options
@click.option("--tpm-tcti", envvar="CLAWFS_TPM_TCTI", help="TPM to use (default device:/dev/tpmrm0).")
@click.option("--json", "as_json", is_flag=True, help="Print the new store's info as JSON.")
@click.option("--agent-home", is_flag=True, help="Seed the agent home (as `clawfs agent init` does on a mount).")
def mkfs(store: str, passphrase_file: str | None, keyfile: str | None, recovery_key_file: str | None,
         block_size: str, kdf: str, force: bool, use_tpm: bool, tpm_pcrs: str, tpm_pin: bool,
         new_tpm_pin_file: str | None, tpm_rollback_protection: bool, tpm_tcti: str | None, as_json: bool,
         agent_home: bool = False) -> int:
    """Create a store: one SQLite file holding only ciphertext.

    With no key option, asks for a passphrase twice (on a terminal only)."""
    if tpm_rollback_protection and not use_tpm:
        raise UserError("--tpm-rollback-protection needs --tpm")
    _check_can_create(store)
    spec = _tpm_spec(tpm_tcti, tpm_pcrs, tpm_pin, new_tpm_pin_file, tpm_rollback_protection) if use_tpm else None
    slots: list[tuple[str, bytes]] = []
    if passphrase_file:
        slots.append(("passphrase", credentials.read_passphrase_file(passphrase_file)))
    if keyfile:
        slots.append(("keyfile", _keyfile(keyfile)))
    recovery_text = None
    if recovery_key_file:
        if os.path.exists(recovery_key_file) and not force:
            raise UserError(f"{recovery_key_file} exists; refusing to overwrite a recovery key (pass --force)")
        secret, recovery_text = keys.new_recovery_key()
        slots.append(("recovery", secret))
    if not slots and spec is None:
        slots.append(("passphrase", credentials.prompt_passphrase(confirm=True)))
    if spec is not None and not slots:
        click.echo("clawfs: warning: the TPM slot is the only key; add a recovery key (`clawfs key add STORE "
                   "recovery`) or the data is lost with this machine", err=True)
    Store.create(store, slots, block_size=parse_size(block_size), force=force, kdf=kdf, tpm_spec=spec)
    if agent_home:
        from .agent_cli import seed_new_store

        seed_new_store(store, slots)
    if recovery_key_file and recovery_text:
        _write_secret(recovery_key_file, (recovery_text + "\n").encode(), exclusive=False)
        click.echo(f"clawfs: recovery key written to {recovery_key_file}; store it offline", err=True)
    if as_json:
        _emit_json(read_info(store).__dict__)
    return 0


# -- mount / umount ---------------------------------------------------------------------------------------------
@cli.command()
@click.argument("store", type=click.Path())
@click.argument("mountpoint", type=click.Path())
@click.option("-o", "opts", multiple=True, metavar="OPTS",
              help="Comma-separated: passphrase_file=F, keyfile=F, recovery_key_file=F, tpm_tcti=T, "
                   "tpm_pin_file=F, notpm, accept_rollback, noindex, ro, allow_other, default_permissions, log_file=F, "
                   "debug, and the usual FUSE/kernel flags (nosuid, nodev, ...).")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground; log to stderr.")
@click.pass_context
def mount(ctx: click.Context, store: str, mountpoint: str, opts: tuple[str, ...], foreground: bool) -> int:
    """Mount STORE on MOUNTPOINT; returns once the mount is live."""
    from . import daemon, serve  # here, not at the top: the FUSE daemon's imports cost every command 0.5 s

    mo = options.parse(list(opts))
    if not os.path.exists(store):
        raise UserError(f"{store}: no such store (create one with `clawfs mkfs {store}`)")
    if not mo.readonly and os.path.isfile(store) and os.statvfs(store).f_flag & os.ST_RDONLY:
        raise UserError(f"{store} is on a read-only filesystem: mount it read-only with `-o ro`")
    serve.recover_stale_mount(mountpoint)  # ENOTCONN: its daemon is gone; lazily unmounted, with a warning
    daemon.check_mountpoint(mountpoint)
    creds = credentials.gather(mo.passphrase_file, mo.keyfile, mo.recovery_key_file, tpm_tcti=mo.tpm_tcti,
                               tpm_pin_file=mo.tpm_pin_file, use_tpm=mo.use_tpm, how=credentials.MOUNT_KEY_OPTIONS)
    if mo.log_file is None and not foreground:
        mo.log_file = _store_log_file(store)
    if not mo.readonly and os.path.isfile(store):
        _warn_if_unclean(store)
    return daemon.mount(store, mountpoint, mo, creds, foreground=foreground, verbose=ctx.obj["verbose"])


@cli.command()
@click.argument("mountpoint", type=click.Path())
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the daemon to exit.")
def umount(mountpoint: str, timeout: float) -> int:
    """Unmount and wait until the daemon has flushed the store and exited."""
    from . import daemon, serve

    if serve.stop_running(mountpoint, timeout):  # a `clawfs serve` mount: its daemon stops it all, in order
        return 0
    daemon.umount(mountpoint, timeout=timeout)
    return 0


# -- fsck / info ------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("store", type=click.Path())
@with_key_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fsck(store: str, creds: keys.Credentials, as_json: bool) -> int:
    """Verify every block, name and link of STORE.  Exit 0 when clean, 4 when problems were found."""
    st = Store.open(store, creds)
    try:
        report = _run_fsck(st, show_progress=not as_json and sys.stderr.isatty())
    finally:
        st.close()
    if as_json:
        _emit_json(report.to_dict())
    else:
        for p in report.problems:
            click.echo(f"{store}: {p.kind}: {p.message}")
        for note in report.notes:
            click.echo(f"{store}: note: {note}", err=True)
        if report.clean:
            c = report.counts
            click.echo(f"{store}: clean, {c['inodes']} inodes, {c['entries']} entries, {c['blocks']} blocks",
                       err=True)
    return 0 if report.clean else 4


def _run_fsck(st: Store, *, show_progress: bool) -> fsck_mod.Report:
    if not show_progress:
        return fsck_mod.check(st)
    from .ui import Progress

    total = st.counts()["blocks"]
    with Progress(transient=True) as bar:
        bar.start("verifying blocks", total)
        return fsck_mod.check(st, progress=lambda n: bar.advance("verifying blocks", n))


@cli.command()
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(store: str, as_json: bool) -> int:
    """What STORE tells without a key: format, block size, key slots, counts."""
    i = _info(store)
    if as_json:
        _emit_json(i.__dict__)
        return 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_ns / 1e9))
    lines = [
        f"store:          {i.path}", f"store id:       {i.store_id}", f"format version: {i.format_version}",
        f"block size:     {i.block_size}", f"created:        {created}",
        f"state:          {_state(store, i.mounted_flag)}"
        + (f" ({i.unclean_shutdowns} unclean shutdowns so far)" if i.unclean_shutdowns else ""),
        f"inodes:         {i.counts['inodes']}", f"entries:        {i.counts['entries']}",
        f"blocks:         {i.counts['blocks']} ({i.counts['stored_bytes']} bytes of ciphertext)",
        f"rollback check: {'TPM counter' if i.rollback_protection else 'off'}",
        f"mount log:      {_store_log_file(store)} (unless mounted with -o log_file=)",
        "key slots:",
    ] + [f"  {s['id']}: {s['kind']} ({_slot_detail(s)})" for s in i.slots]
    click.echo("\n".join(lines))
    if i.mounted_flag and not _in_use(store):
        click.echo(f"clawfs: warning: {store} was not cleanly unmounted; run `clawfs fsck {store}` to check it",
                   err=True)
    return 0


def _in_use(store: str) -> bool:
    try:
        StoreLock(store).release()
        return False
    except (StoreBusy, OSError):  # held by another process, or a file we cannot open
        return True


def _state(store: str, mounted_flag: bool) -> str:
    if not mounted_flag:
        return "clean"
    return "mounted (in use)" if _in_use(store) else "NOT cleanly unmounted (run `clawfs fsck`)"


# -- key slots --------------------------------------------------------------------------------------------------
@cli.group()
def key() -> None:
    """List, add and remove key slots (no data is re-encrypted)."""


@key.command("list")
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def key_list(store: str, as_json: bool) -> int:
    """List the key slots of STORE (needs no key)."""
    slots = _info(store).slots
    if as_json:
        _emit_json(slots)
    else:
        for s in slots:
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["created_ns"] / 1e9))
            click.echo(f"{s['id']}\t{s['kind']}\t{_slot_detail(s)}\t{created}")
    return 0


def _slot_detail(slot: dict[str, Any]) -> str:
    if slot["kind"] != tpm_slots.KIND:
        return str(slot["kdf"])
    pcrs = ",".join(map(str, slot["pcrs"])) or "none"
    return f"pcrs={pcrs}" + (",pin" if slot["pin"] else "")


@key.command("add-tpm")
@click.argument("store", type=click.Path())
@functools.partial(with_key_options, for_new_tpm_slot=True)
@with_tpm_seal_options
def key_add_tpm(store: str, creds: keys.Credentials, tpm_pcrs: str, tpm_pin: bool, new_tpm_pin_file: str | None,
                tpm_rollback_protection: bool) -> int:
    """Seal STORE's key to this machine's TPM (again, e.g. after a firmware update changed PCR 7)."""
    spec = _tpm_spec(creds.tpm_tcti, tpm_pcrs, tpm_pin, new_tpm_pin_file, tpm_rollback_protection)
    st = Store.open(store, creds, lock=False)
    try:
        slot_id = st.add_tpm_slot(spec)
        st.sync()
    finally:
        st.close()
    click.echo(f"clawfs: added tpm2 slot {slot_id} (pcrs {','.join(map(str, spec.pcrs)) or 'none'})", err=True)
    return 0


@key.command("add")
@click.argument("store", type=click.Path())
@click.argument("kind", type=click.Choice(keys.KINDS))
@with_key_options
@click.option("--new-passphrase-file", type=click.Path(), help="The new slot's passphrase.")
@click.option("--new-keyfile", type=click.Path(),
              help="The new slot's keyfile; created with 32 random bytes if it does not exist.")
@click.option("--out", type=click.Path(), help="Where to write a new recovery key (else stdout).")
@click.option("--kdf", type=click.Choice(["argon2id", "scrypt"]), default="argon2id", show_default=True)
def key_add(store: str, kind: str, creds: keys.Credentials, new_passphrase_file: str | None,
            new_keyfile: str | None, out: str | None, kdf: str) -> int:
    """Add a KIND slot to STORE, unlocking it with an existing key."""
    recovery_text = None
    if kind == "passphrase":
        secret = (credentials.read_passphrase_file(new_passphrase_file) if new_passphrase_file
                  else credentials.prompt_passphrase(confirm=True, how="--new-passphrase-file FILE (the new "
                                                     "slot's passphrase)"))
    elif kind == "keyfile":
        if not new_keyfile:
            raise UserError("adding a keyfile slot needs --new-keyfile FILE (made with 32 random bytes if it "
                            "does not exist)")
        secret = _keyfile(new_keyfile)
    else:
        if out and os.path.exists(out):
            raise UserError(f"{out} exists; refusing to overwrite a recovery key")
        secret, recovery_text = keys.new_recovery_key()
    st = Store.open(store, creds, lock=False)
    try:
        slot_id = st.add_key_slot(kind, secret, kdf)
        st.sync()
    finally:
        st.close()
    if recovery_text:
        if out:
            _write_secret(out, (recovery_text + "\n").encode())
        else:
            click.echo(recovery_text)
    click.echo(f"clawfs: added {kind} slot {slot_id}", err=True)
    return 0


@key.command("remove")
@click.argument("store", type=click.Path())
@click.argument("slot_id", type=int)
@with_key_options
def key_remove(store: str, slot_id: int, creds: keys.Credentials) -> int:
    """Remove slot SLOT_ID (see `clawfs key list`), unlocking STORE with a key first."""
    st = Store.open(store, creds, lock=False)
    try:
        slots = st.key_slots()
        if slot_id not in {s.id for s in slots}:
            raise UserError(f"{store} has no key slot {slot_id} (see `clawfs key list {store}`)")
        if len(slots) == 1:
            raise UserError("refusing to remove the last key slot: the store could never be opened again")
        st.remove_key_slot(slot_id)
        st.sync()
    finally:
        st.close()
    click.echo(f"clawfs: removed key slot {slot_id}", err=True)
    return 0


# -- semantic search --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("query", required=False)
@click.option("--similar", "like", metavar="PATH", help="Instead of a query: the files most like this one.")
@click.option("--mount", "mountpoint", type=click.Path(), help="Ask the daemon serving this mount.")
@click.option("--store", type=click.Path(), help="Open this (unmounted) store instead.")
@with_key_options
@click.option("-k", "k", default=10, show_default=True, help="How many files to return.")
@click.option("--path", "prefix", help="Only files under this path (relative to the mount root).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search(query: str | None, like: str | None, mountpoint: str | None, store: str | None,
           creds: keys.Credentials, k: int, prefix: str | None, as_json: bool) -> int:
    """Find files by meaning (and words): hybrid vector + BM25 search, best first.  With --similar PATH
    instead of QUERY: the files closest in meaning to that indexed file (PATH relative to the mount root)."""
    from . import searching  # here: the index engine's imports (numpy) cost every command 0.25 s

    if bool(mountpoint) == bool(store):
        raise UserError("give exactly one of --mount MOUNTPOINT or --store STORE")
    if (query is None) == (like is None):
        raise UserError("give exactly one of QUERY or --similar PATH")
    if k < 1:
        raise UserError("-k must be at least 1")
    if like is not None:
        result = (searching.similar_via_mount(mountpoint, like, k, prefix) if mountpoint
                  else searching.similar_via_store(store or "", creds, like, k, prefix))
    else:
        assert query is not None
        result = (searching.via_mount(mountpoint, query, k, prefix) if mountpoint
                  else searching.via_store(store or "", creds, query, k, prefix))
    if as_json:
        _emit_json(result)
        return 0
    if result["truncated"]:
        cut = (f"the model's {result['max_tokens']} tokens" if result["max_tokens"] is not None
               else f"its first {searching.NAME_MAX} bytes (the longest name a mount passes; search the unmounted "
                    "store with --store for the whole query)")
        click.echo(f"clawfs: note: the query was cut to {cut}", err=True)
    if result.get("pending"):
        click.echo(f"clawfs: note: {result['pending']:,} files are still waiting to be indexed and may be missing "
                   "below" + (f" (progress: `clawfs status {mountpoint}`)" if mountpoint else ""), err=True)
    shown = [(hit, _shown_path(hit["path"])) for hit in result["hits"]]
    if odd := sum(1 for hit, path in shown if path != hit["path"]):
        click.echo(f"clawfs: note: {odd} path(s) below are not valid UTF-8 and are shown in the shell's $'...' "
                   "quoting (paste them as they are; --json gives them surrogate-escaped)", err=True)
    for hit, path in shown:
        click.echo(f"{hit['rank']:>3}  {hit['score']:.4f}  {path}\n       {hit['snippet']}")
    if not result["hits"]:
        click.echo("clawfs: no matches", err=True)
        return 1
    return 0


def _shown_path(path: str) -> str:
    """A result path for the terminal: as is when it is valid UTF-8 (no surrogate escapes), else as bash's
    $'...' quoting writes it, each byte that is not printable ASCII as \\ooo (GNU ls's shell-escape style)."""
    raw = path.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
        return path
    except UnicodeDecodeError:
        pass
    body = "".join(chr(b) if 32 <= b < 127 and b not in b"'\\" else f"\\{b:03o}" for b in raw)
    return f"$'{body}'"


@cli.command()
@click.argument("store", type=click.Path())
@click.option("--embedder", default=None,
              help="all-MiniLM-L6-v2 (default), all-MiniLM-L6-v2-int8 (ONNX Runtime, int8) or hashing-384 (no model).")
@with_key_options
def reindex(store: str, embedder: str | None, creds: keys.Credentials) -> int:
    """Rebuild STORE's index from its files (with another embedder if given)."""
    from . import searching

    st = Store.open(store, creds)
    try:
        files = searching.reindex(st, embedder, show_progress=sys.stderr.isatty())
    finally:
        st.close()
    click.echo(f"clawfs: indexed {files} files", err=True)
    return 0


@cli.command()
@click.argument("source_uri", metavar="postgresql://USER@HOST:PORT/DB")
@click.option("--to", "store", required=True, type=click.Path(), help="The ClawFS store to migrate into.")
@with_key_options
@click.option("--user", help="Migrate only this IronClaw user, into the root of the home (default: every user; "
                             "'default' at the root, others under users/<id>/).")
@click.option("--agent", help="This agent's documents (and the shared ones) at the root of the home.")
@click.option("--secrets-master-key-file", type=click.Path(),
              help="IronClaw's SECRETS_MASTER_KEY (the key alone, or its .env line); without it only secret "
                   "names are migrated.")
@click.option("--dry-run", is_flag=True, help="Print the plan and counts; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress per table on stderr (default: on a terminal).")
def migrate(source_uri: str, store: str, creds: keys.Credentials, user: str | None, agent: str | None,
            secrets_master_key_file: str | None, dry_run: bool, as_json: bool, progress: bool | None) -> int:
    """Move an IronClaw installation from PostgreSQL into a ClawFS store.

    Reads one read-only snapshot of the database; resumable (rerun the same command after an interruption) and
    idempotent.  Exit codes: 0 migrated and verified, 3 verified but some rows were skipped (listed), 1 an
    error or a verification mismatch, 130 interrupted.
    """
    from migrations.ironclaw import run as migrate_run

    from . import migrating

    if not dry_run and not os.path.exists(store):
        raise UserError(f"{store} does not exist; create it first with `clawfs mkfs {store}`")
    bar = migrating.table_progress(sys.stderr.isatty() if progress is None else progress)
    opts = migrate_run.Options(source_uri, store, creds, user=user, agent=agent,
                               master_key_file=secrets_master_key_file, dry_run=dry_run)
    try:
        report = migrate_run.migrate(opts, bar)
    finally:
        bar.close()
    if as_json:
        _emit_json(report)
    else:
        click.echo(migrating.summary(report))
    return migrating.exit_code(report)


def main(argv: list[str] | None = None) -> None:
    run_command(cli, argv, "clawfs")


if __name__ == "__main__":
    main()
