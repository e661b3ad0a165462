"""Blind full-text tokens: deterministic per key, no plaintext, BM25 over FTS5 ranks as on plaintext; RRF."""

from __future__ import annotations

import re

import apsw
import pytest

from clawfs.index.tokens import Blinder, rrf_fuse, tokenize


def blind(tokens: list[str], key: bytes) -> list[str]:
    return Blinder(key).blind(tokens)


def blind_text(text: str, key: bytes) -> str:
    return Blinder(key).text(text)


def blind_query(query: str, key: bytes) -> str:
    return Blinder(key).query(query)


KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

DOCS = [
    "Groceries: milk, eggs, bread. Remember the bakery closes early on Sunday.",
    "Project Falcon deadline moved to March 14; the deadline for the invoice is Friday.",
    "Meeting notes: we discussed the falcon migration and the budget for next quarter.",
    "Recipe: whisk eggs with sugar, fold in flour, bake for 25 minutes.",
    "Invoice #4471 from Acme Corp, due Friday, payment by bank transfer.",
]


def test_tokenize_is_unicode_aware_and_keeps_digits() -> None:
    assert tokenize("Hello, World! snake_case v2 -- 42") == ["hello", "world", "snake", "case", "v2", "42"]
    fullwidth = "\uff34\uff45\uff53\uff54\uff11\uff12"  # NFKC makes it "Test12"
    assert tokenize(f"\u00c9COLE Stra\u00dfe \ufb01le {fullwidth}") == ["\u00e9cole", "strasse", "file", "test12"]
    assert tokenize("a I ok") == ["a", "i", "ok"]  # short tokens are kept
    assert tokenize("?!  ...") == []


def test_blinding_is_deterministic_per_key_and_differs_across_keys() -> None:
    tokens = tokenize("the deadline is the deadline")
    first, again, other = blind(tokens, KEY), blind(tokens, KEY), blind(tokens, OTHER_KEY)
    assert first == again and first[1] == first[4] and first[0] == first[3]
    assert len(set(first)) == 3
    assert not set(first) & set(other)
    assert all(re.fullmatch(r"t[a-z2-7]{16}", t) for t in first + other)
    with pytest.raises(ValueError):
        blind(tokens, b"short")


def test_no_plaintext_survives_blinding() -> None:
    text = " ".join(DOCS)
    blinded = blind_text(text, KEY)
    words = {w for w in tokenize(text) if len(w) >= 5}
    assert words and not [w for w in words if w in blinded]
    assert not [w for w in words if w in blind_query(text, KEY)]


def _ranked(conn: apsw.Connection, table: str, match: str) -> list[tuple[int, float]]:
    sql = f"SELECT rowid, bm25({table}) FROM {table} WHERE {table} MATCH ? ORDER BY bm25({table})"
    return [(int(r), float(s)) for r, s in conn.execute(sql, (match,))]


def test_bm25_over_blinded_tokens_ranks_like_plaintext() -> None:
    conn = apsw.Connection(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    conn.execute("CREATE VIRTUAL TABLE plain USING fts5(body)")
    for rowid, doc in enumerate(DOCS, start=1):
        conn.execute("INSERT INTO t(rowid, body) VALUES (?, ?)", (rowid, blind_text(doc, KEY)))
        conn.execute("INSERT INTO plain(rowid, body) VALUES (?, ?)", (rowid, " ".join(tokenize(doc))))
    for query, best in (("falcon deadline", 2), ("invoice Friday payment", 5), ("eggs flour", 4)):
        blinded = _ranked(conn, "t", blind_query(query, KEY))
        plain = _ranked(conn, "plain", " OR ".join(tokenize(query)))
        assert blinded[0][0] == best
        assert [r for r, _ in blinded] == [r for r, _ in plain]
        assert [s for _, s in blinded] == pytest.approx([s for _, s in plain])
    assert _ranked(conn, "t", blind_query("falcon", OTHER_KEY)) == []  # the wrong key finds nothing


def test_query_words_that_are_fts5_operators_are_safe() -> None:
    conn = apsw.Connection(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    conn.execute("INSERT INTO t(rowid, body) VALUES (1, ?)", (blind_text("not and or near NEAR(x) *", KEY),))
    assert [r for r, _ in _ranked(conn, "t", blind_query('NOT AND OR NEAR "x" *', KEY))] == [1]
    assert blind_query("?! ...", KEY) == ""


def test_rrf_fuse_matches_hand_computed_scores() -> None:
    fused = rrf_fuse([[1, 2, 3], [3, 1, 4]])
    expected = [(1, 1 / 61 + 1 / 62), (3, 1 / 63 + 1 / 61), (2, 1 / 62), (4, 1 / 63)]
    assert [i for i, _ in fused] == [i for i, _ in expected]
    assert [s for _, s in fused] == pytest.approx([s for _, s in expected])


def test_rrf_fuse_ties_repeats_and_custom_k() -> None:
    # 7 and 8 tie on score and on best rank: the smaller id first.  A repeat inside one ranking counts once.
    fused = rrf_fuse([[8, 7], [7, 8, 8]], k=0)
    assert [i for i, _ in fused] == [7, 8] and [s for _, s in fused] == pytest.approx([1.5, 1.5])
    assert [i for i, _ in rrf_fuse([[9], [5]])] == [5, 9]
    assert rrf_fuse([]) == [] and rrf_fuse([[], []]) == []
