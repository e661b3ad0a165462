"""A home migrated from IronClaw (the PostgreSQL fixture, schema V34) runs the agent: `clawfs agent init` adds only
what the migration did not write, a question about its memory is answered from the migrated note, the migrated
thread's history is read in IronClaw's layout, and the migrated routine row is understood."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ironclaw_db as idb
import pytest
from agent_home import Home, llm_toml, running
from faults import clawfs
from helpers import make_store, run
from llm_server import ScriptedLLM

pytestmark = [pytest.mark.pg, pytest.mark.fuse]


@pytest.fixture
def migrated(pg_server: idb.PgServer, tmp_path: Path) -> Iterator[Home]:
    db = idb.make_database(pg_server, 34)
    store = make_store(tmp_path)
    keyfile = tmp_path / "ironclaw-master-key"
    keyfile.write_text(db.master_key + "\n")
    proc = clawfs("migrate", db.uri, "--to", str(store.path), *store.key_args(), "--json",
                  "--secrets-master-key-file", str(keyfile), timeout=600)
    assert proc.returncode == 0, proc.stderr
    run("reindex", str(store.path), *store.key_args(), "--embedder", "hashing-384")
    mnt = tmp_path / "mnt"
    store.mount(mnt, index=True)
    llm = ScriptedLLM().start()
    try:
        yield Home(store, mnt, llm)
    finally:
        llm.stop()
        store.umount(mnt)
        store.assert_clean()


def test_a_migrated_home_answers_from_its_memory(migrated: Home) -> None:
    home = migrated
    soul_before = (home.mnt / "SOUL.md").read_bytes() if (home.mnt / "SOUL.md").exists() else None
    created = json.loads(run("agent", "init", str(home.mnt), "--json").stdout)["created"]
    assert "settings/llm.toml" in created and "conversations/" not in created
    if soul_before is not None:
        assert (home.mnt / "SOUL.md").read_bytes() == soul_before, "init never overwrites a migrated file"
    (home.mnt / "settings" / "llm.toml").write_text(llm_toml(home.llm.base_url))
    home.wait_indexed()
    [thread] = sorted((home.mnt / "conversations" / "telegram").glob("*.jsonl"))
    with running(home) as rt:
        reply = home.reply_to(home.send("when must the Soil Carbon Futures grant application be submitted?",
                                        thread=thread.stem, channel="telegram"), channel="telegram")
        assert "morning-briefing.toml" not in rt._routine_errors, rt._routine_errors
    assert "soil-carbon-futures.md" in reply and "15 March 2026" in reply, reply
    history = [m for m in home.llm.requests[0]["messages"] if m["role"] in ("user", "assistant")]
    assert history[0]["content"] == "When is the grant application due again?", "the migrated thread is history"
    routines = json.loads((home.mnt / ".agent" / "routines.json").read_text())
    assert routines["morning-briefing"]["schedule"] == "0 9 * * *"
    lines = thread.read_text().splitlines()
    assert json.loads(lines[-1])["role"] == "assistant", "the turn is appended to the migrated thread"
