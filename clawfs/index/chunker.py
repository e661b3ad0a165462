"""The chunker: which files are text, and how their text is cut into chunks an embedder takes whole.

This module owns the rules for both (`is_indexable`, `chunk_text`); it knows nothing of models beyond the token
counter it is handed, so it imports no machine-learning library.

How text is cut (`chunk_text`):
- A Markdown ATX heading (`#` .. `######`, outside fenced code) starts a new chunk; a section that is only its
  heading line is kept with the section after it, so a chunk is never just a title.
- Inside a section, chunks end preferably at a paragraph break (a paragraph that fits a chunk is never split),
  else at a sentence or line end, else between words, else (one enormous "word") inside it.
- Every chunk's count by the given counter is at most `max_tokens`; consecutive chunks of one section overlap
  by about `overlap_tokens` (the overlap starts at a sentence or word start).
- Chunks carry character offsets into the original text: `text[chunk.start:chunk.end] == chunk.text`.

Speed: the text is split once into "atoms" (runs of up to 16 non-space characters) and chunk sizes are
estimated as atoms times a tokens-per-atom ratio measured on the text itself; the counter is called once per
chunk to verify (plus once to calibrate, plus a retry when an estimate was too optimistic), never per word,
and never twice for the same span (a short text's calibration span is its only chunk).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass

TokenCounter = Callable[[str], int]

_ATOM = re.compile(r"\S{1,16}")
_BLOCK_MARK = re.compile(r"^[ \t]{0,3}(?:(?P<fence>`{3,}|~{3,})|(?P<head>#{1,6})(?=[ \t\r]|$))", re.MULTILINE)
_SENTENCE_END = ".!?"
_CLOSERS = "\"')]*_"
_FILL = 0.95  # estimates aim this far below max_tokens, so most chunks verify at the first try
_CALIBRATION_ATOMS = 256
_MIN_RATIO = 0.05


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a text: `text == original[start:end]` (character offsets)."""

    start: int
    end: int
    text: str


