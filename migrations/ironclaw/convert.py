"""IronClaw tables -> files of the agent home.  One function per group of tables; docs/MIGRATION.md is the map.

Every row read is accounted for exactly once in its table's tally: migrated (it landed in a file), skipped (with
a reason in the report: a bad path, a tampered tool binary, a child row whose parent is gone) or not selected
(`--user`/`--agent` left it out).  The verification compares those sums with `count(*)` of each table.

Parents and their children (jobs and their actions, conversations and their messages, routines and their runs)
are streamed side by side, both ordered by the parent's UUID, and merged: memory stays flat however many rows
there are.  Only UUID keys are merged on: PostgreSQL and Python order UUIDs alike, which is not true of text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import blake3
import tomli_w

from clawfs.vfs import XATTR_SIZE_MAX

from ..writer import PATH_ERRORS, HomeWriter, conflict_reason
from . import layout, secrets
from .layout import BadPath, Scopes, json_doc, json_line, ns
from .source import Source

MAX_LISTED = 200  # skipped rows listed one by one in the report; the rest are counted


@dataclass
class Tally:
    rows: int = 0
    migrated: int = 0
    skipped: int = 0
    not_selected: int = 0


@dataclass
class Run:
    """What the converters share: the source, the writer, the scopes and the accounting."""

    source: Source
    writer: HomeWriter
    scopes: Scopes
    only_user: str | None
    master_key: str | None
    tick: Callable[[str, int], None] = lambda table, n: None
    tallies: dict[str, Tally] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def tally(self, table: str) -> Tally:
        return self.tallies.setdefault(table, Tally())

    def read(self, table: str, n: int = 1) -> None:
        self.tally(table).rows += n
        self.tick(table, n)

    def landed(self, table: str, n: int = 1) -> None:
        self.tally(table).migrated += n

    def skip(self, table: str, row_id: object, reason: str, n: int = 1) -> None:
        self.tally(table).skipped += n
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append({"table": table, "id": str(row_id), "reason": reason})

    def user_where(self, table: str) -> tuple[str, tuple[Any, ...]]:
        """A WHERE clause keeping `--user`'s rows of a table that names its user (all rows otherwise)."""
        if self.only_user is None:
            return "", ()
        for col in ("user_id", "owner_id"):
            if self.source.schema.has(table, col):
                return f"{col} = %s", (self.only_user,)
        return "", ()

    def rows(self, table: str, order: tuple[str, ...], *, where: str = "", args: tuple[Any, ...] = (),
             **kw: Any) -> Iterator[dict[str, Any]]:
        """Rows of `table` under `where` and `--user`'s filter, each counted as read."""
        user, uargs = self.user_where(table)
        clause = " AND ".join(f"({c})" for c in (where, user) if c)
        for row in self.source.rows(table, order, where=clause, args=(*args, *uargs), **kw):
            self.read(table)
            yield row


def _xattrs(**values: object) -> dict[str, bytes]:
    """`user.ironclaw.<name>` xattrs for the values that are set (JSON for structures)."""
    out = {}
    for name, value in values.items():
        if value is None or value == {} or value == []:
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=layout.json_default)
        out[f"user.ironclaw.{name}"] = text.encode()
    return out


def _put(run: Run, table: str, row_id: object, path: str, data: bytes, n: int = 1, **kw: Any) -> bool:
    for name, value in list(kw.get("xattrs", {}).items()):
        if len(value) > XATTR_SIZE_MAX:  # Linux's limit for one xattr value: keep the file, say what was left out
            del kw["xattrs"][name]
            run.warnings.append(f"{table} {row_id}: {name} ({len(value)} bytes) is over the {XATTR_SIZE_MAX}-byte "
                                "xattr limit and was not kept")
    try:
        run.writer.put(path, data, **kw)
    except PATH_ERRORS as e:  # a path conflict loses this row only; the report lists it
        run.skip(table, row_id, conflict_reason(e), n)
        return False
    run.landed(table, n)
    return True


