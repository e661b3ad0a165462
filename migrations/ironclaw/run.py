"""`clawfs migrate`: checks, phases, checkpoints, verification and the report.

Order of work, and why:
1. Connect (read-only snapshot), detect the schema, and check the secrets master key against every secret
   *before the store is opened*: a wrong key stops the run before anything is written.
2. Open the store (its lock refuses a store that is mounted elsewhere) and run the phases in order, writing
   through the VFS with group commit.  After each phase, and every CHECKPOINT documents inside the documents
   phase, the progress (phases done, the last document id, the tallies) is committed durably *together with*
   the files it covers, as a store setting.  An interrupted run (Ctrl-C, kill, power loss) resumes from there;
   a finished run's rerun redoes everything and finds it unchanged, so a rerun always converges.
3. Verify against the same snapshot: every document (and version) read again from PostgreSQL and its sha256
   compared with the file's; every table's `count(*)` compared with the rows accounted for.
4. Save the report in the home (`settings/migration/ironclaw-report.json`) and return it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from clawfs.errors import FsError, NoSpace, UserError
from clawfs.index.embedder import DEFAULT_EMBEDDER
from clawfs.keys import Credentials
from clawfs.store import Store
from clawfs.vfs import VFS

from ..writer import HomeWriter
from . import convert, layout, secrets
from .convert import Run, Tally
from .layout import BadPath, Scopes, json_doc
from .source import Source, SourceError

CHECKPOINT = 1000
REPORT_PATH = "settings/migration/ironclaw-report.json"
NOT_MIGRATED = {  # tables read by other means, or on purpose not copied; said in the report
    "memory_chunks": "chunks and embeddings are rebuilt by the ClawFS indexer from the migrated files",
    "refinery_schema_history": "IronClaw's migration bookkeeping",
    "chunks_pending_embedding": "a view", "memory_documents_summary": "a view", "active_leak_patterns": "a view",
    "recent_leak_events": "a view", "wasm_tools_with_capabilities": "a view",
}


@dataclass(frozen=True)
class Phase:
    """One step of a migration: the tables it reads and the converter that writes them into the store (None:
    documents, which checkpoints inside itself, `_documents`)."""

    name: str
    tables: tuple[str, ...]
    convert: Callable[[Run], None] | None


PHASES = [
    Phase("documents", ("memory_documents",), None),
    Phase("versions", ("memory_document_versions",), convert.versions),
    Phase("conversations", ("conversations", "conversation_messages"), convert.conversations),
    Phase("jobs", ("agent_jobs", *(t for t, _, _ in convert.JOB_CHILDREN)), convert.jobs),
    Phase("routines", ("routines", "routine_runs"), convert.routines),
    Phase("settings", ("settings",), convert.settings),
    Phase("secrets", ("secrets",), convert.secrets_rows),
    Phase("tools", ("wasm_tools", "tool_capabilities"), convert.tools),
    Phase("channels", ("wasm_channels",), convert.channels),
    Phase("dynamic_tools", ("dynamic_tools",), convert.dynamic_tools),
    Phase("reborn", ("root_filesystem_entries",), convert.reborn_entries),
    # and llm_calls without a job (counted with jobs)
    Phase("logs", tuple(t for t, _, _ in convert.LOG_TABLES), convert.log_tables),
]


class MigrateError(UserError):
    """The migration cannot run or did not verify; the message says what to do."""


class Progress(Protocol):
    def start(self, table: str, total: int) -> None: ...
    def advance(self, table: str, n: int) -> None: ...
    def close(self) -> None: ...


@dataclass
class Options:
    uri: str
    store: str
    creds: Credentials
    user: str | None = None
    agent: str | None = None
    master_key_file: str | None = None
    dry_run: bool = False


def migrate(opts: Options, progress: Progress) -> dict[str, Any]:
    """Run (or with dry_run, plan) a migration; returns the report.  Raises MigrateError on bad input."""
    try:
        source = Source(opts.uri)
    except SourceError as e:
        raise MigrateError(str(e)) from None
    try:
        master_key = _master_key(opts, source)
        if opts.dry_run:
            return plan(opts, source, master_key is not None)
        return _run(opts, source, master_key, progress)
    except SourceError as e:
        raise MigrateError(str(e)) from None
    finally:
        source.close()


def _master_key(opts: Options, source: Source) -> str | None:
    """The IronClaw master key, checked against every secret before anything is written."""
    if opts.master_key_file is None:
        return None
    try:
        key = secrets.read_master_key(opts.master_key_file)
    except (OSError, ValueError) as e:
        raise MigrateError(f"cannot read the secrets master key: {e}") from None
    good = bad = 0
    for row in source.rows("secrets", ("id",), skip=("name",)):
        try:
            secrets.decrypt(key, row["key_salt"], row["encrypted_value"])
            good += 1
        except secrets.WrongMasterKey:
            bad += 1
    if bad and not good:
        raise MigrateError(f"the secrets master key in {opts.master_key_file} decrypts none of the {bad} secrets: "
                           "it is not this installation's key (IronClaw reads it from SECRETS_MASTER_KEY, "
                           "~/.ironclaw/.env, or the OS keychain: service 'ironclaw', account 'master_key'); "
                           "nothing was written")
    return key


def _state_key(opts: Options, source: Source) -> str:
    ident = f"{source.uri}|{source.database}|{opts.user}|{opts.agent}"
    return "migrate.ironclaw." + hashlib.sha256(ident.encode()).hexdigest()[:16]


def _run(opts: Options, source: Source, master_key: str | None, progress: Progress) -> dict[str, Any]:
    started = time.monotonic()
    store = Store.open(opts.store, opts.creds)
    try:
        store.batch_commits()
        writer = HomeWriter(VFS(store))
        run = Run(source, writer, Scopes(opts.user or "default", opts.agent), opts.user, master_key,
                  tick=progress.advance)
        key = _state_key(opts, source)
        state: dict[str, Any] = store.setting(key) or {"done": [], "after": None, "tallies": {}, "skipped": []}
        resumed = bool(state["done"] or state["after"])
        _restore(run, state)
        for table in _tables_to_read(source):
            progress.start(table, source.count(table))
        for phase in PHASES:
            if phase.name in state["done"]:
                for t in phase.tables:
                    progress.advance(t, run.tally(t).rows)
                continue
            _phase(run, phase, state, key)
        progress.close()
        report = _report(opts, source, run, master_key, resumed, started)
        report["verification"] = verify(run, source)
        report["ok"] = not report["verification"]["problems"]
        report["report_path"] = REPORT_PATH
        writer.put(REPORT_PATH, json_doc(report))
        with store.transaction():
            store.set_setting(key, None)  # finished: a rerun starts over (and finds everything unchanged)
        store.sync()
        return report
    except KeyboardInterrupt:
        store.sync()
        raise MigrateError("interrupted; the work up to the last checkpoint is kept: run the same command "
                           "again to resume", exit_code=130) from None
    except NoSpace:
        raise MigrateError(f"the disk holding {opts.store} is full; the work up to the last checkpoint is kept: "
                           "free some space and run the same command again to resume") from None
    except FsError as e:
        raise MigrateError(f"writing into {opts.store} failed: {e}; run `clawfs fsck {opts.store}`, then the "
                           "same command again to resume") from None
    finally:
        store.close()


def _tables_to_read(source: Source) -> list[str]:
    return list(dict.fromkeys(t for phase in PHASES for t in phase.tables if source.schema.has(t)))


def _restore(run: Run, state: dict[str, Any]) -> None:
    for table, t in state["tallies"].items():
        run.tallies[table] = Tally(**t)
    run.skipped.extend(state["skipped"])


def _phase(run: Run, phase: Phase, state: dict[str, Any], key: str) -> None:
    # Tallies restored from a checkpoint never hold part of an unfinished phase (checkpoints fall between
    # phases, or inside documents with its resume key), so a phase that was cut short simply runs again.
    if phase.convert is None:
        _documents(run, state, key)
    else:
        phase.convert(run)
    state["done"].append(phase.name)
    state["after"] = None
    _checkpoint(run, state, key)


def _documents(run: Run, state: dict[str, Any], key: str) -> None:
    """The documents phase, checkpointed every CHECKPOINT rows (it is the big one)."""
    after = {"id": uuid.UUID(state["after"])} if state["after"] else None
    done = 0

    def written(row_id: Any) -> None:
        nonlocal done
        done += 1
        if done % CHECKPOINT == 0:
            state["after"] = str(row_id)
            _checkpoint(run, state, key)

    convert.documents(run, after, written)


def _checkpoint(run: Run, state: dict[str, Any], key: str) -> None:
    state["tallies"] = {t: asdict(v) for t, v in run.tallies.items()}
    state["skipped"] = run.skipped
    store = run.writer.store
    with store.transaction():
        store.set_setting(key, state)
    store.sync()


# -- verification -----------------------------------------------------------------------------------------------
def verify(run: Run, source: Source) -> dict[str, Any]:
    """Counts per table against the snapshot, and every document's sha256 against its file."""
    problems: list[str] = []
    counts = {}
    filtered = run.only_user is not None or run.scopes.agent is not None
    for table in _tables_to_read(source):
        t = run.tally(table)
        total = source.count(table)
        if filtered:
            t.not_selected += max(0, total - t.rows)
        accounted = t.migrated + t.skipped + t.not_selected
        counts[table] = {"source": total, **asdict(t)}
        if accounted != total or (not filtered and t.rows != total):
            problems.append(f"{table}: {total} rows in the database, {accounted} accounted for "
                            f"({t.migrated} migrated, {t.skipped} skipped, {t.not_selected} not selected)")
    checked, mismatched = _verify_documents(run, source, problems)
    return {"counts": counts, "documents_checked": checked, "documents_mismatched": mismatched,
            "problems": problems}


