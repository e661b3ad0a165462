"""The IronClaw database fixture (tests/ironclaw_db.py) against the facts it claims to reproduce.

The column check reads tests/data/IRONCLAW-COLUMNS.md, a copy of ../shared/IRONCLAW-COLUMNS.md (the columns of
every table as IronClaw's real migrations leave them after V1, V9, V25 and V34), so the fixture cannot drift from
it; CLAWFS_IRONCLAW_COLUMNS overrides the path.  The secrets check decrypts with its own few lines of HKDF +
AES-GCM, not with the fixture's helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import ironclaw_db as icdb
import numpy as np
import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

pytestmark = pytest.mark.pg

COLUMNS_MD = Path(os.environ.get("CLAWFS_IRONCLAW_COLUMNS",
                                 Path(__file__).resolve().parent / "data" / "IRONCLAW-COLUMNS.md"))

# Where a snapshot's single row per column shows the final (V34) state but the real schema differed at that
# snapshot: V6 created routines.notify_user NOT NULL DEFAULT 'default'; V13 dropped both.
HISTORICAL: dict[tuple[int, str, str], tuple[str, bool, str]] = {
    (9, "routines", "notify_user"): ("text", False, "'default'::text"),
}

NewDb = Callable[..., icdb.IronclawDb]


@dataclass(frozen=True)
class Col:
    type: str
    nullable: bool
    default: str  # "" for none; ends in "..." where the document cut it short


def snapshot_columns() -> dict[str, dict[str, tuple[Col, int]]]:
    """table -> column -> (its description, the first snapshot version it is in), from IRONCLAW-COLUMNS.md."""
    if not COLUMNS_MD.exists():
        pytest.fail(f"{COLUMNS_MD} is missing: the schema check needs it (set CLAWFS_IRONCLAW_COLUMNS)")
    tables: dict[str, dict[str, tuple[Col, int]]] = {}
    current: dict[str, tuple[Col, int]] | None = None
    for line in COLUMNS_MD.read_text().splitlines():
        if heading := re.match(r"## (\w+) \(", line):
            current = tables.setdefault(heading[1], {})
        elif current is not None and line.startswith("| ") and not line.startswith("| column "):
            name, typ, null, default, since = (cell.strip() for cell in line.strip().strip("|").split("|"))
            current[name] = (Col(typ, null == "yes", default), int(since.removeprefix("V")))
    assert len(tables) > 30, f"could not parse {COLUMNS_MD}"
    return tables


def expected_at(version: int) -> dict[str, dict[str, Col]]:
    tables: dict[str, dict[str, Col]] = {}
    for table, columns in snapshot_columns().items():
        present = {name: col for name, (col, since) in columns.items() if since <= version}
        for name in present:
            if (version, table, name) in HISTORICAL:
                present[name] = Col(*HISTORICAL[(version, table, name)])
        if present:
            tables[table] = present
    return tables


def actual_columns(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Col]]:
    """information_schema.columns of the public schema (tables and views), types spelled as the document does."""
    rows = conn.execute(
        "SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'").fetchall()
    tables: dict[str, dict[str, Col]] = {}
    for table, column, data_type, udt, nullable, default in rows:
        typ = {"ARRAY": udt.removeprefix("_") + "[]", "USER-DEFINED": udt}.get(data_type, data_type)
        tables.setdefault(table, {})[column] = Col(typ, nullable == "YES", default or "")
    return tables


def same_column(want: Col, got: Col) -> bool:
    default_ok = (got.default.startswith(want.default[:-3]) if want.default.endswith("...")
                  else got.default == want.default)
    return want.type == got.type and want.nullable == got.nullable and default_ok


def one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    """The single row `query` returns (no params: a literal '%' stays a '%')."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return tuple(row)


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " AND table_type = 'BASE TABLE'").fetchall()]
    return {name: one(conn, f'SELECT count(*) FROM "{name}"')[0] for name in names}