# -- memory -----------------------------------------------------------------------------------------------------
def document_path(run: Run, row: dict[str, Any]) -> str:
    return run.scopes.document(row["user_id"], row.get("agent_id")) + layout.check_path(row["path"])


def documents_where(run: Run, alias: str = "memory_documents") -> tuple[str, tuple[Any, ...]]:
    """The documents this run migrates (`alias` names memory_documents in the query): with `--user`, that
    user's; with `--agent`, that agent's and the shared ones it does not shadow at the same path."""
    conds: list[str] = []
    args: list[Any] = []
    if run.only_user is not None:
        conds.append(f"{alias}.user_id = %s")
        args.append(run.only_user)
    if run.scopes.agent is not None:
        conds.append(f"{alias}.agent_id = %s OR ({alias}.agent_id IS NULL AND NOT EXISTS (SELECT 1 FROM "
                     f"memory_documents d2 WHERE d2.user_id = {alias}.user_id AND d2.agent_id = %s AND "
                     f"d2.path = {alias}.path))")
        args += [run.scopes.agent, run.scopes.agent]
    return " AND ".join(f"({c})" for c in conds), tuple(args)


def documents(run: Run, after: dict[str, Any] | None, done: Callable[[Any], None]) -> None:
    """Documents in id order from after `after` (resume); `done(id)` after each one (checkpoints)."""
    where, args = documents_where(run)
    for row in run.source.rows("memory_documents", ("id",), after=after, where=where, args=args):
        run.read("memory_documents")
        try:
            path = document_path(run, row)
        except BadPath as e:
            run.skip("memory_documents", row["id"], str(e))
        else:
            _put(run, "memory_documents", row["id"], path, row["content"].encode(),
                 mtime_ns=ns(row["updated_at"]), xattrs=_xattrs(id=str(row["id"]), metadata=row.get("metadata"),
                                                                created_at=layout.json_default(row["created_at"])))
        done(row["id"])


def versions(run: Run) -> None:
    if not run.source.schema.has("memory_document_versions"):
        return
    where, args = documents_where(run, "d")
    query = ("SELECT v.id, v.version, v.content, v.content_hash, v.created_at, v.changed_by, "
             "d.user_id, d.agent_id, d.path FROM memory_document_versions v JOIN memory_documents d "
             f"ON d.id = v.document_id {'WHERE ' + where if where else ''} ORDER BY v.id")
    for row in run.source.query("versions", query, args):
        run.read("memory_document_versions")
        try:
            path = document_path(run, row)
        except BadPath as e:
            run.skip("memory_document_versions", row["id"], str(e))
            continue
        scope = run.scopes.document(row["user_id"], row.get("agent_id"))
        rel = path[len(scope):]
        suffix = rel.rpartition(".")[2] if "." in rel.rpartition("/")[2] else ""
        target = f"{scope}.versions/{rel}/{row['version']}" + (f".{suffix}" if suffix else "")
        _put(run, "memory_document_versions", row["id"], target, row["content"].encode(),
             mtime_ns=ns(row["created_at"]),
             xattrs=_xattrs(content_hash=row["content_hash"], changed_by=row.get("changed_by")))


# -- merged parent/children streams -----------------------------------------------------------------------------
class Children:
    """Rows of a child table ordered by `key`, taken group by group as the parent stream advances."""

    def __init__(self, run: Run, table: str, key: str, rows: Iterable[dict[str, Any]]) -> None:
        self.run, self.table, self.key = run, table, key
        self._it = iter(rows)
        self._head = next(self._it, None)

    def take(self, parent_key: Any) -> list[dict[str, Any]]:
        """The children of `parent_key`; children of parents that never came (orphans) are skipped."""
        while self._head is not None and self._head[self.key] < parent_key:
            self._orphan(self._head)
            self._head = next(self._it, None)
        out = []
        while self._head is not None and self._head[self.key] == parent_key:
            out.append(self._head)
            self._head = next(self._it, None)
        return out

    def finish(self) -> None:
        while self._head is not None:
            self._orphan(self._head)
            self._head = next(self._it, None)

    def _orphan(self, row: dict[str, Any]) -> None:
        if self.run.only_user is not None:
            self.run.tally(self.table).not_selected += 1  # its parent belongs to a user not migrated
        else:
            self.run.skip(self.table, row.get("id"), f"its {self.key} {row[self.key]} does not exist")