def _verify_documents(run: Run, source: Source, problems: list[str]) -> tuple[int, int]:
    where, args = convert.documents_where(run)
    checked = mismatched = 0
    for row in source.rows("memory_documents", ("id",), skip=("metadata",), where=where, args=args):
        try:
            path = convert.document_path(run, row)
        except BadPath:
            continue  # skipped on purpose, and listed
        checked += 1
        want = hashlib.sha256(row["content"].encode()).hexdigest()
        got = run.writer.file_digest(path)
        if got != want:
            mismatched += 1
            if mismatched <= 20:
                problems.append(f"document {row['id']} ({path}): " +
                                ("missing from the store" if got is None else "contents differ (sha256)"))
    return checked, mismatched


# -- plan and report --------------------------------------------------------------------------------------------
def _source_info(source: Source) -> dict[str, Any]:
    return {"uri": source.uri, "database": source.database, "schema_version": source.schema.version,
            "detected_by": source.schema.detected_by}


def _embeddings(source: Source, store: Store | None) -> dict[str, Any]:
    dims = source.embedding_dims()
    name = DEFAULT_EMBEDDER
    if store is not None:
        name = store.index.meta("embedder") or DEFAULT_EMBEDDER
    return {"source_dimension": dims, "store_embedder": name, "action": "re-embed",
            "why": ("IronClaw does not record its embedding model in the database, and its 800-word chunks "
                    "exceed all-MiniLM-L6-v2's 256-token window, so its vectors cannot stand for ClawFS chunks; "
                    "the migrated files are queued for the ClawFS indexer (done at the next mount)")}


