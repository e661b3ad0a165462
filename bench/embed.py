#!/usr/bin/env python3
"""Embedding engines side by side: raw sentence-transformers against ClawFS's embedders, same paragraphs, one run.

1. **Throughput** on the same real paragraphs (debian-docs: /usr/share/doc and the man pages, 24-200 word
   pieces each): `SentenceTransformer.encode(paragraphs)` at its defaults (float32, batch 32: the anchor), then
   each ClawFS embedder's `embed` (`all-MiniLM-L6-v2`: torch, bfloat16 linear layers where the CPU has them;
   `all-MiniLM-L6-v2-int8`: ONNX Runtime, int8 weights).  Rounds alternate the engines (the order reversed
   every other round); the best round of each counts, and `/proc/loadavg` is recorded with every timing (other
   processes on a shared 2-core machine move these figures by 2x: compare within a run only).
2. **Quality** on a known-item set over a real corpus: man pages (man1, man8) whose NAME line ("ls - list
   directory contents") is removed from the corpus and becomes the query; the corpus is their other paragraphs
   plus distractor paragraphs of /usr/share/doc.  Every engine embeds the whole corpus; exact top-10 by cosine
   (numpy).  Reported: top-10 overlap of each engine's paragraph list with float32 sentence-transformers'
   (mean over queries; also over the hand-written queries of bench/search.py, which have no known answer), and
   recall@10 of the known man page (its file among the top-10 paragraphs' files), with MRR@10.

    .venv/bin/python -m bench.embed --quick     # ~300 corpus paragraphs, a minute or two
    .venv/bin/python -m bench.embed             # ~1500 paragraphs, 200 known-item queries
Output: bench/results/embed.json (machine, configuration, every figure).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import machine
from clawfs.index import embedder as E
from clawfs.index.tuning import corpus as tc

REPO = Path(__file__).resolve().parent.parent
Vectors = npt.NDArray[np.float32]
ANCHOR = "sentence-transformers float32 (defaults)"
ENGINES = (E.MINILM_NAME, E.MINILM_INT8_NAME)


@dataclass
class Sizes:
    throughput: int  # paragraphs timed per round
    rounds: int
    pages: int  # known-item queries (man pages)
    distractors: int  # /usr/share/doc paragraphs


QUICK = Sizes(throughput=128, rounds=2, pages=60, distractors=200)
FULL = Sizes(throughput=256, rounds=3, pages=200, distractors=600)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- corpus and queries ----------------------------------------------------------------------------------------
NAME_LINE = re.compile(r"^\.SH\s+\"?NAME\"?\s*\n(?:\.[^\n]*\n)*([^\n]*?)\s\\-\s+([^\n]+)", re.MULTILINE)


@dataclass
class KnownItems:
    paras: list[str]  # the corpus
    files: list[str]  # each paragraph's source file
    queries: list[str]
    answers: list[str]  # each query's known file


def known_items(sizes: Sizes, rng: random.Random) -> KnownItems:
    """Man pages' one-line descriptions as queries, their other paragraphs and /usr/share/doc as the corpus."""
    items = KnownItems([], [], [], [])
    seen: set[str] = set()
    pages = tc.man_pages(["man1", "man8"])
    rng.shuffle(pages)
    for page in pages:
        text = tc.read_text(page) or ""
        m = NAME_LINE.search(text)
        desc = tc.troff_inline(m.group(2)).strip().rstrip(".").lower() if m else ""
        if not 3 <= len(desc.split()) <= 10 or desc in seen:
            continue
        paras = [p for p in tc.paragraphs_of(page)
                 if tc.good_paragraph(p) and desc not in p.lower() and p.lower() not in seen][:8]
        if len(paras) < 2:
            continue
        seen.add(desc)
        seen.update(p.lower() for p in paras)
        items.queries.append(desc)
        items.answers.append(str(page))
        items.paras += paras
        items.files += [str(page)] * len(paras)
        if len(items.queries) >= sizes.pages:
            break
    docs = [f for f in tc.corpus_files() if not f.is_relative_to(tc.MAN_ROOT)]
    rng.shuffle(docs)
    added = 0
    for path in docs:
        for p in tc.paragraphs_of(path):
            if tc.good_paragraph(p, tc.LONG_PROSE) and p.lower() not in seen:
                seen.add(p.lower())
                items.paras.append(p)
                items.files.append(str(path))
                added += 1
        if added >= sizes.distractors:
            break
    return items


def handwritten() -> list[str]:
    from bench.search import HANDWRITTEN

    return [q for q in HANDWRITTEN.splitlines() if q.strip()]


def throughput_paragraphs(counter: E.Embedder, n: int, rng: random.Random) -> list[str]:
    """n distinct real paragraphs of 24-200 word pieces (one chunk each, never cut by the model)."""
    out: list[str] = []
    seen: set[str] = set()
    files = tc.corpus_files()
    rng.shuffle(files)
    for path in files:
        for p in tc.paragraphs_of(path):
            if tc.good_paragraph(p, tc.LONG_PROSE) and p not in seen and 24 <= counter.count_tokens(p) <= 200:
                seen.add(p)
                out.append(p)
        if len(out) >= n:
            break
    return out[:n]


