"""The one module that imports wasmtime: compiles, caches, links and calls `near:agent` tool components.

Owns the engine (fuel and epoch interruption on), the epoch ticker thread, the compiled-component cache (memory,
and serialized files keyed by the binary's BLAKE3, the wasmtime version and the engine's settings), the host
imports of both WIT versions (0.3.0 and 0.4.1) and the translation of every failure into one `ToolError`.

What a host import does is not decided here: each call carries a `HostCalls` object (sandbox/toolhost.py makes
one per call) and the imports forward to it, converting WIT values to Python and back.  A fresh Store per call:
after a trap an instance refuses further calls, and no state may leak from one call to the next.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import blake3
import wasmtime
from wasmtime import component as wc

from .errors import ToolError

log = logging.getLogger(__name__)

WASMTIME_VERSION = importlib.metadata.version("wasmtime")
WIT_VERSIONS = ("0.3.0", "0.4.1")
WASI_ALLOWED = ("wasi:io/", "wasi:cli/", "wasi:random/", "wasi:clocks/")
MALFORMED = ("utf-8", "utf8", "invalid discriminant", "invalid enum", "string content out-of-bounds",
             "list content out-of-bounds", "pointer not aligned")
ALLOC_FAILURE_FRAMES = ("alloc_error", "handle_alloc_error", "__rdl_oom", "rust_oom")
MAX_STDERR_BYTES = 4096  # of a guest's stderr kept to explain its trap
MAX_PANIC_CHARS = 500
TICK_S = 0.05  # epoch tick: the wall-time limit is enforced to within one tick
MIB = 1024 * 1024
DEFAULT_MEMORY = 10 * MIB
DEFAULT_FUEL = 500_000_000
DEFAULT_TIMEOUT_S = 60.0
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
ERROR_KINDS = ("auth-required", "input", "output-too-large", "executor", "network-denied", "client",
               "operation-failed")


@dataclass(frozen=True)
class Limits:
    """Per-call limits; IronClaw's defaults.  `fuel=None` runs without fuel accounting (bench only)."""

    memory_bytes: int = DEFAULT_MEMORY
    fuel: int | None = DEFAULT_FUEL
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass
class HttpResult:
    status: int
    headers_json: str
    body: bytes


class HttpFailure(Exception):
    """What `http-request` returns as its error (0.3.0: the message only; 0.4.1: the whole record)."""

    def __init__(self, kind: str, message: str, code: str | None = None, request_sent: bool = False) -> None:
        super().__init__(message)
        self.kind = kind if kind in ERROR_KINDS else "operation-failed"
        self.message = message
        self.code = code
        self.request_sent = request_sent


class HostCalls(Protocol):
    """The host side of one call: what the guest's imports do."""

    def log(self, level: str, message: str) -> None: ...
    def now_millis(self) -> int: ...
    def workspace_read(self, path: str) -> str | None: ...
    def http_request(self, method: str, url: str, headers_json: str, body: bytes | None,
                     timeout_ms: int | None) -> HttpResult: ...
    def tool_invoke(self, alias: str, params_json: str) -> tuple[bool, str]: ...
    def secret_exists(self, name: str) -> bool: ...


@dataclass
class GuestResult:
    """What `execute` returned: output on success, else an error (0.4.1's failure kind and code kept)."""

    output: str | None
    error: str | None = None
    error_kind: str | None = None
    error_code: str | None = None


_current = threading.local()


def _calls() -> HostCalls:
    calls: HostCalls | None = getattr(_current, "calls", None)
    if calls is None:  # an import called outside `call`: cannot happen with a fresh store per call
        raise RuntimeError("host import called with no call in progress")
    return calls


def _record(**fields: Any) -> wc.Record:
    r = wc.Record()
    for k, v in fields.items():
        setattr(r, k.replace("_", "-"), v)
    return r


def _http_import(version: str) -> Callable[..., Any]:
    def http_request(_store: Any, method: str, url: str, headers_json: str, body: Any, timeout_ms: Any) -> Any:
        try:
            res = _calls().http_request(method, url, headers_json, bytes(body) if body is not None else None,
                                        timeout_ms)
        except HttpFailure as f:
            if version == "0.3.0":
                return f.message  # result<http-response, string>: the cases differ in type, so no Variant
            failure = _record(kind=f.kind, code=f.code, message=f.message, request_sent=f.request_sent)
            return wc.Variant("err", failure)
        response = _record(status=res.status, headers_json=res.headers_json, body=res.body)
        return response if version == "0.3.0" else wc.Variant("ok", response)
    return http_request


