"""`clawfs migrate` against a real PostgreSQL 18 + pgvector (pgserver) holding IronClaw's schema at V1, V9, V25
and V34 with realistic data (tests/ironclaw_db.py), checked through a real mount with ordinary tools."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ironclaw_db as idb
import psycopg
import pytest
from faults import assert_user_error, clawfs
from helpers import CLAWFS, StoreFixture, make_store, store_bytes
from waiting import wait_for

from clawfs.keys import Credentials
from clawfs.store import Store
from clawfs.vfs import VFS
from migrations.writer import HomeWriter

pytestmark = pytest.mark.pg


@pytest.fixture
def server(pg_server: idb.PgServer) -> idb.PgServer:
    """The session's PostgreSQL (conftest: fails, never skips, when it cannot start: CI runs these)."""
    return pg_server


def migrate(db: idb.IronclawDb, store: StoreFixture, *extra: str, key: bool = True,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["migrate", db.uri, "--to", str(store.path), *store.key_args(), "--json", *extra]
    if key:
        keyfile = store.tmp / "ironclaw-master-key"
        keyfile.write_text(db.master_key + "\n")
        args += ["--secrets-master-key-file", str(keyfile)]
    proc = clawfs(*args, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.fixture
def mounted_after(tmp_path: Path) -> Iterator[Any]:
    """mount(store) mounts a migrated store at tmp/mnt; unmounted and fsck'd (clean) afterwards."""
    done: list[tuple[StoreFixture, Path]] = []

    def mount(store: StoreFixture, index: bool = False) -> Path:
        mnt = tmp_path / "mnt"
        store.mount(mnt, index=index)
        done.append((store, mnt))
        return mnt

    yield mount
    for store, mnt in done:
        store.umount(mnt)
        store.assert_clean()


# -- every schema version -------------------------------------------------------------------------------------
@pytest.mark.fuse
@pytest.mark.parametrize("version", [1, 9, 25, 34])
def test_migrates_every_version(server: idb.PgServer, tmp_path: Path, version: int, mounted_after: Any) -> None:
    db = idb.make_database(server, version)
    seeded = db.seeded
    assert seeded is not None
    store = make_store(tmp_path)
    report = report_of(migrate(db, store))
    assert report["ok"] and report["source"]["schema_version"] == version
    counts = report["verification"]["counts"]
    for table, n in seeded.rows.items():
        if table in counts:  # (the schema itself seeds leak_detection_patterns: more rows than seed() put in)
            assert counts[table]["source"] >= n and counts[table]["migrated"] == counts[table]["source"], table
    mnt = mounted_after(store)
    _check_documents(mnt, seeded)
    _check_conversations(mnt, seeded)
    _check_jobs(mnt, seeded)
    if version >= 9:
        _check_secrets(mnt, seeded)
        _check_tools(mnt, seeded)
        assert json.loads((mnt / "settings" / "wasm.default_fuel_limit.json").read_text()) == \
            seeded.settings[("default", "wasm.default_fuel_limit")]
    if version >= 25:
        _check_versions(mnt, seeded)
        assert (mnt / "channels" / "telegram" / "channel.wasm").read_bytes() == seeded.channels[0].wasm
        assert (mnt / "channels" / "telegram" / "inbox" / "new").is_dir()
    if version >= 34:
        for entry in seeded.root_entries:
            target = mnt / entry.path.lstrip("/")
            assert target.is_dir() if entry.is_dir else target.read_bytes() == entry.contents
    grep = subprocess.run(["grep", "-rl", "Riverside Animal Clinic", str(mnt)], capture_output=True, text=True)
    assert str(mnt / "notes" / "biscuit-vet.md") in grep.stdout.split()


def _scope(mnt: Path, doc: idb.Document) -> Path:
    root = mnt if doc.user_id == "default" else mnt / "users" / doc.user_id
    return root if doc.agent_id is None else root / "agents" / str(doc.agent_id)


def _check_documents(mnt: Path, seeded: idb.Seeded) -> None:
    for doc in seeded.documents:
        f = _scope(mnt, doc) / doc.path
        assert f.read_text(encoding="utf-8") == doc.content, doc.path
        assert f.stat().st_mtime_ns == int(doc.updated_at.timestamp() * 1_000_000) * 1000
        if doc.metadata:
            assert json.loads(os.getxattr(f, "user.ironclaw.metadata")) == doc.metadata
    cat = subprocess.run(["cat", str(mnt / "IDENTITY.md")], capture_output=True, text=True, check=True)
    assert "Name: Claw" in cat.stdout


def _check_conversations(mnt: Path, seeded: idb.Seeded) -> None:
    for conv in seeded.conversations:
        scope = mnt if conv.row["user_id"] == "default" else mnt / "users" / conv.row["user_id"]
        f = scope / "conversations" / conv.row["channel"] / f"{conv.row['id']}.jsonl"
        lines = [json.loads(line) for line in f.read_text().splitlines()]
        assert [m["id"] for m in lines] == [str(m.id) for m in conv.messages]
        for line, msg in zip(lines, conv.messages, strict=True):
            if msg.role == "tool_calls":
                assert line["content"] == json.loads(msg.content)
            else:
                assert line["content"] == msg.content


def _check_jobs(mnt: Path, seeded: idb.Seeded) -> None:
    for job in seeded.jobs:
        d = mnt / "jobs" / str(job.row["id"])
        assert json.loads((d / "job.json").read_text())["title"] == job.row["title"]
        if job.actions:
            lines = (d / "actions.jsonl").read_text().splitlines()
            assert [json.loads(x)["tool_name"] for x in lines] == [a["tool_name"] for a in job.actions]
        if job.events:
            assert len((d / "events.jsonl").read_text().splitlines()) == len(job.events)


def _check_secrets(mnt: Path, seeded: idb.Seeded) -> None:
    names = sorted(os.listdir(mnt / "secrets"))
    assert names == sorted(seeded.secrets)
    for name, value in seeded.secrets.items():
        f = mnt / "secrets" / name
        assert f.stat().st_size == len(value.encode())
        cat = subprocess.run(["cat", str(f)], capture_output=True)
        assert cat.returncode != 0 and value.encode() not in cat.stdout
    grep = subprocess.run(["grep", "-r", "BSAx7Qm2p9TfK3vW8yLz1RnD4cJhG6aE", str(mnt)], capture_output=True)
    assert grep.stdout == b""


def _check_tools(mnt: Path, seeded: idb.Seeded) -> None:
    for tool in seeded.tools:
        d = mnt / "tools" / tool.name
        assert (d / "tool.wasm").read_bytes() == tool.wasm
        caps = json.loads((d / "capabilities.json").read_text())
        assert caps["capabilities"]["http"]["allowlist"] == tool.capabilities["http_allowlist"]
        assert caps["capabilities"]["secrets"]["allowed_names"] == list(tool.capabilities["allowed_secrets"])


def _check_versions(mnt: Path, seeded: idb.Seeded) -> None:
    docs = {d.id: d for d in seeded.documents}
    for v in seeded.document_versions:
        f = _scope(mnt, docs[v.document_id]) / ".versions" / v.path / f"{v.version}.md"
        assert f.read_text() == v.content
        assert os.getxattr(f, "user.ironclaw.content_hash").decode() == v.content_hash
        assert v.content_hash == "sha256:" + hashlib.sha256(v.content.encode()).hexdigest()


# -- search, rerun, dry run, resume ---------------------------------------------------------------------------
@pytest.mark.fuse
@pytest.mark.slow
def test_migrated_home_is_searchable_by_meaning(server: idb.PgServer, tmp_path: Path, mounted_after: Any) -> None:
    db = idb.make_database(server, 34)
    store = make_store(tmp_path)
    migrate(db, store)
    mnt = mounted_after(store, index=True)
    wait_for(lambda: json.loads((mnt / ".clawfs" / "status").read_text()), until=lambda st: not st["pending"],
             timeout=300, interval=0.5, what="the migrated home to be indexed")
    proc = clawfs("search", "when do I have to hand in the funding proposal", "--mount", str(mnt), "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)["hits"]
    assert hits[0]["path"] == "projects/grants/soil-carbon-futures.md", hits[:3]
    assert not any(h["path"].startswith("secrets/") for h in hits)


def test_rerun_is_idempotent_and_dry_run_writes_nothing(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    store = make_store(tmp_path)
    before = store_bytes(store.path)
    dry = migrate(db, store, "--dry-run")
    plan = report_of(dry)
    assert plan["dry_run"] and plan["counts"]["memory_documents"] == db.seeded.rows["memory_documents"]
    assert store_bytes(store.path) == before, "a dry run changed the store"
    first = report_of(migrate(db, store))
    assert first["files"]["created"] > 50 and first["files"]["unchanged"] == 0
    second = report_of(migrate(db, store))
    assert second["ok"] and second["files"]["created"] == second["files"]["updated"] == 0
    assert second["files"]["unchanged"] == first["files"]["created"]
    store.assert_clean()


def test_interrupted_run_resumes(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34, seed_data=False)
    with db.connect() as conn:
        bulk = idb.bulk_documents(conn, 6000)
    store = make_store(tmp_path)
    args = [CLAWFS, "migrate", db.uri, "--to", str(store.path), *store.key_args(), "--progress"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _kill_when(proc, 2400, lambda: proc.send_signal(signal.SIGKILL))
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    report = report_of(migrate(db, store, key=False))
    assert report["resumed"] and report["ok"]
    counts = report["verification"]["counts"]["memory_documents"]
    assert counts["migrated"] == bulk.count and report["verification"]["documents_checked"] == bulk.count
    assert report["files"]["created"] < bulk.count, "the resumed run started from scratch"
    store.assert_clean()


# -- bad input --------------------------------------------------------------------------------------------------
def test_unreachable_server_and_bad_credentials(tmp_path: Path, server: idb.PgServer) -> None:
    store = make_store(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    proc = clawfs("migrate", f"postgresql://ironclaw@127.0.0.1:{port}/ironclaw", "--to", str(store.path),
                  *store.key_args())
    msg = assert_user_error(proc, contains="cannot connect to PostgreSQL")
    assert "check that the server runs" in msg
    db = idb.make_database(server, None)
    bad = db.uri.replace("postgresql://postgres:@", "postgresql://nosuchuser:wrong@")
    proc = clawfs("migrate", bad, "--to", str(store.path), *store.key_args())
    msg = assert_user_error(proc, contains="cannot connect")
    assert "wrong" not in msg, "the password leaked into the message"


def test_database_that_is_not_ironclaw(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, None)
    store = make_store(tmp_path)
    assert_user_error(clawfs("migrate", db.uri, "--to", str(store.path), *store.key_args()),
                      contains="is not an IronClaw database")


def test_newer_schema_is_refused_by_name(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    with db.connect() as conn:
        idb.add_future_migration(conn, 35, "something_new")
    store = make_store(tmp_path)
    assert_user_error(migrate(db, store, check=False), contains="V35 (something_new)")


def test_wrong_master_key_writes_nothing(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    store = make_store(tmp_path)
    before = store_bytes(store.path)
    keyfile = tmp_path / "wrong"
    keyfile.write_text(os.urandom(32).hex())
    proc = clawfs("migrate", db.uri, "--to", str(store.path), *store.key_args(),
                  "--secrets-master-key-file", str(keyfile))
    assert_user_error(proc, contains="decrypts none of the 4 secrets")
    assert store_bytes(store.path) == before


def test_without_master_key_names_only_and_nothing_lost(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    store = make_store(tmp_path)
    report = report_of(migrate(db, store, key=False))
    assert report["ok"] and "names only" in report["secrets"]["values"]
    report = report_of(migrate(db, store))  # the key found later: values arrive, the rest is unchanged
    assert report["files"]["updated"] == 4


@pytest.mark.fuse
def test_bad_paths_are_skipped_and_nothing_escapes(server: idb.PgServer, tmp_path: Path, mounted_after: Any) -> None:
    db = idb.make_database(server, 34)
    with db.connect() as conn:
        bad = idb.seed_bad_paths(conn)
    store = make_store(tmp_path)
    proc = migrate(db, store, check=False)
    assert proc.returncode == 3, proc.stderr  # finished and verified, with skipped rows
    report = report_of(proc)
    assert report["ok"]
    reasons = {s["reason"] for s in report["skipped"] if s["table"] == "memory_documents"}
    assert len(reasons) == len(bad), reasons  # one reason each, naming what is wrong
    assert all(any(w in r for w in ("absolute", "'..'", "empty", "not a file name")) for r in reasons), reasons
    assert not (tmp_path.parent / "escape.md").exists() and not Path("/x.md").exists()
    mnt = mounted_after(store)
    assert not (mnt / "etc").exists()


def test_tampered_tool_binary_is_not_written(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    with psycopg.connect(db.uri, autocommit=True) as conn:
        conn.execute("UPDATE wasm_tools SET wasm_binary = wasm_binary || '\\x00'::bytea")
    store = make_store(tmp_path)
    proc = migrate(db, store, check=False)
    assert proc.returncode == 3
    skipped = [s for s in report_of(proc)["skipped"] if s["table"] == "wasm_tools"]
    assert skipped and "BLAKE3" in skipped[0]["reason"]


@pytest.mark.fuse
def test_mounted_store_is_refused(server: idb.PgServer, mounted: tuple[StoreFixture, Path]) -> None:
    store, _ = mounted
    db = idb.make_database(server, 1)
    assert_user_error(migrate(db, store, check=False), contains="unmount it first")


def test_one_user_into_the_root(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    store = make_store(tmp_path)
    proc = migrate(db, store, "--user", "alice", check=False)
    report = report_of(proc)
    assert proc.returncode == 0, report["skipped"]
    docs = report["verification"]["counts"]["memory_documents"]
    alice = [d for d in db.seeded.documents if d.user_id == "alice"]
    assert docs["migrated"] == len(alice) and docs["not_selected"] == docs["source"] - len(alice)
    assert report["ok"]


def _kill_when(proc: subprocess.Popen[str], at: int, action: Any) -> None:
    """Run `action` once the documents progress line reaches `at`, then wait for the migration to end."""
    assert proc.stderr is not None
    for line in proc.stderr:  # "clawfs: migrate: memory_documents 2400/6000"
        if "memory_documents" in line and int(line.split()[-1].split("/")[0]) >= at:
            action()
            break
    proc.communicate()


def test_database_dying_midway_then_resume(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34, seed_data=False)
    with db.connect() as conn:
        idb.bulk_documents(conn, 6000)
    store = make_store(tmp_path)
    args = [CLAWFS, "migrate", db.uri, "--to", str(store.path), *store.key_args(), "--progress"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)

    def terminate() -> None:  # what a server restart or a dropped network looks like to the migrator
        with psycopg.connect(server.uri(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db.name,))

    _kill_when(proc, 2400, terminate)
    assert proc.returncode == 1
    report = report_of(migrate(db, store, key=False))
    assert report["resumed"] and report["ok"]
    assert report["verification"]["documents_checked"] == 6000
    store.assert_clean()


DISK_MB = 48


def test_full_disk_stops_cleanly_and_resumes(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34, seed_data=False)
    with db.connect() as conn:
        bulk = idb.bulk_documents(conn, 30000)  # ~45 MiB of text: more than the disk takes
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"cannot mount a small tmpfs (the test needs root): {proc.stderr}"
    try:
        store = make_store(tmp_path)
        target = StoreFixture(disk / "agent.claw", store.passfile, tmp_path)
        subprocess.run(["cp", str(store.path), str(target.path)], check=True)
        msg = assert_user_error(migrate(db, target, key=False, check=False), contains="is full")
        assert "run the same command again to resume" in msg
        subprocess.run(["mount", "-o", "remount,size=400m", str(disk)], check=True)
        report = report_of(migrate(db, target, key=False))
        assert report["ok"] and report["verification"]["documents_checked"] == bulk.count
        target.assert_clean()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_one_agent_into_the_root(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    store = make_store(tmp_path)
    agent = str(idb.RESEARCH_AGENT_ID)
    proc = migrate(db, store, "--agent", agent, check=False)
    report = report_of(proc)
    assert report["ok"], report["verification"]["problems"]
    st = Store.open(str(store.path), Credentials(passphrases=[store.passfile.read_bytes().strip()]))
    try:
        w = HomeWriter(VFS(st))
        memory = w.resolve("MEMORY.md")
        assert memory is not None and w.read(memory).startswith(b"# Research agent memory")  # shadows the shared one
        assert w.resolve("USER.md") is not None  # shared, not shadowed: kept
        assert w.resolve(f"agents/{agent}") is None
    finally:
        st.close()


def test_oversized_metadata_keeps_the_document(server: idb.PgServer, tmp_path: Path) -> None:
    db = idb.make_database(server, 34)
    with psycopg.connect(db.uri, autocommit=True) as conn:
        conn.execute("UPDATE memory_documents SET metadata = jsonb_build_object('blob', repeat('x', 70000)) "
                     "WHERE path = 'USER.md' AND user_id = 'default'")
    store = make_store(tmp_path)
    report = report_of(migrate(db, store))
    assert report["ok"] and any("xattr limit" in w for w in report["warnings"])
    assert report["verification"]["documents_mismatched"] == 0