def decrypt_independently(master_key: str, blob: bytes, salt: bytes) -> str:
    """IRONCLAW.md section 3, written out again: HKDF-SHA256 over the key string, AES-256-GCM, nonce first."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"near-agent-secrets-v1").derive(
        master_key.encode("utf-8"))
    return AESGCM(key).decrypt(blob[:12], blob[12:], None).decode("utf-8")


@pytest.fixture(scope="module", params=icdb.SNAPSHOT_VERSIONS, ids=lambda v: f"V{v}")
def built(pg_server: icdb.PgServer, request: pytest.FixtureRequest) -> Iterator[icdb.IronclawDb]:
    """One seeded database per snapshot version, shared by the read-only tests below."""
    db = icdb.make_database(pg_server, request.param, hint=f"snapshot_v{request.param}")
    yield db
    pg_server.drop_database(db.name)


@pytest.fixture
def conn(built: icdb.IronclawDb) -> Iterator[psycopg.Connection[Any]]:
    with built.connect() as connection:
        yield connection
        connection.rollback()  # tests that change anything do it in this transaction only


def seeded(db: icdb.IronclawDb) -> icdb.Seeded:
    assert db.seeded is not None
    return db.seeded


# ---- schema -------------------------------------------------------------------------------------------------------

def test_columns_match_the_snapshot(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    assert built.version is not None
    want, got = expected_at(built.version), actual_columns(conn)
    got.pop("refinery_schema_history")
    assert sorted(got) == sorted(want), "tables (and views) differ from the snapshot"
    for table, columns in want.items():
        assert sorted(got[table]) == sorted(columns), f"{table}: column names"
        wrong = {name: (col, got[table][name]) for name, col in columns.items()
                 if not same_column(col, got[table][name])}
        assert not wrong, f"{table}: (snapshot, database) differ: {wrong}"


def test_embedding_column_and_index(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    (typ,) = one(conn, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                 " WHERE attrelid = 'memory_chunks'::regclass AND attname = 'embedding'")
    hnsw = conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'memory_chunks'"
                        " AND indexdef LIKE '%hnsw%'").fetchall()
    if built.version == 1:
        assert typ == "vector(1536)"
        assert len(hnsw) == 1 and "vector_cosine_ops" in hnsw[0][0]
        assert "m='16'" in hnsw[0][0] and "ef_construction='64'" in hnsw[0][0]
    else:
        assert typ == "vector"
        assert hnsw == []


def constraints(conn: psycopg.Connection[Any], table: str) -> set[tuple[str, tuple[str, ...], str | None, str]]:
    """(kind p/u/f, columns, referenced table, on-delete action) for each constraint of `table`."""
    rows = conn.execute(
        "SELECT c.contype, array_agg(a.attname ORDER BY k.n), c.confrelid::regclass::text, c.confdeltype"
        " FROM pg_constraint c CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
        " WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u', 'f')"
        " GROUP BY c.oid, c.contype, c.confrelid, c.confdeltype", (table,)).fetchall()
    return {(kind, tuple(cols), None if ref == "-" else ref, delete) for kind, cols, ref, delete in rows}


def test_keys_and_constraints(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    version = built.version or 0
    docs = constraints(conn, "memory_documents")
    assert ("p", ("id",), None, " ") in docs and ("u", ("user_id", "agent_id", "path"), None, " ") in docs
    chunks = constraints(conn, "memory_chunks")
    assert ("u", ("document_id", "chunk_index"), None, " ") in chunks
    assert ("f", ("document_id",), "memory_documents", "c") in chunks  # ON DELETE CASCADE
    assert ("f", ("conversation_id",), "conversations", "c") in constraints(conn, "conversation_messages")
    if version >= 9:
        assert ("p", ("user_id", "key"), None, " ") in constraints(conn, "settings")
        assert ("u", ("user_id", "name"), None, " ") in constraints(conn, "secrets")
        assert ("f", ("wasm_tool_id",), "wasm_tools", "c") in constraints(conn, "tool_capabilities")
        assert ("f", ("routine_id",), "routines", "c") in constraints(conn, "routine_runs")
        assert ("f", ("job_id",), "agent_jobs", "a") in constraints(conn, "job_events")
    if version >= 25:
        assert ("u", ("document_id", "version"), None, " ") in constraints(conn, "memory_document_versions")
        assert ("u", ("channel", "external_id"), None, " ") in constraints(conn, "channel_identities")
    if version >= 34:
        assert ("p", ("path",), None, " ") in constraints(conn, "root_filesystem_entries")
        (collation,) = one(conn, "SELECT collation_name FROM information_schema.columns WHERE table_name ="
                           " 'root_filesystem_entries' AND column_name = 'path'")
        assert collation == "C"


def test_deleting_a_document_cascades(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    memory = seeded(built).document("MEMORY.md")
    conn.execute("DELETE FROM memory_documents WHERE id = %s", (memory.id,))
    assert conn.execute("SELECT count(*) FROM memory_chunks WHERE document_id = %s",
                        (memory.id,)).fetchone() == (0,)
    if (built.version or 0) >= 16:
        assert conn.execute("SELECT count(*) FROM memory_document_versions WHERE document_id = %s",
                            (memory.id,)).fetchone() == (0,)


def test_refinery_history(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    columns = conn.execute(
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_name = 'refinery_schema_history' ORDER BY ordinal_position").fetchall()
    assert columns == [("version", "integer", None), ("name", "character varying", 255),
                       ("applied_on", "character varying", 255), ("checksum", "character varying", 255)]
    assert constraints(conn, "refinery_schema_history") == {("p", ("version",), None, " ")}
    rows = conn.execute("SELECT version, name, applied_on, checksum FROM refinery_schema_history"
                        " ORDER BY version").fetchall()
    assert [(v, n) for v, n, _, _ in rows] == [(v, icdb.MIGRATION_NAMES[v]) for v in range(1, (built.version or 0) + 1)]
    assert all(re.fullmatch(r"2026-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", applied) for _, _, applied, _ in rows)
    assert all(checksum.isdigit() and int(checksum) < 2**64 for _, _, _, checksum in rows)
    assert rows[0][3] == "13924994861355873385"  # V1__initial, as pinned in IronClaw's checksums.lock
    assert all(name.startswith("root_filesystem_") for v, name, _, _ in rows if v >= 26)


# ---- seeded data --------------------------------------------------------------------------------------------------

def test_every_seeded_row_is_there_and_nothing_else(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    expected = dict(seeded(built).rows)
    if (built.version or 0) >= 2:  # V2 itself inserts its 18 leak detection patterns
        expected["leak_detection_patterns"] = expected.get("leak_detection_patterns", 0) + 18
    expected["refinery_schema_history"] = built.version or 0
    counts = table_counts(conn)
    assert {t: n for t, n in counts.items() if n} == expected


def test_documents_round_trip(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute("SELECT id, user_id, agent_id, path, content, metadata, created_at, updated_at"
                        " FROM memory_documents").fetchall()
    want = {(d.id, d.user_id, d.agent_id, d.path, d.content, json_sorted(d.metadata), d.created_at, d.updated_at)
            for d in seeded(built).documents}
    assert {(*row[:5], json_sorted(row[5]), *row[6:]) for row in rows} == want
    times = [t for d in seeded(built).documents for t in (d.created_at, d.updated_at)]
    assert len(set(times)) == len(times), "timestamps must be distinct"


def json_sorted(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def test_the_documents_the_migrator_needs(built: icdb.IronclawDb) -> None:
    s = seeded(built)
    for name in icdb.IDENTITY_FILES:
        assert s.document(name).content.startswith("# ")
    assert s.document("BOOTSTRAP.md").content == ""
    assert "[09:15:40]" in s.document("daily/2026-03-01.md").content
    assert "tomatoes" in s.document("projects/garden/plan.md").content
    assert '"retention_days": 30' in s.document("daily/.config").content
    assert "15 March 2026" in s.document("projects/grants/soil-carbon-futures.md").content
    assert "vaccinations" in s.document("notes/biscuit-vet.md").content
    assert s.document("MEMORY.md", "alice").content != s.document("MEMORY.md").content
    assert s.document("MEMORY.md", agent_id=icdb.RESEARCH_AGENT_ID).agent_id == icdb.RESEARCH_AGENT_ID
    umlauts = s.document("notizen/grüße-aus-köln.md")
    assert "東京" in umlauts.content and umlauts.metadata == {"lang": "de"}
    assert s.document("projects/grants/soil-carbon-futures.md").metadata["deadline"] == "2026-03-15"


def test_chunks_and_embeddings(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    s = seeded(built)
    rows = conn.execute("SELECT document_id, chunk_index, content, embedding::text, vector_dims(embedding)"
                        " FROM memory_chunks").fetchall()
    want = {(d.id, c.index, c.content) for d in s.documents for c in d.chunks}
    assert {row[:3] for row in rows} == want
    assert {row[4] for row in rows} == {1536, None}
    literature = s.document("research/soil-microbiome-literature.md")
    assert len(literature.chunks) == 3 and all(c.embedding for c in literature.chunks)
    assert all(c.embedding is None for c in s.document("MEMORY.md", "alice").chunks)
    stored = {(doc_id, index): text for doc_id, index, _, text, _ in rows}
    first = literature.chunks[0]
    values = np.array(stored[(literature.id, 0)].strip("[]").split(","), dtype=np.float32)
    assert np.array_equal(values, np.array(first.embedding, dtype=np.float32))  # float32 survives exactly
    assert conn.execute("SELECT count(*) FROM memory_chunks WHERE content_tsv @@ plainto_tsquery('english',"
                        " 'beagle booster vaccinations')").fetchone() == (1,)


def test_document_versions(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    s = seeded(built)
    if (built.version or 0) < 16:
        assert s.document_versions == []
        return
    rows = conn.execute("SELECT document_id, version, content, content_hash, changed_by, created_at"
                        " FROM memory_document_versions ORDER BY document_id, version").fetchall()
    want = sorted((v.document_id, v.version, v.content, v.content_hash, v.changed_by, v.created_at)
                  for v in s.document_versions)
    assert sorted(rows) == want
    memory = [v for v in s.document_versions if v.document_id == s.document("MEMORY.md").id]
    assert [v.version for v in memory] == [1, 2, 3]
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", v.content_hash) for v in memory)
    assert {v.changed_by for v in memory} == {"agent", "user:default"}


def test_conversations(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    s = seeded(built)
    channels = {c.row["channel"] for c in s.conversations}
    assert {"telegram", "repl"} <= channels
    rows = conn.execute("SELECT conversation_id, role, content, created_at FROM conversation_messages"
                        " ORDER BY created_at").fetchall()
    want = [(c.row["id"], m.role, m.content, m.created_at) for c in s.conversations for m in c.messages]
    assert rows == sorted(want, key=lambda r: r[3])
    tool_calls = [json.loads(m.content) for c in s.conversations for m in c.messages if m.role == "tool_calls"]
    assert tool_calls and set(tool_calls[0]) == {"calls", "narrative", "outcome"}
    has_source = (built.version or 0) >= 25
    assert all(("source_channel" in c.row) == has_source for c in s.conversations)


def test_jobs_routines_settings(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    s = seeded(built)
    version = built.version or 0
    assert [j.row["status"] for j in s.jobs] == ["completed", "failed"]
    assert len(s.jobs[0].actions) == 3 and s.jobs[0].llm_calls and s.jobs[0].estimation_snapshots
    assert s.jobs[1].repair_attempts
    if version < 9:
        assert not s.routines and not s.settings and not s.jobs[0].events
        return
    assert conn.execute("SELECT count(*), min(id) >= 1 FROM job_events").fetchone() == (6, True)  # bigserial ids
    (routine,) = s.routines
    assert routine.row["trigger_config"] == {"schedule": "0 9 * * *"} and len(routine.runs) == 2
    assert s.settings[("default", "agent.name")] == "Claw"
    fuel = conn.execute("SELECT value FROM settings WHERE key = 'wasm.default_fuel_limit'").fetchone()
    assert fuel == ((500_000_000,) if version >= 25 else (10_000_000,))


def test_secrets_decrypt_with_the_master_key(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    s = seeded(built)
    if built.version == 1:  # secrets arrived in V2
        assert s.secrets == {}
        return
    rows = conn.execute("SELECT name, encrypted_value, key_salt FROM secrets WHERE user_id = 'default'").fetchall()
    assert {name for name, _, _ in rows} == set(s.secrets) and "brave_api_key" in s.secrets
    for name, blob, salt in rows:
        assert len(salt) == 32 and len(blob) == 12 + len(s.secrets[name].encode()) + 16
        assert decrypt_independently(icdb.MASTER_KEY, blob, salt) == s.secrets[name]
        assert icdb.decrypt_secret(icdb.MASTER_KEY, blob, salt) == s.secrets[name]
        with pytest.raises(InvalidTag):
            decrypt_independently(icdb.MASTER_KEY.upper(), blob, salt)


def wasm_is_valid(data: bytes) -> bool:
    """Node's WebAssembly.validate where node exists; else the module header."""
    if shutil.which("node") is None:
        return data[:8] == b"\x00asm\x01\x00\x00\x00"
    script = "process.stdout.write(String(WebAssembly.validate(Buffer.from(process.argv[1], 'hex'))))"
    return subprocess.run(["node", "-e", script, data.hex()], capture_output=True, text=True,
                          check=True).stdout == "true"


