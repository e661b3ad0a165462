"""The leak-pattern detector: IronClaw's pattern set (`crates/ironclaw_safety/src/leak_detector.rs`), store-free.

Used on every tool output and outbound reply by the agent runtime, by the WASM tool host on HTTP traffic and by
the egress proxy.  It imports nothing of ClawFS (nor of agent/): a jailed runtime pulls no store code in.

Each pattern carries IronClaw's action:
- `block`: the text must not go out at all (API keys, private keys, bot tokens);
- `redact`: the match is masked (bearer tokens, `Authorization:` headers) and the rest goes out;
- `warn`: reported only.  The 64-hex / high-entropy heuristic is warn-only on purpose: IronClaw's users report
  false blocks on hashes and IDs (#6572, #6676).

Exact matches of the store's own secret values are NOT checked here: those values live outside the runtime, and
the mount daemon and the egress proxy check them where they are.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

Action = Literal["block", "redact", "warn"]


@dataclass(frozen=True)
class Finding:
    """One match: the pattern's name, what to do about it, where it is (character offsets) and a masked preview."""

    pattern: str
    action: Action
    start: int
    end: int
    masked: str


@dataclass(frozen=True)
class Pattern:
    name: str
    regex: re.Pattern[str]
    action: Action


def _p(name: str, regex: str, action: Action = "block", flags: int = 0) -> Pattern:
    return Pattern(name, re.compile(regex, flags), action)


# IronClaw's set (shared/IRONCLAW.md §4 "Leak detector"), plus the DB seed's extras (aws secret key context,
# discord, mailchimp).  Boundaries keep a key embedded in a longer token from hiding.
PATTERNS: tuple[Pattern, ...] = (
    _p("anthropic_api_key", r"sk-ant-api\d{0,2}-[A-Za-z0-9_\-]{90,}"),
    _p("anthropic_oauth", r"sk-ant-oat\d{2}-[A-Za-z0-9_\-]{20,}"),
    _p("openrouter_api_key", r"sk-or-v1-[A-Za-z0-9]{32,}"),
    _p("openai_api_key", r"(?<![A-Za-z0-9])sk-(?:proj-)?[A-Za-z0-9_\-]{20,}"),
    _p("aws_access_key", r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"),
    _p("aws_secret_key", r"(?i)aws_?secret_?access_?key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}"),
    _p("github_token", r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{36,}"),
    _p("github_pat", r"github_pat_[A-Za-z0-9_]{22,}"),
    _p("stripe_key", r"(?<![A-Za-z0-9])[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    _p("nearai_session", r"(?<![A-Za-z0-9])sess_[A-Za-z0-9]{32,}"),
    _p("ssh_private_key", r"-----BEGIN OPENSSH PRIVATE KEY-----"),
    _p("pem_private_key", r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    _p("google_api_key", r"AIza[0-9A-Za-z_\-]{35}"),
    _p("slack_token", r"xox[baprs]-[A-Za-z0-9\-]{10,}"),
    _p("twilio_api_key", r"(?<![A-Za-z0-9])SK[0-9a-fA-F]{32}(?![0-9a-fA-F])"),
    _p("sendgrid_api_key", r"SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"),
    _p("telegram_bot_token", r"(?<!\d)\d{8,12}:AA[A-Za-z0-9_\-]{30,}"),
    _p("groq_api_key", r"(?<![A-Za-z0-9])gsk_[A-Za-z0-9]{20,}"),
    _p("discord_bot_token", r"(?<![A-Za-z0-9])[MN][A-Za-z\d]{23,25}\.[\w\-]{6}\.[\w\-]{27,}"),
    _p("mailchimp_api_key", r"(?<![0-9a-f])[0-9a-f]{32}-us\d{1,2}(?!\d)"),
    _p("bearer_token", r"(?i)\bbearer\s+[A-Za-z0-9_\-\.=+/]{16,}", "redact"),
    _p("authorization_header", r"(?im)^\s*authorization\s*:\s*\S[^\r\n]*", "redact"),
    _p("high_entropy_hex", r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])", "warn"),
)

_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{32,}")
ENTROPY_BITS = 4.5  # bits per character above which a long token looks random (hex tops out at 4.0)


def mask(secret: str) -> str:
    """IronClaw's mask: the first 4 and last 4 characters around at most 8 stars (short values: all stars)."""
    if len(secret) <= 12:
        return "*" * len(secret)
    return secret[:4] + "*" * min(8, len(secret) - 8) + secret[-4:]


def _entropy(token: str) -> float:
    counts = Counter(token)
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def scan(text: str) -> list[Finding]:
    """Every leak-pattern match in `text`, in order of position; overlapping weaker matches are dropped (a key
    found by a `block` pattern is not reported again as high entropy)."""
    found: list[Finding] = []
    for p in PATTERNS:
        for m in p.regex.finditer(text):
            found.append(Finding(p.name, p.action, m.start(), m.end(), mask(m.group(0))))
    for m in _TOKEN.finditer(text):
        if _entropy(m.group(0)) >= ENTROPY_BITS:
            found.append(Finding("high_entropy_token", "warn", m.start(), m.end(), mask(m.group(0))))
    return _without_overlaps(found)


_RANK = {"block": 0, "redact": 1, "warn": 2}


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (_RANK[f.action], f.start, -(f.end - f.start))):
        if not any(f.start < k.end and k.start < f.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def blocked(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.action == "block"]


def redact(text: str) -> tuple[str, list[Finding]]:
    """`text` with every `redact` match masked, and all findings (the caller refuses the text if any `block`
    finding is among them: masking a private key's header would not make the key safe to send)."""
    findings = scan(text)
    out, last = [], 0
    for f in findings:
        if f.action == "redact":
            out.append(text[last:f.start])
            out.append(f"[REDACTED {f.pattern}]")
            last = f.end
    out.append(text[last:])
    return "".join(out), findings


def describe(findings: list[Finding]) -> str:
    """A one-line summary for logs and refusals (pattern names and masked previews; never the value)."""
    return ", ".join(f"{f.pattern} ({f.action}: {f.masked})" for f in findings)
