"""The IronClaw database, read-only: connection, schema detection, streaming rows.  The only psycopg import.

Everything is read inside one READ ONLY, REPEATABLE READ transaction, so every table (and the verification pass
after the writes) sees one snapshot of the database, and the migrator cannot change it even by mistake.  Rows
come through server-side (named) cursors `ITERSIZE` at a time, so memory stays flat whatever the table size.
Columns are read as the database has them: a column that a schema version lacks is simply absent from the rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .schema import KNOWN_VERSION, detect_version

ITERSIZE = 2000


class SourceError(Exception):
    """The source database cannot be read as an IronClaw database; the message says why and what to do."""


def redact(uri: str) -> str:
    """The URI without its password, for messages and the report."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Schema:
    version: int
    detected_by: str  # "refinery_schema_history" or "inspection"
    columns: dict[str, list[str]] = field(default_factory=dict)  # table -> its columns, in table order

    def has(self, table: str, column: str | None = None) -> bool:
        cols = self.columns.get(table)
        return cols is not None and (column is None or column in cols)


class Source:
    """One read-only snapshot of an IronClaw PostgreSQL database."""

    def __init__(self, uri: str) -> None:
        self.uri = redact(uri)
        try:
            self.conn = psycopg.connect(uri, autocommit=False, connect_timeout=10, row_factory=dict_row)
        except psycopg.OperationalError as e:
            detail = _first_line(str(e))
            raise SourceError(f"cannot connect to PostgreSQL at {self.uri}: {detail} (check that the server "
                              "runs, the host, port, user, password and database name)") from None
        except psycopg.ProgrammingError as e:
            raise SourceError(f"not a PostgreSQL connection URI ({self.uri}): {_first_line(str(e))}") from None
        self.conn.read_only = True
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.database = str(self._scalar("SELECT current_database()"))
        self.schema = self._detect()

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()

    def _scalar(self, query: str | sql.Composed, args: tuple[Any, ...] = ()) -> Any:
        try:
            with self.conn.cursor() as cur:
                row = cur.execute(query, args).fetchone()
        except psycopg.Error as e:
            raise SourceError(f"reading {self.uri} failed: {_first_line(str(e))}") from None
        return None if row is None else next(iter(row.values()))

    def _detect(self) -> Schema:
        columns: dict[str, list[str]] = {}
        with self.conn.cursor() as cur:
            cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")
            for row in cur:
                columns.setdefault(row["table_name"], []).append(row["column_name"])
        if "memory_documents" not in columns:
            raise SourceError(f"database {self.database!r} at {self.uri} is not an IronClaw database (it has no "
                              "memory_documents table); point clawfs migrate at IronClaw's DATABASE_URL")
        if "refinery_schema_history" in columns:
            history = self._history()
            newer = {v: n for v, n in history.items() if v > KNOWN_VERSION}
            if newer:
                listed = ", ".join(f"V{v} ({n})" for v, n in sorted(newer.items()))
                raise SourceError(f"the database's IronClaw schema has migrations this clawfs does not know: "
                                  f"{listed}; it knows V1..V{KNOWN_VERSION}. Upgrade clawfs, or migrate from a "
                                  "backup taken before that IronClaw upgrade")
            if history:
                return Schema(max(history), "refinery_schema_history", columns)
        return Schema(detect_version(columns), "inspection", columns)

    def _history(self) -> dict[int, str]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT version, name FROM refinery_schema_history")
            return {int(r["version"]): str(r["name"]) for r in cur}

    def count(self, table: str) -> int:
        if not self.schema.has(table):
            return 0
        return int(self._scalar(sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))))

    def rows(self, table: str, order: tuple[str, ...], *, after: dict[str, Any] | None = None,
             where: str = "", args: tuple[Any, ...] = (), skip: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
        """Every row of `table` (columns in `skip` left out), ordered by `order`, optionally only rows after the
        key `after` (resume).  Ordering by the key makes a resumed run see exactly the rows not yet done."""
        if not self.schema.has(table):
            return
        cols = [c for c in self.schema.columns[table] if c not in skip]
        conds: list[sql.Composable] = [sql.SQL(where)] if where else []
        params: list[Any] = list(args)
        if after is not None:
            conds.append(sql.SQL("({}) > ({})").format(sql.SQL(", ").join(map(sql.Identifier, order)),
                                                       sql.SQL(", ").join(sql.Placeholder() * len(order))))
            params.extend(after[c] for c in order)
        query = sql.SQL("SELECT {} FROM {}{} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table),
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL(""),
            sql.SQL(", ").join(map(sql.Identifier, order)))
        try:
            with self.conn.cursor(name=f"clawfs_{table}") as cur:
                cur.itersize = ITERSIZE
                cur.execute(query, params)
                yield from cur
        except psycopg.Error as e:
            raise SourceError(f"reading {table} from {self.uri} failed: {_first_line(str(e))}; once the database "
                              "answers again, run the same command to resume") from None

    def binary(self, table: str, row_id: Any) -> bytes:
        """One row's `wasm_binary`, fetched alone so a listing of tools never holds every binary at once."""
        with self.conn.cursor() as cur:
            row = cur.execute(sql.SQL("SELECT wasm_binary FROM {} WHERE id = %s").format(sql.Identifier(table)),
                              (row_id,)).fetchone()
        return b"" if row is None else bytes(row["wasm_binary"])

    def query(self, name: str, query: str, args: tuple[Any, ...] = ()) -> Iterator[dict[str, Any]]:
        """Stream the rows of a fixed query (joins the per-table `rows` cannot express)."""
        try:
            with self.conn.cursor(name=f"clawfs_{name}") as cur:
                cur.itersize = ITERSIZE
                cur.execute(query.encode(), args)
                yield from cur
        except psycopg.Error as e:
            raise SourceError(f"reading {name} from {self.uri} failed: {_first_line(str(e))}") from None

    def embedding_dims(self) -> int | None:
        """The dimension of IronClaw's stored chunk embeddings (None when there are none)."""
        if not self.schema.has("memory_chunks", "embedding"):
            return None
        dims = self._scalar("SELECT vector_dims(embedding) AS d FROM memory_chunks "
                            "WHERE embedding IS NOT NULL LIMIT 1")
        return None if dims is None else int(dims)


def _first_line(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().splitlines()[0] if text.strip() else "unknown error")