def _tool_invoke(_store: Any, alias: str, params_json: str) -> Any:
    ok, text = _calls().tool_invoke(alias, params_json)
    return wc.Variant("ok" if ok else "err", text)


def _host_funcs(version: str) -> dict[str, Callable[..., Any]]:
    return {
        "log": lambda _s, level, message: _calls().log(str(level), message),
        "now-millis": lambda _s: _calls().now_millis(),
        "workspace-read": lambda _s, path: _calls().workspace_read(path),
        "http-request": _http_import(version),
        "tool-invoke": _tool_invoke,
        "secret-exists": lambda _s, name: bool(_calls().secret_exists(name)),
    }


def classify(err: Exception, stderr: str = "") -> ToolError:
    """One typed error for whatever wasmtime raised, read from its cause (the text after 'Caused by:') and what
    the guest wrote to stderr before it died (a Rust guest's panic message, or its allocation failure)."""
    text = str(err)
    cause, low = _cause(text), text.lower() + "\n" + stderr.lower()
    if "fuel" in cause.lower():
        return ToolError("fuel", "the tool ran out of fuel (its CPU budget)")
    if cause.lower().endswith("interrupt"):
        return ToolError("timeout", "the tool ran past its wall-time limit")
    if "exceeds memory limits" in low or "memory minimum size" in low or _alloc_failure(low):
        return ToolError("memory", "the tool ran out of memory (its limit refused to grow it)")
    if any(m in low for m in MALFORMED):
        return ToolError("malformed", f"the tool returned a value that is not valid for its interface: {cause}")
    panic = _panic_message(stderr)
    if panic:
        return ToolError("trap", f"the tool panicked: {panic}")
    return ToolError("trap", f"the tool trapped: {cause}")


def _panic_message(stderr: str) -> str:
    """Rust's panic report: "thread '…' panicked at FILE:LINE:COL:" then the message (older: on one line)."""
    lines = stderr.replace("\0", "").splitlines()
    for i, line in enumerate(lines):
        if "panicked at" in line:
            where = line.split("panicked at", 1)[1].strip().rstrip(":")
            message = lines[i + 1].strip() if i + 1 < len(lines) and line.rstrip().endswith(":") else ""
            return (f"{message} (at {where})" if message else where)[:MAX_PANIC_CHARS]
    return ""


def _alloc_failure(low: str) -> bool:
    """A trap in the guest's allocation-failure path.  memory.grow past the store's limit returns -1 (no trap:
    wasmtime's C API has no trap-on-grow-failure), and a Rust guest then aborts in handle_alloc_error; its frames
    name that path when the binary keeps its names.  A stripped binary's memory exhaustion reads as a trap."""
    return "memory allocation of" in low or ("unreachable" in low and any(s in low for s in ALLOC_FAILURE_FRAMES))


def _private(directory: Path) -> bool:
    """Owned by this user and writable by nobody else."""
    try:
        st = directory.stat()
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _cause(text: str) -> str:
    """wasmtime puts the reason after 'Caused by:'; the backtrace before it is noise for a one-line reason."""
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "unknown trap"