def is_indexable(data: bytes, *, max_bytes: int) -> str | None:
    """The text of `data` if it is a UTF-8 text file of at most `max_bytes`, else None (binary or too large).

    Binary means: a NUL byte anywhere, or bytes that are not valid UTF-8.
    """
    if len(data) > max_bytes or b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def chunk_text(text: str, *, max_tokens: int, overlap_tokens: int, count_tokens: TokenCounter) -> list[Chunk]:
    """Cut `text` into Markdown-aware chunks of at most `max_tokens` tokens by `count_tokens` (see module doc).

    `overlap_tokens` must be below half of `max_tokens`. Whitespace-only text gives no chunks. Raises ValueError
    if the counter says 16 characters are more than `max_tokens` tokens (no cut could then satisfy it).
    """
    if max_tokens < 1 or not 0 <= overlap_tokens < max(1, max_tokens // 2):
        raise ValueError(
            f"need max_tokens >= 1 and 0 <= overlap_tokens < max_tokens/2, got {max_tokens} and {overlap_tokens}"
        )
    return _Chunker(text, max_tokens, overlap_tokens, count_tokens).run()


class _Atoms:
    """The text's atoms and, as sorted atom indices, where words, sentences, lines and paragraphs start."""

    def __init__(self, text: str) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for m in _ATOM.finditer(text):
            self.starts.append(m.start())
            self.ends.append(m.end())
        self.words: list[int] = []  # atoms that start a word (not the continuation of a long one)
        self.sentences: list[int] = []  # ... that start a sentence or a line
        self.lines: list[int] = []  # ... that start a line
        self.paragraphs: list[int] = []  # ... that follow a blank line
        self._classify(text)

    def __len__(self) -> int:
        return len(self.starts)

    def _classify(self, text: str) -> None:
        starts, ends = self.starts, self.ends
        for i in range(1, len(starts)):
            gap_start, gap_end = ends[i - 1], starts[i]
            if gap_start == gap_end:
                continue  # the next 16 characters of a long word
            self.words.append(i)
            newlines = text.count("\n", gap_start, gap_end)
            if newlines:
                self.sentences.append(i)
                self.lines.append(i)
                if newlines > 1:
                    self.paragraphs.append(i)
            elif _ends_sentence(text, starts[i - 1], gap_start):
                self.sentences.append(i)


def _ends_sentence(text: str, start: int, end: int) -> bool:
    """Does the atom text[start:end] end with . ! or ? (possibly followed by quotes or brackets)?"""
    while end > start and text[end - 1] in _CLOSERS:
        end -= 1
    return end > start and text[end - 1] in _SENTENCE_END


def _after(sorted_list: list[int], lo: int, hi: int) -> int | None:
    """The last element x of sorted_list with lo < x <= hi."""
    k = bisect_right(sorted_list, hi)
    return sorted_list[k - 1] if k and sorted_list[k - 1] > lo else None


def _from(sorted_list: list[int], lo: int, hi: int) -> int | None:
    """The first element x of sorted_list with lo <= x < hi."""
    k = bisect_left(sorted_list, lo)
    return sorted_list[k] if k < len(sorted_list) and sorted_list[k] < hi else None


class _Chunker:
    """One run of chunk_text: sections, then greedy packing per section with estimate-verify-shrink."""

    def __init__(self, text: str, max_tokens: int, overlap_tokens: int, count: TokenCounter) -> None:
        self.text = text
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.count = count
        self.atoms = _Atoms(text)
        self.ratio = 1.0  # estimated tokens per atom, re-measured on every verified chunk
        self.chunks: list[Chunk] = []
        self._counted: dict[tuple[int, int], int] = {}

    def _count(self, lo: int, hi: int) -> int:
        """Tokens in text[lo:hi], each span counted once (a short text's calibration span is also its chunk)."""
        key = (lo, hi)
        if key not in self._counted:
            self._counted[key] = self.count(self.text[lo:hi])
        return self._counted[key]

    def run(self) -> list[Chunk]:
        n = len(self.atoms)
        if n == 0:
            return []
        self._calibrate(min(n, _CALIBRATION_ATOMS))
        cuts = self._section_starts()
        for s, t in zip(cuts, [*cuts[1:], n], strict=True):
            self._pack_section(s, t)
        return self.chunks

    def _span(self, a: int, b: int) -> tuple[int, int]:
        return self.atoms.starts[a], self.atoms.ends[b - 1]

    def _calibrate(self, k: int) -> None:
        self.ratio = max(self._count(*self._span(0, k)) / k, _MIN_RATIO)

    def _section_starts(self) -> list[int]:
        """Atom indices where sections start: 0 and each heading, except after a heading-only section."""
        headings: list[int] = []
        in_fence = False
        for m in _BLOCK_MARK.finditer(self.text):
            if m.group("fence"):
                in_fence = not in_fence
            elif not in_fence:
                headings.append(bisect_left(self.atoms.starts, m.start("head")))
        cuts = [0]
        heading_set = set(headings)
        for h in headings:
            prev = cuts[-1]
            if h == prev or (prev in heading_set and _after(self.atoms.lines, prev, h - 1) is None):
                continue  # the section so far is only a heading line: it stays with what follows
            cuts.append(h)
        return cuts

    def _pack_section(self, s: int, t: int) -> None:
        start, prev_end = s, -1
        while True:
            start, end = self._fit(start, prev_end, t)
            lo, hi = self._span(start, end)
            self.chunks.append(Chunk(lo, hi, self.text[lo:hi]))
            if end >= t:
                return
            start, prev_end = self._overlap_start(start, end), end

    def _budget_atoms(self) -> int:
        return max(1, int(self.max_tokens * _FILL / self.ratio))

    def _fit(self, start: int, prev_end: int, t: int) -> tuple[int, int]:
        """The chunk [start, end) of atoms, start as asked (or prev_end if the overlap leaves no room), verified."""
        jmax = start + self._budget_atoms()
        while True:
            end = t if jmax >= t else self._choose_end(start, jmax, t)
            if end <= prev_end:  # the overlap left no room for anything new: start without it
                start, prev_end = prev_end, -1
                jmax = start + self._budget_atoms()
                continue
            lo, hi = self._span(start, end)
            tokens = self._count(lo, hi)
            if end - start >= 8:
                self.ratio = max(tokens / (end - start), _MIN_RATIO)
            if tokens <= self.max_tokens:
                return start, end
            if end - start == 1:
                raise ValueError(f"{self.max_tokens} tokens cannot hold {hi - lo} characters by this counter")
            jmax = start + max(1, min(end - start - 1, int((end - start) * self.max_tokens * _FILL / tokens)))

    def _choose_end(self, pos: int, jmax: int, t: int) -> int:
        """Where to end a chunk that starts at atom pos and may reach atom jmax (< t): a natural break."""
        atoms = self.atoms
        half = pos + (jmax - pos) // 2
        para = _after(atoms.paragraphs, pos, jmax)
        if para is not None:
            para_end = _from(atoms.paragraphs, para + 1, t) or t
            if (para_end - para) * self.ratio <= self.max_tokens * _FILL:
                return para  # the next paragraph fits a chunk whole: start a chunk with it
        sentence = _after(atoms.sentences, max(half, para or pos), jmax)
        if sentence is not None:
            return sentence
        if para is not None:
            return para
        word = _after(atoms.words, half, jmax)
        return word if word is not None else jmax

    def _overlap_start(self, start: int, end: int) -> int:
        """Where the chunk after [start, end) starts: about overlap_tokens back, at a sentence or word start."""
        k = round(self.overlap_tokens / self.ratio)
        if k <= 0:
            return end
        lo = max(start + 1, end - k)
        sentence = _from(self.atoms.sentences, lo, end)
        if sentence is not None and end - sentence >= k // 2:
            return sentence
        word = _from(self.atoms.words, lo, end)
        return word if word is not None else end