def _jsonl(rows: list[dict[str, Any]], drop: tuple[str, ...] = ()) -> bytes:
    return b"".join(json_line(layout.record(r, drop=drop)) for r in rows)


def conversations(run: Run) -> None:
    msgs = Children(run, "conversation_messages", "conversation_id",
                    _all(run, "conversation_messages", ("conversation_id", "created_at", "id")))
    for conv in run.rows("conversations", ("id",)):
        lines = msgs.take(conv["id"])
        try:
            path = (f"{run.scopes.user(conv['user_id'])}conversations/"
                    f"{layout.check_name(conv['channel'], 'channel')}/{conv['id']}.jsonl")
        except BadPath as e:
            run.skip("conversations", conv["id"], str(e))
            run.skip("conversation_messages", conv["id"], f"conversation skipped: {e}", len(lines))
            continue
        data = b"".join(json_line(_message(m)) for m in lines)
        meta = layout.record(conv, drop=("id", "channel", "user_id"))
        if _put(run, "conversations", conv["id"], path, data, mtime_ns=ns(conv["last_activity"]),
                xattrs=_xattrs(id=str(conv["id"]), conversation=meta)):
            run.landed("conversation_messages", len(lines))
        else:
            run.skip("conversation_messages", conv["id"], "its conversation could not be written", len(lines))
    msgs.finish()


def _message(row: dict[str, Any]) -> dict[str, Any]:
    out = layout.record(row, drop=("conversation_id",))
    if row["role"] == "tool_calls":  # IronClaw keeps {calls, narrative, outcome} as a JSON string
        with contextlib.suppress(ValueError):
            out["content"] = json.loads(row["content"])
    return out


def _all(run: Run, table: str, order: tuple[str, ...], where: str = "") -> Iterator[dict[str, Any]]:
    """Every row of a child table (not filtered by user: the merge decides), each counted as read."""
    for row in run.source.rows(table, order, where=where):
        run.read(table)
        yield row


JOB_CHILDREN = [  # (table, file, order after job_id)
    ("job_actions", "actions.jsonl", ("sequence_num", "id")),
    ("job_events", "events.jsonl", ("id",)),
    ("claude_code_events", "events.jsonl", ("id",)),  # job_events' name before V7
    ("llm_calls", "llm_calls.jsonl", ("created_at", "id")),
    ("estimation_snapshots", "estimations.jsonl", ("created_at", "id")),
]


def jobs(run: Run) -> None:
    kids = [(t, f, Children(run, t, "job_id", _all(run, t, ("job_id", *o), "job_id IS NOT NULL")))
            for t, f, o in JOB_CHILDREN if run.source.schema.has(t)]
    for job in run.rows("agent_jobs", ("id",)):
        groups = [(t, f, c.take(job["id"])) for t, f, c in kids]
        root = f"{run.scopes.user(job.get('user_id'))}jobs/{job['id']}/"
        mtime = ns(job.get("completed_at") or job.get("started_at") or job["created_at"])
        if not _put(run, "agent_jobs", job["id"], root + "job.json", json_doc(job), mtime_ns=mtime):
            for t, _, rows in groups:
                run.skip(t, job["id"], "its job could not be written", len(rows))
            continue
        for t, fname, rows in groups:
            if rows:
                _put(run, t, job["id"], root + fname, _jsonl(rows, drop=("job_id",)), n=len(rows), mtime_ns=mtime)
    for _, _, c in kids:
        c.finish()


