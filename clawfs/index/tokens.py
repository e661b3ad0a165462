"""Blind full-text tokens and rank fusion: BM25 over an FTS5 table that never holds a plaintext word.

This module owns the text side of hybrid search:
    * `tokenize`: NFKC-normalised, case-folded runs of Unicode letters and digits (underscore and punctuation
      separate words, as FTS5's unicode61 tokenizer does).  No stop words are dropped: BM25's idf already
      discounts common words, and short tokens such as "id" or "v2" are often the point of a query.
    * `Blinder`: each token becomes
      "t" + base32(HMAC-SHA256(key, token)[:10]) -- 17 characters of [a-z2-7], one FTS5 token that cannot be
      read as an operator.  The map is one-to-one in practice (80 bits), so term
      frequencies, document lengths and therefore BM25 scores are exactly those of the plaintext tokens, while the
      table holds only keyed hashes.  The key is the store's "tokens" subkey (`Envelope.subkey("tokens")`).
      What it does not hide: equal words in different files have equal tokens, so token frequencies (and the
      word count of each chunk) are visible to whoever reads the raw database.
    * `Blinder.query`: an FTS5 MATCH expression, an OR of the quoted blinded query tokens.
    * `rrf_fuse`: Reciprocal Rank Fusion of several rankings (BM25 and vector).
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Iterable, Sequence

from ..crypto import PrefixedMac

TOKEN_BYTES = 10
PREFIX = "t"
RRF_K = 60
_DOMAIN = b"clawfs/v1/token\x00"
_WORD = re.compile(r"[^\W_]+")


_STOP = """
    a an and are as at be but by do does did for from had has have how i if in into is it its me my no not of on or
    our so than that the their them then there these they this to was we were what when where which who why will
    with you your about after before over under up down out
"""
STOP_WORDS = frozenset(_STOP.split())
"""Left out of full-text queries: rank fusion sees only ranks, so a note sharing nothing but "a" with the query
would otherwise tie with the best match by meaning."""


def tokenize(text: str) -> list[str]:
    """Lower-case words of `text` in order, repeats kept (term frequency matters to BM25)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


class Blinder:
    """`blind` for one key, remembering the tokens of recent words.

    Words repeat heavily across an agent's files, so most of an indexing run's HMACs are of words seen
    before; the memo (bounded: cleared when full) turns those into a dict lookup.  It holds plaintext words,
    as the indexing process already holds the plaintext files; it is never written anywhere.
    """

    MAX_WORDS = 1 << 17

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the token key must be at least 16 bytes")
        self._mac = PrefixedMac(key, _DOMAIN)
        self._memo: dict[str, str] = {}

    def token(self, word: str) -> str:
        found = self._memo.get(word)
        if found is None:
            if len(self._memo) >= self.MAX_WORDS:
                self._memo.clear()
            mac = self._mac.digest(word.encode("utf-8", "surrogatepass"))
            found = self._memo[word] = PREFIX + base64.b32encode(mac[:TOKEN_BYTES]).decode("ascii").lower()
        return found

    def blind(self, words: Iterable[str]) -> list[str]:
        """Each word replaced by its keyed, truncated HMAC in an FTS5-safe alphabet; order and repeats kept."""
        return [self.token(w) for w in words]

    def text(self, text: str) -> str:
        """The FTS5 column value for `text`: its blinded tokens separated by spaces."""
        return " ".join(self.blind(tokenize(text)))

    def query(self, query: str) -> str:
        """An FTS5 MATCH expression for `query` (OR of its distinct blinded tokens, quoted).

        Empty when the query has no word at all: the caller then skips the full-text side (an empty MATCH is
        an FTS5 syntax error).
        """
        words = tokenize(query)
        distinct = list(dict.fromkeys([w for w in words if w not in STOP_WORDS] or words))
        return " OR ".join(f'"{token}"' for token in self.blind(distinct))


def rrf_fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal Rank Fusion: score(id) = sum over rankings of 1 / (k + rank), rank counted from 1.

    Best first; ties go to the id with the better single rank, then the smaller id.  An id repeated within
    one ranking counts once, at its first position.
    """
    if k < 0:
        raise ValueError("k must not be negative")
    score: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in rankings:
        seen: set[int] = set()
        for rank, doc in enumerate(ranking, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            score[doc] = score.get(doc, 0.0) + 1.0 / (k + rank)
            best[doc] = min(best.get(doc, rank), rank)
    order = sorted(score, key=lambda d: (-score[d], best[d], d))
    return [(d, score[d]) for d in order]
