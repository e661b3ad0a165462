"""Unit tests of the IronClaw migrator's pure parts: path checks, scopes, JSON of PostgreSQL values, secrets."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrations.ironclaw import layout, schema, secrets
from migrations.ironclaw.layout import BadPath, Scopes


@pytest.mark.parametrize("path", ["MEMORY.md", "daily/2026-03-01.md", "projects/garden/plan.md", "daily/.config",
                                  "notes/café ☕.md"])
def test_good_paths(path: str) -> None:
    assert layout.check_path(path) == path


@pytest.mark.parametrize(("path", "why"), [
    ("/etc/passwd", "absolute"), ("../../escape.md", "'..'"), ("notes/../../x.md", "'..'"),
    ("a\x00b", "NUL"), ("a//b", "empty"), ("./x", "not a file name"), ("bad\udcff.md", "UTF-8"),
    ("x" * 256, "longer"), ("secrets/k", "reserved"), (".clawfs/x", "reserved"), ("", "empty"),
])
def test_bad_paths_are_refused_with_a_reason(path: str, why: str) -> None:
    with pytest.raises(BadPath, match=why):
        layout.check_path(path)


def test_scopes() -> None:
    s = Scopes("default", None)
    assert s.user("default") == "" and s.user(None) == ""
    assert s.user("alice") == "users/alice/"
    agent = uuid.UUID(int=7)
    assert s.document("default", agent) == f"agents/{agent}/"
    assert Scopes("default", str(agent)).document("default", agent) == ""
    with pytest.raises(BadPath):
        s.user("../root")


def test_json_of_postgres_values() -> None:
    row = {"id": uuid.UUID(int=1), "cost": decimal.Decimal("0.000123"), "blob": b"\x00\xff",
           "at": dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)}
    out = json.loads(layout.json_line(row))
    assert out == {"id": str(uuid.UUID(int=1)), "cost": "0.000123", "blob": "AP8=", "at": "2026-03-01T09:00:00+00:00"}
    assert layout.ns(row["at"]) == 1772355600 * 10**9


def _ironclaw_encrypt(master_key: str, plaintext: bytes) -> tuple[bytes, bytes]:
    """IronClaw's scheme, written out independently of the migrator (shared/IRONCLAW.md section 3)."""
    salt = os.urandom(32)
    key = HKDF(hashes.SHA256(), 32, salt, b"near-agent-secrets-v1").derive(master_key.encode())
    nonce = os.urandom(12)
    return salt, nonce + AESGCM(key).encrypt(nonce, plaintext, None)


def test_secret_decrypts_and_wrong_key_is_refused() -> None:
    key = os.urandom(32).hex()
    salt, blob = _ironclaw_encrypt(key, b"sk-test-123")
    assert secrets.decrypt(key, salt, blob) == b"sk-test-123"
    with pytest.raises(secrets.WrongMasterKey):
        secrets.decrypt(os.urandom(32).hex(), salt, blob)
    with pytest.raises(secrets.WrongMasterKey):
        secrets.decrypt(key, salt, blob[:-1] + bytes([blob[-1] ^ 1]))


def test_master_key_file_forms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = "ab" * 32
    (tmp_path / "bare").write_text(key + "\n")
    (tmp_path / "env").write_text(f"LLM_BACKEND=nearai\nSECRETS_MASTER_KEY=\"{key}\"\n")
    assert secrets.read_master_key(str(tmp_path / "bare")) == key
    assert secrets.read_master_key(str(tmp_path / "env")) == key
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="no master key"):
        secrets.read_master_key(str(tmp_path / "empty"))


def test_version_detection_by_inspection() -> None:
    v1 = {"memory_documents": ["id"], "agent_jobs": ["id", "title"]}
    assert schema.detect_version(v1) == 1
    v9 = {**v1, "secrets": [], "routines": [], "settings": [], "job_events": [],
          "agent_jobs": ["id", "project_dir", "job_mode"]}
    assert schema.detect_version(v9) == 8
    assert schema.detect_version({**v9, "root_filesystem_entries": []}) == 26