def routines(run: Run) -> None:
    runs = Children(run, "routine_runs", "routine_id", _all(run, "routine_runs", ("routine_id", "started_at", "id")))
    for routine in run.rows("routines", ("id",)):
        children = runs.take(routine["id"])
        try:
            base = f"{run.scopes.user(routine['user_id'])}routines/{layout.check_name(routine['name'], 'routine name')}"
        except BadPath as e:
            run.skip("routines", routine["id"], str(e))
            run.skip("routine_runs", routine["id"], f"routine skipped: {e}", len(children))
            continue
        mtime = ns(routine["updated_at"])
        if _put(run, "routines", routine["id"], base + ".toml", _toml(routine), mtime_ns=mtime) and children:
            _put(run, "routine_runs", routine["id"], base + ".runs.jsonl", _jsonl(children, drop=("routine_id",)),
                 n=len(children))
        elif children:
            run.skip("routine_runs", routine["id"], "its routine could not be written", len(children))
    runs.finish()


def _toml(row: dict[str, Any]) -> bytes:
    """A routine as TOML: TOML has no null, so unset fields are left out (their IronClaw defaults apply)."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value if v is not None]
        if isinstance(value, str | int | float | bool) or hasattr(value, "isoformat"):
            return value
        return layout.json_default(value)
    return tomli_w.dumps(clean(dict(row))).encode()


# -- settings, secrets, tools, channels -------------------------------------------------------------------------
def _placed(run: Run, table: str, order: tuple[str, ...], place: Callable[[dict[str, Any]], str],
            key: str = "id", **kw: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, its path) for each row of `table`; a row whose name cannot be a path is skipped with the reason."""
    for row in run.rows(table, order, **kw):
        try:
            yield row, place(row)
        except BadPath as e:
            run.skip(table, row[key], str(e))


def _in_scope(run: Run, row: dict[str, Any], folder: str, column: str, what: str, suffix: str = "") -> str:
    return f"{run.scopes.user(row.get('user_id'))}{folder}/{layout.check_name(row[column], what)}{suffix}"


def settings(run: Run) -> None:
    for row, path in _placed(run, "settings", ("user_id", "key"), key="key",
                             place=lambda r: _in_scope(run, r, "settings", "key", "setting key", ".json")):
        _put(run, "settings", row["key"], path, json_doc(row["value"]), mtime_ns=ns(row["updated_at"]))


def secrets_rows(run: Run) -> None:
    for row, path in _placed(run, "secrets", ("id",),
                             place=lambda r: _in_scope(run, r, "secrets", "name", "secret name")):
        meta = layout.record(row, drop=("encrypted_value", "key_salt", "user_id", "name"))
        if run.master_key is not None:
            try:
                value = secrets.decrypt(run.master_key, row["key_salt"], row["encrypted_value"])
            except secrets.WrongMasterKey:  # the key is right (checked before any write): this row is corrupt
                run.skip("secrets", row["id"], f"secret {row['name']!r} does not decrypt (corrupt); not written")
                continue
            xattrs = _xattrs(secret=meta)
        else:  # names only; the sealed value rides along, so a later run with the key loses nothing
            value = b""
            xattrs = _xattrs(secret=meta, sealed={"key_salt": row["key_salt"], "value": row["encrypted_value"]})
        _put(run, "secrets", row["id"], path, value, mtime_ns=ns(row.get("updated_at")), xattrs=xattrs)


