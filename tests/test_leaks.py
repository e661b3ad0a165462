"""Unit tests of sandbox/leaks.py: IronClaw's pattern set blocks keys, redacts bearer tokens and Authorization
headers, and only warns on entropy (hashes and IDs are not blocked); the module pulls no store code in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandbox import leaks

KEYS = {
    "openai_api_key": "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1w",
    "anthropic_api_key": "sk-ant-api03-" + "x" * 95,
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_" + "a1B2c3D4e5" * 4,
    "github_pat": "github_pat_11ABCDEFG0123456789_abcdefghijkl",
    "stripe_key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "nearai_session": "sess_" + "0123456789abcdef" * 2,
    "pem_private_key": "-----BEGIN RSA PRIVATE KEY-----",
    "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----",
    "google_api_key": "AIza" + "SyD-abcdefghijklmnopqrstuvwxyz01234",
    "slack_token": "xoxb-123456789012-abcdefghij",
    "twilio_api_key": "SK" + "0123456789abcdef" * 2,
    "sendgrid_api_key": "SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
    "openrouter_api_key": "sk-or-v1-" + "0123456789abcdef" * 4,
    "anthropic_oauth": "sk-ant-oat01-" + "abcdefghijklmnopqrstuvwxyz",
    "telegram_bot_token": "123456789:AA" + "bcdefghijklmnopqrstuvwxyz0123456",
    "groq_api_key": "gsk_" + "abcdefghijklmnopqrstuvwxyz",
}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_each_key_kind_is_blocked_by_its_pattern(name: str) -> None:
    text = f"here is the value: {KEYS[name]} -- use it"
    found = leaks.blocked(leaks.scan(text))
    assert [f.pattern for f in found] == [name], leaks.describe(leaks.scan(text))
    f = found[0]
    assert text[f.start:f.end] == KEYS[name]
    assert KEYS[name] not in f.masked and KEYS[name] not in leaks.describe(found)


def test_bearer_tokens_and_authorization_headers_are_redacted_not_blocked() -> None:
    text = "GET / HTTP/1.1\nAuthorization: Basic dXNlcjpwYXNzd29yZA==\n\ncurl -H 'x: Bearer abcdefghijklmnop1234'"
    out, found = leaks.redact(text)
    assert {f.pattern for f in found} == {"authorization_header", "bearer_token"}
    assert all(f.action == "redact" for f in found)
    assert "dXNlcjpwYXNzd29yZA" not in out and "abcdefghijklmnop1234" not in out
    assert out.startswith("GET / HTTP/1.1\n[REDACTED authorization_header]")
    assert not leaks.blocked(found)


def test_hashes_and_ids_only_warn() -> None:
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    random_id = "Zx8Qp2Lm7Vr4Tn1Ks9Wd3Fh6Jb5Yc0Gu8Ae2Ro7Ni4"
    found = leaks.scan(f"commit {sha256} and request id {random_id}")
    assert [(f.pattern, f.action) for f in found] == [("high_entropy_hex", "warn"), ("high_entropy_token", "warn")]
    out, _ = leaks.redact(f"commit {sha256}")
    assert out == f"commit {sha256}", "a warning changes nothing"


def test_plain_prose_and_near_misses_find_nothing() -> None:
    for text in ("The deadline is March 3rd; ask Ada about the grant.",
                 "sk-short", "task-management-framework-for-everyone", "AKIA is a prefix", "skeleton key",
                 "Authorization is needed from the owner", ""):
        assert leaks.scan(text) == [], (text, leaks.describe(leaks.scan(text)))


def test_a_key_is_reported_once_by_its_strongest_pattern() -> None:
    key = KEYS["openai_api_key"]
    found = leaks.scan(f"Authorization: Bearer {key}")
    assert leaks.blocked(found), "a blocked key inside a redacted header still blocks"
    assert sorted(f.pattern for f in found) == ["openai_api_key"], leaks.describe(found)


def test_mask_shows_at_most_eight_characters() -> None:
    assert leaks.mask("abcdefghijklmnopqrstuvwxyz") == "abcd********wxyz"
    assert leaks.mask("short") == "*****"


def test_leaks_imports_nothing_of_the_store() -> None:
    code = "import sys, sandbox.leaks; bad = [m for m in sys.modules if m.split('.')[0] in ('clawfs', 'agent', " \
           "'mountd', 'migrations')]; print(bad); sys.exit(1 if bad else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
