"""What a search or similarity query answers: `Hit`, typed from the engine through the control tree to the CLI.

Kept free of numpy and the engine, so `clawfs/control.py` and the CLI can take hits without loading the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One file found: its inode and path (relative to the root), fused score, best vector similarity (None:
    found by words alone) and a snippet of its best chunk."""

    ino: int
    path: bytes
    score: float
    similarity: float | None
    snippet: str

    def to_json(self, rank: int) -> dict[str, Any]:
        """The JSON form of `.results.json` and `clawfs search --json` (the path surrogate-escaped)."""
        return {"path": self.path.decode("utf-8", "surrogateescape"), "score": self.score,
                "similarity": self.similarity, "snippet": self.snippet, "rank": rank}


@dataclass
class SearchResult:
    hits: list[Hit]
    query_tokens: int
    truncated: bool