class _Ticker:
    """Increments the engine's epoch every TICK_S: Python signal handlers do not run while wasm does."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self._engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Loaded:
    """A compiled component and what it speaks."""

    component: wc.Component
    wit_version: str
    blake3: str
    from_cache: str  # "memory", "disk" or "compiled"


class WasmRuntime:
    """An engine, its ticker, its linkers (one per WIT version) and the compiled-component cache."""

    def __init__(self, cache_dir: Path | None = None, *, fuel: bool = True) -> None:
        cfg = wasmtime.Config()
        cfg.consume_fuel = fuel
        cfg.epoch_interruption = True
        self.fuel = fuel
        self.engine = wasmtime.Engine(cfg)
        self.cache_dir = cache_dir
        self._memory: dict[str, Loaded] = {}
        self._lock = threading.Lock()
        self._linkers = {v: self._linker(v) for v in WIT_VERSIONS}
        # guests' stderr goes to a file per thread here (files: wasmtime-py's custom stdout callbacks were seen to
        # crash at interpreter exit); read only to explain a trap
        self._scratch = tempfile.mkdtemp(prefix="clawfs-wasm-")
        # removed at close(), or when the runtime is collected / the interpreter exits (the CLI never closes it)
        weakref.finalize(self, shutil.rmtree, self._scratch, True)
        self._ticker = _Ticker(self.engine)

    def close(self) -> None:
        self._ticker.stop()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _stderr_path(self) -> str:
        return os.path.join(self._scratch, f"stderr-{threading.get_ident()}")

    def _stderr(self) -> str:
        try:
            with open(self._stderr_path(), "rb") as f:
                return f.read(MAX_STDERR_BYTES).decode("utf-8", "replace")
        except OSError:
            return ""

    def _linker(self, version: str) -> wc.Linker:
        linker = wc.Linker(self.engine)
        # IronClaw's tools are built for wasm32-wasip2 and import WASI's cli/io/random; each store gets a WASI
        # context with no arguments, no environment, no preopened directory and no network (wasmtime's
        # defaults), and `_wit_version` refuses components that import sockets, filesystem or http at all.
        linker.add_wasip2()
        with linker.root() as root, root.add_instance(f"near:agent/host@{version}") as host:
            for name, fn in _host_funcs(version).items():
                host.add_func(name, fn)
        return linker

    # -- compile and cache ---------------------------------------------------------------------------------------

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        flavour = "fuel" if self.fuel else "nofuel"
        return self.cache_dir / f"{digest}-wasmtime{WASMTIME_VERSION}-{flavour}.cwasm"

    def load(self, binary: bytes | str) -> Loaded:
        """The component of `binary` (wasm bytes or component text), compiled once per process and per cache."""
        raw = binary.encode() if isinstance(binary, str) else binary
        digest = blake3.blake3(raw).hexdigest()
        with self._lock:
            hit = self._memory.get(digest)
        if hit is not None:
            return Loaded(hit.component, hit.wit_version, digest, "memory")
        comp, source = self._from_disk(digest), "disk"
        if comp is None:
            try:
                comp, source = wc.Component(self.engine, binary), "compiled"
            except wasmtime.WasmtimeError as e:
                raise ToolError("invalid", f"not a WebAssembly component: {_cause(str(e))}") from None
            self._to_disk(digest, comp)
        loaded = Loaded(comp, self._wit_version(comp), digest, source)
        with self._lock:
            self._memory[digest] = loaded
        return loaded

    def _from_disk(self, digest: str) -> wc.Component | None:
        """The cached compilation, if the cache is ours alone and the file is intact.  Serialized components are
        native code that wasmtime trusts as is: a file someone else could write, or a damaged one, is not used."""
        path = self._cache_path(digest)
        if path is None or not _private(path.parent) or not path.exists():
            return None
        try:
            data = path.read_bytes()  # read, not mmap: a file changed under a mapping would crash the process
        except OSError:
            return None
        check, payload = data[:32], data[32:]
        if blake3.blake3(payload).digest() != check:
            path.unlink(missing_ok=True)
            return None
        try:
            return wc.Component.deserialize(self.engine, payload)
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # another engine's settings: compile again
            return None

    def _to_disk(self, digest: str, comp: wc.Component) -> None:
        path = self._cache_path(digest)
        if path is None:
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(path.parent):
            return
        payload = comp.serialize()
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as f:
            f.write(blake3.blake3(payload).digest() + payload)
        os.replace(tmp, path)

    def _wit_version(self, comp: wc.Component) -> str:
        ty = comp.type
        exports = [n for n in ty.exports(self.engine) if n.startswith("near:agent/tool@")]
        imports = list(ty.imports(self.engine))
        if len(exports) != 1:
            raise ToolError("invalid", "the component does not export near:agent/tool (a sandboxed-tool world)")
        version = exports[0].split("@", 1)[1]
        if version not in WIT_VERSIONS:
            raise ToolError("invalid", f"near:agent@{version} is not a WIT version this host speaks "
                            f"({', '.join(WIT_VERSIONS)})")
        tool_iface = ty.exports(self.engine)[exports[0]].ty
        names = set(tool_iface.exports(self.engine)) if isinstance(tool_iface, wc.ComponentInstanceType) else set()
        missing = [f for f in ("execute", "schema", "description") if f not in names]
        if missing:
            raise ToolError("invalid", f"the component's near:agent/tool does not export {', '.join(missing)}")
        foreign = [n for n in imports if n != f"near:agent/host@{version}" and not n.startswith(WASI_ALLOWED)]
        if foreign:
            raise ToolError("invalid", f"the component imports {foreign[0]}, which a tool host does not provide")
        return version

    # -- calls ---------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _instance(self, loaded: Loaded, limits: Limits, calls: HostCalls) -> Iterator[tuple[Any, Any]]:
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=limits.memory_bytes)
        wasi = wasmtime.WasiConfig()
        wasi.stderr_file = self._stderr_path()  # created empty for each call
        store.set_wasi(wasi)
        if self.fuel:
            store.set_fuel(limits.fuel if limits.fuel is not None else 2**63 - 1)
        store.set_epoch_deadline(max(1, math.ceil(limits.timeout_s / TICK_S)))
        # a tool-invoke runs another tool from inside this one's import: restore the outer call's host after
        outer = getattr(_current, "calls", None)
        _current.calls = calls
        try:
            try:
                inst = self._linkers[loaded.wit_version].instantiate(store, loaded.component)
            except wasmtime.WasmtimeError as e:
                raise classify(e, self._stderr()) from None
            yield store, inst
        finally:
            _current.calls = outer

    def _invoke(self, store: Any, inst: Any, version: str, name: str, *args: Any) -> Any:
        iface = inst.get_export_index(store, f"near:agent/tool@{version}")
        index = inst.get_export_index(store, name, iface) if iface is not None else None
        func = inst.get_func(store, index) if index is not None else None
        if func is None:
            raise ToolError("invalid", f"the component does not export {name}")
        try:
            result = func(store, *args)
            func.post_return(store)
        except wasmtime.WasmtimeError as e:
            raise classify(e, self._stderr()) from None
        except ToolError:
            raise
        except Exception as e:  # a host import's own bug: wasmtime-py re-raises it after the guest trapped
            log.exception("a host import failed during %s", name)
            raise ToolError("trap", f"the host failed while serving the tool ({type(e).__name__})") from None
        return result

    def call_text(self, loaded: Loaded, name: str, limits: Limits, calls: HostCalls) -> str:
        """`schema()` or `description()`."""
        with self._instance(loaded, limits, calls) as (store, inst):
            out = self._invoke(store, inst, loaded.wit_version, name)
        if not isinstance(out, str):
            raise ToolError("malformed", f"{name}() did not return a string")
        return out

    def execute(self, loaded: Loaded, params: str, context: str | None, limits: Limits,
                calls: HostCalls) -> tuple[GuestResult, int | None]:
        """(what execute returned, fuel consumed)."""
        req = _record(params=params, context=context)
        with self._instance(loaded, limits, calls) as (store, inst):
            start = store.get_fuel() if self.fuel else None
            out = self._invoke(store, inst, loaded.wit_version, "execute", req)
            used = start - store.get_fuel() if start is not None else None
        return _response(out, loaded.wit_version), used


def _response(out: Any, version: str) -> GuestResult:
    if version == "0.3.0":
        output, error = getattr(out, "output", None), getattr(out, "error", None)
        if output is None and error is None:
            raise ToolError("malformed", "the tool returned neither output nor error")
        return GuestResult(output, error)
    # success(string) and failure(record) differ in Python type, so wasmtime-py hands over the payload itself
    if isinstance(out, wc.Variant):
        tag, out = out.tag, out.payload
    else:
        tag = "success" if isinstance(out, str) else "failure"
    if tag == "success" and isinstance(out, str):
        return GuestResult(out)
    if tag != "failure" or not isinstance(out, wc.Record):
        raise ToolError("malformed", "the tool's response is not a near:agent@0.4.1 response")
    kind, code, message = getattr(out, "kind", None), getattr(out, "code", None), getattr(out, "message", None)
    return GuestResult(None, str(message or code or kind or "failure"), str(kind) if kind else None, code)
