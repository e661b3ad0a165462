"""The safety layer on every tool output and every outbound reply (IronClaw's pipeline, `ironclaw_safety`):

tool output -> cut to the size limit -> leak scan (block / redact; entropy only warns) -> injection sanitizer
(role markers neutralised) -> fenced as `<tool_output name="X">...</tool_output>` for the model.
Outbound reply -> leak scan: a `block` finding withholds the reply (the user is told why), `redact` masks.

The pattern detector is `sandbox/leaks.py` (store-free).  Exact matches of the store's own secret values are
checked where those values are, outside the runtime (the mount daemon, the egress proxy).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from sandbox import leaks

log = logging.getLogger(__name__)

# IronClaw's sanitizer literals (sanitizer.rs) and their severity; any critical one escapes the whole content.
INJECTION_LITERALS: dict[str, str] = {
    "ignore previous": "high", "ignore all previous": "critical", "disregard": "medium",
    "forget everything": "high", "you are now": "high", "act as": "medium", "pretend to be": "medium",
    "system:": "critical", "assistant:": "high", "user:": "high", "<|": "critical", "|>": "critical",
    "[inst]": "critical", "[/inst]": "critical", "new instructions": "high", "updated instructions": "high",
    "```system": "high",
}
_ROLE_LINE = re.compile(r"(?im)^(\s*)(system|assistant|user|developer|tool)(\s*:)")
_ESCAPES = (("<|", "\\<|"), ("|>", "|\\>"), ("[INST]", "\\[INST]"), ("[/INST]", "\\[/INST]"),
            ("[inst]", "\\[inst]"), ("[/inst]", "\\[/inst]"), ("\0", "\\0"))
_FENCE_CLOSE = re.compile(r"</\s*tool_output", re.I)


@dataclass
class Checked:
    text: str
    warnings: list[str] = field(default_factory=list)
    blocked: bool = False


def cut(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + f"\n[... output cut at {limit} bytes of {len(data)}]"


def injection_findings(text: str) -> list[tuple[str, str]]:
    low = text.lower()
    return [(lit, sev) for lit, sev in INJECTION_LITERALS.items() if lit in low]


def sanitize(text: str) -> tuple[str, list[str]]:
    """Neutralise what could pose as another role: `<|`, `[INST]`, a line starting `system:`; escaped always
    (cheap, and a model is not confused by a backslash), reported when IronClaw's literals are found."""
    found = injection_findings(text)
    for a, b in _ESCAPES:
        text = text.replace(a, b)
    text = _ROLE_LINE.sub(lambda m: f"{m.group(1)}[{m.group(2)}]{m.group(3)}", text)
    text = _FENCE_CLOSE.sub("<\\/tool_output", text)
    return text, [f"possible injection: {lit!r} ({sev})" for lit, sev in found]


def check_tool_output(name: str, text: str, limit: int) -> Checked:
    text = cut(text, limit)
    redacted, findings = leaks.redact(text)
    warnings = [f"leak {f.pattern} ({f.action})" for f in findings]
    if leaks.blocked(findings):
        log.warning("tool %s output withheld: %s", name, leaks.describe(leaks.blocked(findings)))
        body = (f"[output withheld: it contained what looks like a secret "
                f"({', '.join(sorted({f.pattern for f in leaks.blocked(findings)}))})]")
        return Checked(fence(name, body), warnings, blocked=True)
    clean, inj = sanitize(redacted)
    if inj or findings:
        log.info("tool %s output: %s", name, "; ".join(warnings + inj))
    return Checked(fence(name, clean), warnings + inj)


def fence(name: str, text: str) -> str:
    safe_name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    return f'<tool_output name="{safe_name}">\n{text}\n</tool_output>'


def check_reply(text: str) -> Checked:
    redacted, findings = leaks.redact(text)
    warnings = [f"leak {f.pattern} ({f.action})" for f in findings]
    if leaks.blocked(findings):
        log.warning("reply withheld: %s", leaks.describe(leaks.blocked(findings)))
        kinds = ", ".join(sorted({f.pattern for f in leaks.blocked(findings)}))
        return Checked(f"[My reply was withheld by the safety layer: it contained what looks like a secret "
                       f"({kinds}).]", warnings, blocked=True)
    if findings:
        log.info("reply: %s", "; ".join(warnings))
    return Checked(redacted, warnings)