def test_wasm_tools_and_channels(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    s = seeded(built)
    if built.version == 1:
        assert not s.tools and not s.channels
        return
    (binary, digest, allowlist, secrets) = one(
        conn, "SELECT t.wasm_binary, t.binary_hash, c.http_allowlist, c.allowed_secrets FROM wasm_tools t"
        " JOIN tool_capabilities c ON c.wasm_tool_id = t.id WHERE t.name = 'web-search'")
    assert binary == s.tools[0].wasm and digest == blake3.blake3(binary).digest() and wasm_is_valid(binary)
    assert allowlist == [{"host": "api.search.brave.com", "path_prefix": "/res/v1/", "methods": ["GET"]}]
    assert secrets == ["brave_api_key"]
    if (built.version or 0) >= 25:
        (channel_wasm, channel_hash, caps) = one(
            conn, "SELECT wasm_binary, binary_hash, capabilities_json FROM wasm_channels WHERE name = 'telegram'")
        assert channel_hash == blake3.blake3(channel_wasm).digest() and wasm_is_valid(channel_wasm)
        assert json.loads(caps)["capabilities"]["channel"]["min_poll_interval_ms"] == 30000


def test_users_and_root_filesystem(built: icdb.IronclawDb, conn: psycopg.Connection[Any]) -> None:
    s = seeded(built)
    version = built.version or 0
    assert bool(s.users) == (version >= 25) and bool(s.root_entries) == (version >= 34)
    if version >= 25:
        ((token, row),) = s.api_tokens.items()
        assert row["token_hash"] == hashlib.sha256(token.encode()).digest() and row["token_prefix"] == token[:8]
        assert {p["owner_id"] for p in s.pairing_requests} == {"default", None}
    if version >= 34:
        rows = conn.execute("SELECT path, contents, is_dir, version FROM root_filesystem_entries").fetchall()
        assert sorted(rows) == sorted((e.path, e.contents, e.is_dir, 1) for e in s.root_entries)
        assert ("/engine", b"", True, 1) in rows


# ---- building variants --------------------------------------------------------------------------------------------

def test_without_history_and_with_a_future_migration(new_ironclaw_db: NewDb) -> None:
    bare = new_ironclaw_db(25, history=False)
    with bare.connect() as conn:
        assert conn.execute("SELECT to_regclass('refinery_schema_history')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('memory_document_versions')").fetchone() != (None,)
        with pytest.raises(ValueError, match="history=True"):
            icdb.add_future_migration(conn)
    newer = new_ironclaw_db(34, seed_data=False)
    with newer.connect() as conn:
        icdb.add_future_migration(conn, 35, "something_new")
        assert conn.execute("SELECT max(version), max(name) FILTER (WHERE version = 35)"
                            " FROM refinery_schema_history").fetchone() == (35, "something_new")
        assert conn.execute("SELECT to_regclass('something_new')").fetchone() == ("something_new",)


def test_empty_database_and_uri(new_ironclaw_db: NewDb) -> None:
    db = new_ironclaw_db(None)
    assert db.uri.startswith("postgresql://") and db.seeded is None
    with psycopg.connect(db.uri) as conn:
        assert int(one(conn, "SHOW server_version_num")[0]) >= 180000
        assert table_counts(conn) == {}
        assert conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() == (1,)


def test_seed_bad_paths(new_ironclaw_db: NewDb) -> None:
    db = new_ironclaw_db(34, seed_data=False)
    with db.connect() as conn:
        paths = icdb.seed_bad_paths(conn)
        stored = {r[0] for r in conn.execute("SELECT path FROM memory_documents").fetchall()}
    assert {"/etc/passwd", "../../escape.md", "notes/../../x.md"} <= set(paths) and stored == set(paths)


def test_bulk_documents(new_ironclaw_db: NewDb) -> None:
    db = new_ironclaw_db(34, seed_data=False)
    with db.connect() as conn:
        result = icdb.bulk_documents(conn, 2000)
        count, dirs, smallest, largest = one(
            conn, "SELECT count(*), count(DISTINCT regexp_replace(path, '/[^/]*$', '')), min(octet_length(content)),"
            " max(octet_length(content)) FROM memory_documents WHERE path LIKE 'bulk/%'")
    assert count == result.count == 2000 and dirs > 100
    assert smallest >= 700 and largest <= 3000 and 1000 <= result.content_bytes / count <= 2048


def test_bulk_documents_with_vectors_at_v1(new_ironclaw_db: NewDb) -> None:
    db = new_ironclaw_db(1, seed_data=False)  # VECTOR(1536) with its HNSW index
    with db.connect() as conn:
        result = icdb.bulk_documents(conn, 300, version=1, with_vectors=True)
        dims = conn.execute("SELECT DISTINCT vector_dims(embedding) FROM memory_chunks").fetchall()
        norm = conn.execute("SELECT round(vector_norm(embedding)::numeric, 4) FROM memory_chunks LIMIT 1").fetchone()
    assert result.chunks == 300 and dims == [(1536,)] and norm is not None and float(norm[0]) == 1.0


@pytest.mark.slow
def test_every_version_builds_and_seeds(new_ironclaw_db: NewDb) -> None:
    """The versions without a snapshot (2..8, 10..24, 26..33) replay the same steps; they must at least build."""
    for version in range(1, icdb.LATEST_VERSION + 1):
        db = new_ironclaw_db(version)
        with db.connect() as conn:
            counts = {t: n for t, n in table_counts(conn).items() if n}
        want = dict(seeded(db).rows)
        if version >= 2:
            want["leak_detection_patterns"] = want.get("leak_detection_patterns", 0) + 18
        assert counts == {**want, "refinery_schema_history": version}, f"V{version}"
