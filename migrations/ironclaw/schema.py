"""What clawfs knows about IronClaw's schema versions (V1..V34, shared/IRONCLAW.md section 1).

`detect_version` names the version of a database without refinery's history table, from the tables and columns
it has: each marker below is the first migration that creates it, so the newest marker present is the version
(a lower bound when later migrations only changed functions or indexes, which the migrator does not read).
"""

from __future__ import annotations

KNOWN_VERSION = 34

# (version, table, column or None): present from that migration on
MARKERS: list[tuple[int, str, str | None]] = [
    (2, "secrets", None),
    (2, "wasm_tools", None),
    (3, "tool_failures", None),
    (4, "agent_jobs", "project_dir"),
    (5, "agent_jobs", "job_mode"),
    (6, "routines", None),
    (7, "job_events", None),
    (8, "settings", None),
    (10, "wasm_channels", None),
    (12, "agent_jobs", "max_tokens"),
    (14, "users", None),
    (15, "conversations", "source_channel"),
    (16, "memory_document_versions", None),
    (17, "user_identities", None),
    (19, "channel_identities", None),
    (20, "pairing_requests", None),
    (22, "agent_jobs", "restart_params"),
    (26, "root_filesystem_entries", None),
]


def detect_version(columns: dict[str, list[str]]) -> int:
    version = 1
    for v, table, column in MARKERS:
        if table in columns and (column is None or column in columns[table]):
            version = max(version, v)
    return version