def tools(run: Run) -> None:
    caps = {c["wasm_tool_id"]: c for c in _all(run, "tool_capabilities", ("wasm_tool_id",))}
    for tool, root in _placed(run, "wasm_tools", ("id",), skip=("wasm_binary",),
                              place=lambda r: _in_scope(run, r, "tools", "name", "tool name", "/")):
        cap = caps.pop(tool["id"], None)
        if not _binary(run, "wasm_tools", tool, root + "tool.wasm"):
            if cap is not None:
                run.skip("tool_capabilities", cap["id"], f"its tool {tool['name']} was not written")
            continue
        _put(run, "wasm_tools", tool["id"], root + "tool.json", json_doc(layout.record(tool)),
             mtime_ns=ns(tool["updated_at"]))
        if cap is not None:
            _put(run, "tool_capabilities", cap["id"], root + "capabilities.json", json_doc(capabilities(tool, cap)))
    for cap in caps.values():
        if run.only_user is not None:
            run.tally("tool_capabilities").not_selected += 1  # a tool of a user not migrated
        else:
            run.skip("tool_capabilities", cap["id"], "its wasm tool does not exist")


def _binary(run: Run, table: str, row: dict[str, Any], path: str) -> bool:
    """Write a WASM binary after checking IronClaw's BLAKE3 hash of it; a mismatch is refused, not written."""
    blob = run.source.binary(table, row["id"])
    if blake3.blake3(blob).digest() != bytes(row["binary_hash"]):
        run.skip(table, row["id"], f"{row['name']}: the WASM binary does not match its BLAKE3 hash "
                                   "(tampered or corrupt); not written")
        return False
    try:
        run.writer.put(path, blob, mtime_ns=ns(row["updated_at"]))
    except PATH_ERRORS as e:
        run.skip(table, row["id"], conflict_reason(e))
        return False
    return True


def capabilities(tool: dict[str, Any], cap: dict[str, Any]) -> dict[str, Any]:
    """IronClaw's `<name>.capabilities.json` format (src/tools/wasm/capabilities_schema.rs) from the row."""
    http: dict[str, Any] = {
        "allowlist": cap["http_allowlist"],
        "rate_limit": {"requests_per_minute": cap["requests_per_minute"],
                       "requests_per_hour": cap["requests_per_hour"]},
        "max_request_bytes": cap["max_request_body_bytes"], "max_response_bytes": cap["max_response_body_bytes"],
        "timeout_secs": cap["http_timeout_secs"],
    }
    out: dict[str, Any] = {"version": tool.get("version"), "wit_version": tool.get("wit_version"),
                           "description": tool.get("description"), "capabilities": {"http": http}}
    if cap["allowed_secrets"]:
        out["capabilities"]["secrets"] = {"allowed_names": list(cap["allowed_secrets"])}
    if cap["tool_aliases"]:
        out["capabilities"]["tool_invoke"] = {"aliases": cap["tool_aliases"]}
    if cap["workspace_read_prefixes"]:
        out["capabilities"]["workspace"] = {"allowed_prefixes": list(cap["workspace_read_prefixes"])}
    return {k: v for k, v in out.items() if v is not None}


def channels(run: Run) -> None:
    for ch, root in _placed(run, "wasm_channels", ("id",), skip=("wasm_binary",),
                            place=lambda r: _in_scope(run, r, "channels", "name", "channel name", "/")):
        if not _binary(run, "wasm_channels", ch, root + "channel.wasm"):
            continue
        try:
            caps = json.loads(ch["capabilities_json"])
        except ValueError:
            caps = None
            run.warnings.append(f"channel {ch['name']}: capabilities_json is not JSON; kept as text")
        cap_bytes = json_doc(caps) if caps is not None else ch["capabilities_json"].encode()
        _put(run, "wasm_channels", ch["id"], root + "channel.json",
             json_doc(layout.record(ch, drop=("capabilities_json",))), mtime_ns=ns(ch["updated_at"]))
        run.writer.put(root + "capabilities.json", cap_bytes)
        for box in ("inbox", "outbox"):  # Maildir-style delivery directories (DESIGN: channels/<name>/)
            for sub in ("tmp", "new", "cur"):
                run.writer.dir(f"{root}{box}/{sub}")