# -- engines ---------------------------------------------------------------------------------------------------
def engines() -> dict[str, Callable[[Sequence[str]], Vectors]]:
    """The anchor and ClawFS's embedders, each loaded and run once (first calls set up kernels and buffers)."""
    from sentence_transformers import SentenceTransformer

    raw = SentenceTransformer(str(E.minilm_model_dir()), device="cpu", local_files_only=True)

    def anchor(texts: Sequence[str]) -> Vectors:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)  # torch's default (ClawFS sets its own per call)
        vectors: Vectors = raw.encode(list(texts), convert_to_numpy=True)  # its defaults: batch 32, float32
        return vectors

    out: dict[str, Callable[[Sequence[str]], Vectors]] = {ANCHOR: anchor}
    for name in ENGINES:
        emb = E.get_embedder(name)
        emb.warm_up()
        out[name] = emb.embed
    anchor(["warm up " * 200, "warm up"])
    return out


def unit(v: Vectors) -> Vectors:
    out: Vectors = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def measure_throughput(run: dict[str, Callable[[Sequence[str]], Vectors]], paras: list[str],
                       rounds: int, pieces: int) -> dict[str, Any]:
    names = list(run)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    loads: dict[str, list[list[float]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            loads[name].append(loadavg())
            t0 = time.perf_counter()
            run[name](paras)
            seconds[name].append(round(time.perf_counter() - t0, 3))
            print(f"round {r + 1}: {name}: {seconds[name][-1]:.2f} s (loadavg {loads[name][-1]})", flush=True)
    best = {n: min(s) for n, s in seconds.items()}
    out: dict[str, Any] = {"paragraphs": len(paras), "word_pieces": pieces, "rounds": rounds}
    for n in names:
        out[n] = {"seconds": seconds[n], "loadavg_before_each": loads[n],
                  "paragraphs_per_s": round(len(paras) / best[n], 1), "word_pieces_per_s": round(pieces / best[n]),
                  "ratio_to_anchor": round(best[ANCHOR] / best[n], 2),
                  "ratio_per_round": [round(a / b, 2) for a, b in zip(seconds[ANCHOR], seconds[n], strict=True)]}
    return out


def top10(corpus: Vectors, queries: Vectors) -> npt.NDArray[np.int64]:
    scores = queries @ corpus.T
    top = np.argsort(-scores, axis=1)[:, :10]
    return top.astype(np.int64)


def measure_quality(run: dict[str, Callable[[Sequence[str]], Vectors]], items: KnownItems,
                    free_queries: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"corpus_paragraphs": len(items.paras), "known_item_queries": len(items.queries),
                           "handwritten_queries": len(free_queries)}
    tops: dict[str, npt.NDArray[np.int64]] = {}
    free: dict[str, npt.NDArray[np.int64]] = {}
    corpus_vectors: dict[str, Vectors] = {}
    for name, embed in run.items():
        before = loadavg()
        t0 = time.perf_counter()
        corpus_vectors[name] = unit(embed(items.paras))
        took = time.perf_counter() - t0
        q = unit(embed(items.queries))
        tops[name] = top10(corpus_vectors[name], q)
        free[name] = top10(corpus_vectors[name], unit(embed(free_queries)))
        hits = [[items.files[i] for i in row] for row in tops[name]]
        ranks = [h.index(a) + 1 if a in h else None for h, a in zip(hits, items.answers, strict=True)]
        out[name] = {"corpus_embed_s": round(took, 2), "loadavg_before": before,
                     "recall_at_10": round(sum(r is not None for r in ranks) / len(ranks), 4),
                     "mrr_at_10": round(sum(1 / r for r in ranks if r is not None) / len(ranks), 4)}
        print(f"quality: {name}: {out[name]}", flush=True)
    for name in ENGINES:
        cos = (corpus_vectors[name] * corpus_vectors[ANCHOR]).sum(axis=1)
        out[name]["cosine_to_anchor"] = {"min": round(float(cos.min()), 4), "mean": round(float(cos.mean()), 4),
                                         "p5": round(float(np.percentile(cos, 5)), 4)}
        out[name]["top10_overlap_known_item"] = overlap(tops[name], tops[ANCHOR])
        out[name]["top10_overlap_handwritten"] = overlap(free[name], free[ANCHOR])
    return out


def overlap(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> dict[str, float]:
    per = [len(set(x.tolist()) & set(y.tolist())) / 10 for x, y in zip(a, b, strict=True)]
    return {"mean": round(float(np.mean(per)), 4), "min": round(float(np.min(per)), 2)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--name", default="embed")
    ap.add_argument("--seed", type=int, default=21)
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    rng = random.Random(args.seed)
    started = loadavg()
    run = engines()
    counter = E.get_embedder(E.MINILM_INT8_NAME)
    paras = throughput_paragraphs(counter, sizes.throughput, rng)
    pieces = sum(min(counter.count_tokens(p) + 2, 256) for p in paras)
    report: dict[str, Any] = {
        "machine": machine.machine_info(loadavg_at_start=started),
        "config": {"sizes": vars(sizes), "seed": args.seed, "anchor": ANCHOR, "engines": list(ENGINES),
                   "batch_sizes": {n: E.get_embedder(n).batch_size for n in ENGINES},
                   "bf16": getattr(E.get_embedder(E.MINILM_NAME), "bf16", None)},
        "throughput": measure_throughput(run, paras, sizes.rounds, pieces),
        "quality": measure_quality(run, known_items(sizes, rng), handwritten()),
    }
    report["machine"]["loadavg_at_end"] = loadavg()
    machine.write_report(args.out, args.name, report, echo=False)
    print(f"wrote {args.out / (args.name + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
