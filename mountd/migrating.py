"""`clawfs migrate`'s terminal side: a progress bar per table, the summary, the exit code.

The work itself is in migrations/ironclaw/; this module only shows it.  Progress goes to stderr: a rich bar
per table on a terminal, or with `--progress` elsewhere (CI logs, pipes) one plain line per table every
PLAIN_EVERY rows (or tenth of the table) and when it completes.
"""

from __future__ import annotations

from typing import Any

from .ui import Progress

PLAIN_EVERY = 5000  # rows between plain progress lines (or a tenth of the table, when that is fewer)
EXIT_SKIPPED = 3  # finished and verified, but some rows were skipped (listed in the report)


def table_progress(enabled: bool) -> Progress:
    """Progress per table (a task named after the table), in the shape migrations.ironclaw.run.Progress asks."""
    return Progress(enabled, every_items=PLAIN_EVERY, label="clawfs: migrate: ")


def summary(report: dict[str, Any]) -> str:
    """The human-readable report: where the data came from, what landed, what did not, the verification."""
    if report.get("dry_run"):
        return _plan_text(report)
    src = report["source"]
    lines = [f"migrated {src['database']} (IronClaw schema V{src['schema_version']}, by {src['detected_by']}) "
             f"into {report['store']}" + (" (resumed)" if report["resumed"] else ""),
             f"{'table':<36}{'source':>9}{'migrated':>10}{'skipped':>9}{'not sel.':>9}"]
    for table, c in report["verification"]["counts"].items():
        lines.append(f"{table:<36}{c['source']:>9}{c['migrated']:>10}{c['skipped']:>9}{c['not_selected']:>9}")
    f = report["files"]
    lines.append(f"files: {f['created']} created, {f['updated']} updated, {f['unchanged']} unchanged; "
                 f"{report['elapsed_s']:.1f} s, {report['documents_per_s']} documents/s")
    v = report["verification"]
    lines.append(f"verified: {v['documents_checked']} documents by sha256, {v['documents_mismatched']} mismatched")
    lines.append(f"embeddings: {report['embeddings']['action']} ({report['embeddings']['why']})")
    lines.extend(f"skipped: {s['table']} {s['id']}: {s['reason']}" for s in report["skipped"])
    lines.extend(f"warning: {w}" for w in report["warnings"])
    lines.extend(f"PROBLEM: {p}" for p in v["problems"])
    lines.append(f"report saved in the store: {report.get('report_path', 'settings/migration/')}")
    return "\n".join(lines)


def _plan_text(report: dict[str, Any]) -> str:
    src = report["source"]
    lines = [f"dry run: {src['database']} (IronClaw schema V{src['schema_version']}, by {src['detected_by']}) "
             f"-> {report['store']}; nothing written"]
    lines.extend(f"  {table:<36}{n:>9} rows" for table, n in report["counts"].items())
    lines.extend(f"  refused: document {b['id']}: {b['reason']}" for b in report["documents_refused"])
    lines.append(f"  secrets: {report['secrets']}")
    lines.append(f"  embeddings: {report['embeddings']['action']}")
    lines.extend(f"  not migrated: {t} ({why})" for t, why in report["not_migrated"].items())
    return "\n".join(lines)


def exit_code(report: dict[str, Any]) -> int:
    if report.get("dry_run"):
        return 0
    if not report["ok"]:
        return 1
    return EXIT_SKIPPED if report["skipped"] else 0