def dynamic_tools(run: Run) -> None:
    for row, path in _placed(run, "dynamic_tools", ("id",),
                             place=lambda r: f"tools/{layout.check_name(r['name'], 'tool name')}/dynamic.json"):
        _put(run, "dynamic_tools", row["id"], path, json_doc(row), mtime_ns=ns(row["updated_at"]))


def reborn_entries(run: Run) -> None:
    """Reborn's RootFilesystem entries at their own paths (they are absolute, '/'-rooted)."""
    for row in run.rows("root_filesystem_entries", ("path",)):
        try:
            raw = row["path"]
            if not isinstance(raw, str) or not raw.startswith("/"):
                raise BadPath(f"Reborn path {raw!r} does not start with '/'")
            path = layout.check_path(raw[1:], "Reborn path")
            if row["is_dir"]:
                run.writer.dir(path)
                run.landed("root_filesystem_entries")
                continue
        except BadPath as e:
            run.skip("root_filesystem_entries", row["path"], str(e))
            continue
        except PATH_ERRORS as e:
            run.skip("root_filesystem_entries", row["path"], conflict_reason(e))
            continue
        _put(run, "root_filesystem_entries", row["path"], path, bytes(row["contents"]),
             mtime_ns=ns(row["updated_at"]),
             xattrs=_xattrs(version=str(row["version"]), content_type=row["content_type"], kind=row.get("kind"),
                            indexed=row.get("indexed")))


# -- whole tables as JSON Lines under settings/ -----------------------------------------------------------------
LOG_TABLES = [  # (table, file under settings/, order): no natural home of their own
    ("users", "users.jsonl", ("created_at", "id")),
    ("user_identities", "user_identities.jsonl", ("id",)),
    ("channel_identities", "channel_identities.jsonl", ("id",)),
    ("pairing_requests", "pairing_requests.jsonl", ("id",)),
    ("api_tokens", "api_tokens.jsonl", ("id",)),  # SHA-256 hashes and prefixes only, as IronClaw stores them
    ("heartbeat_state", "heartbeat_state.jsonl", ("id",)),
    ("leak_detection_patterns", "leak_detection_patterns.jsonl", ("id",)),
    ("leak_detection_events", "audit/leak_detection_events.jsonl", ("created_at", "id")),
    ("secret_usage_log", "audit/secret_usage_log.jsonl", ("created_at", "id")),
    ("tool_failures", "audit/tool_failures.jsonl", ("id",)),
    ("tool_rate_limit_state", "audit/tool_rate_limit_state.jsonl", ("id",)),
    ("repair_attempts", "audit/repair_attempts.jsonl", ("created_at", "id")),
    ("root_filesystem_events", "reborn/root_filesystem_events.jsonl", ("id",)),
    ("root_filesystem_sequences", "reborn/root_filesystem_sequences.jsonl", ("path",)),
    ("root_filesystem_index_specs", "reborn/root_filesystem_index_specs.jsonl", ("prefix", "name")),
    ("root_filesystem_ordered_index_rows", "reborn/root_filesystem_ordered_index_rows.jsonl", ("index_name", "path")),
]


def log_tables(run: Run) -> None:
    for table, fname, order in LOG_TABLES:
        if run.source.schema.has(table):
            _stream_table(run, table, f"settings/{fname}", run.rows(table, order))
    if run.source.schema.has("llm_calls"):  # the calls of a job went to jobs/<id>/llm_calls.jsonl
        _stream_table(run, "llm_calls", "settings/audit/llm_calls.jsonl",
                      run.rows("llm_calls", ("created_at", "id"), where="job_id IS NULL"))


def _stream_table(run: Run, table: str, path: str, rows: Iterator[dict[str, Any]]) -> None:
    n = 0
    with run.writer.stream(path) as out:
        for row in rows:
            out.write(json_line(row))
            n += 1
    run.landed(table, n)
