"""debian-docs: paragraphs of real text every Debian machine has offline (/usr/share/doc and the man pages,
troff stripped).  The tuner embeds them as a dataset; bench/search.py builds its stores from them."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# ---- debian-docs: a real corpus every Debian machine has offline -------------------------------------------

DOC_ROOT = Path("/usr/share/doc")
MAN_ROOT = Path("/usr/share/man")
CORPUS_VERSION = 1  # bump when the extraction below changes (it is part of the cache key)
MAN_FAMILY_CAP = 300  # at most this many pages of one generated family (16k gcloud_* pages would dominate)
_DOC_NAME = re.compile(r"^(readme|changelog|changes|news|copyright|authors|thanks|todo|faq|bugs|history|"
                       r"contributing|install|usage)([._-].*)?$|\.(txt|md|rst)$", re.IGNORECASE)
_TROFF_FONT = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_TROFF_ESC = re.compile(r"\\\*(\[[^\]]*\]|\(..|.)|\\[sn][+-]?(\(..|\[[^\]]*\]|\d+|.)|\\[ck&%|^:/,~0]")
_TROFF_CHAR = re.compile(r"\\\((..)|\\\[([^\]]*)\]")
_TROFF_CHARS = {"aq": "'", "lq": '"', "rq": '"', "oq": "'", "cq": "'", "em": "-", "en": "-", "hy": "-",
                "bu": "*", "co": "(c)", "dq": '"', "ti": "~", "ha": "^", "rs": "\\", "mi": "-", "pl": "+"}
_BREAKS = {"PP", "P", "LP", "TP", "TQ", "IP", "HP", "sp", "SH", "SS", "RS", "RE", "EX", "EE", "nf", "fi", "TH",
           "Sh", "Ss", "Pp", "Bl", "El", "It", "Bd", "Ed", "Dl", "D1"}
_TEXT_MACROS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "Nm", "Nd", "Ar", "Fl", "Pa", "Xr",
                "Em", "Sy", "Li", "Dq", "Qq", "Ql", "Va", "Ev", "Cm", "Ic", "Fn", "Ft", "Op"}
_WS = re.compile(r"\s+")

def corpus_files(doc_root: Path = DOC_ROOT, man_root: Path = MAN_ROOT) -> list[Path]:
    """Plain-text docs and English man pages, sorted (symlinks not followed, generated families capped)."""
    docs = sorted(Path(d) / f for d, _, files in os.walk(doc_root) for f in files
                  if _DOC_NAME.search(f.removesuffix(".gz")) and not (Path(d) / f).is_symlink())
    return docs + man_pages(man_root=man_root)


def man_pages(sections: Sequence[str] = ("man[0-9]*",), man_root: Path = MAN_ROOT) -> list[Path]:
    """The English man pages of these sections (glob patterns), sorted, symlinks not followed, at most
    MAN_FAMILY_CAP pages of one generated family (evenly spread over it)."""
    pages = sorted(p for s in sections for p in man_root.glob(f"{s}/*.gz") if not p.is_symlink())
    families: dict[str, list[Path]] = {}
    for p in pages:
        families.setdefault(p.name.split("_")[0] if "_" in p.name else p.name, []).append(p)
    kept: list[Path] = []
    for members in families.values():
        step = max(1, -(-len(members) // MAN_FAMILY_CAP))
        kept += members[::step]
    return sorted(kept)


def corpus_fingerprint(files: Sequence[Path], seed: int) -> str:
    """Changes when any source file is added, removed or modified, or the extraction changes."""
    h = hashlib.sha256(f"debian-docs v{CORPUS_VERSION} seed {seed}\n".encode())
    for p in files:
        with contextlib.suppress(OSError):
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def read_text(path: Path, limit: int = 4 << 20) -> str | None:
    """A text file's contents (gunzipped), or None when it is not UTF-8 text."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read(limit)
        else:
            with path.open("rb") as f:
                raw = f.read(limit)
        return None if b"\0" in raw else raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None


def troff_inline(s: str) -> str:
    """Running text of one troff line: font changes, strings and escapes dropped, special characters mapped."""
    s = _TROFF_FONT.sub("", s)
    s = _TROFF_CHAR.sub(lambda m: _TROFF_CHARS.get(m.group(1) or m.group(2), ""), s)
    s = _TROFF_ESC.sub("", s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").replace('\\"', "")
    return s.replace("\\", "")


def troff_paragraphs(src: str) -> list[str]:
    """A man page's paragraphs: macros dropped (their text kept for font and mdoc text macros)."""
    paras: list[str] = []
    cur: list[str] = []
    for line in src.splitlines():
        if line.startswith((".\\\"", "'\\\"", '."')):
            continue
        if line.startswith((".", "'")):
            macro, _, args = line[1:].strip().partition(" ")
            if macro in _BREAKS and cur:
                paras.append(" ".join(cur))
                cur = []
            if macro in _TEXT_MACROS and args:
                cur.append(troff_inline(args.replace('"', "")))
        elif line.strip():
            cur.append(troff_inline(line))
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return paras


@dataclass(frozen=True)
class Prose:
    """Which paragraphs count as text: at least `min_chars` characters and `min_words` words, at most
    `max_chars` (after paragraphs_of's cut at 2000), and letters at least `letters` of the visible characters."""

    min_chars: int = 60
    min_words: int = 10
    letters: float = 0.65
    max_chars: int = 2000


EMBEDDABLE = Prose()
"""What the tuner embeds: anything worth embedding (not tables, code or rulers)."""
LONG_PROSE = Prose(min_chars=150, min_words=25, letters=0.7)
"""What bench/search.py builds its files from: longer running prose, no boilerplate fragments."""


def good_paragraph(p: str, prose: Prose = EMBEDDABLE) -> bool:
    """Is `p` text worth using (see Prose)?"""
    if not prose.min_chars <= len(p) <= prose.max_chars or len(p.split()) < prose.min_words:
        return False
    visible = sum(not c.isspace() for c in p)
    return sum(c.isalpha() for c in p) >= prose.letters * visible


def paragraphs_of(path: Path) -> list[str]:
    text = read_text(path)
    if text is None or text.startswith(".so "):
        return []
    raw = troff_paragraphs(text) if path.is_relative_to(MAN_ROOT) or ".TH " in text[:4096] \
        else re.split(r"\n[ \t]*\n", text)
    return [_WS.sub(" ", p).strip()[:2000] for p in raw]


def corpus_paragraphs(files: Sequence[Path], need: int, seed: int) -> Iterator[tuple[bytes, str]]:
    """(digest, text) of distinct good paragraphs, file by file in a seeded random file order, `need` at most."""
    order = list(files)
    random.Random(seed).shuffle(order)
    seen: set[bytes] = set()
    for path in order:
        for p in paragraphs_of(path):
            digest = hashlib.sha256(p.lower().encode("utf-8", "surrogatepass")).digest()[:16]
            if digest in seen or not good_paragraph(p):
                continue
            seen.add(digest)
            yield digest, p
            if len(seen) >= need:
                return