def _unknown_tables(source: Source) -> dict[str, str]:
    known = set(_tables_to_read(source)) | set(NOT_MIGRATED)
    out = {t: why for t, why in NOT_MIGRATED.items() if source.schema.has(t)}
    out.update({t: "unknown to this clawfs; not migrated" for t in source.schema.columns if t not in known})
    return out


def _report(opts: Options, source: Source, run: Run, master_key: str | None, resumed: bool,
            started: float) -> dict[str, Any]:
    elapsed = time.monotonic() - started
    docs = run.tally("memory_documents").migrated
    return {
        "source": _source_info(source), "store": opts.store, "user": opts.user or "default", "agent": opts.agent,
        "resumed": resumed, "elapsed_s": round(elapsed, 3),
        "documents_per_s": round(docs / elapsed, 1) if elapsed > 0 else None,
        "files": run.writer.counts.as_dict(), "skipped": run.skipped, "warnings": run.warnings,
        "secrets": {"values": "migrated" if master_key else "names only (no --secrets-master-key-file): each "
                    "secret's sealed value is kept in its xattr user.ironclaw.sealed"},
        "embeddings": _embeddings(source, run.writer.store), "not_migrated": _unknown_tables(source),
    }


def plan(opts: Options, source: Source, have_key: bool) -> dict[str, Any]:
    """What a run would do: counts per table, documents refused and why, where things land.  Writes nothing."""
    scopes = Scopes(opts.user or "default", opts.agent)
    bad: list[dict[str, str]] = []
    for row in source.rows("memory_documents", ("id",), skip=("content", "metadata")):
        try:
            scopes.document(row["user_id"], row.get("agent_id"))
            layout.check_path(row["path"])
        except BadPath as e:
            bad.append({"id": str(row["id"]), "reason": str(e)})
    counts = {t: source.count(t) for t in _tables_to_read(source)}
    return {"dry_run": True, "source": _source_info(source), "store": opts.store, "counts": counts,
            "documents_refused": bad,
            "secrets": "values" if have_key else "names only (give --secrets-master-key-file for values)",
            "embeddings": _embeddings(source, None), "not_migrated": _unknown_tables(source)}
