"""The tool host: an agent home's installed WASM tools (`tools/<name>/{tool.wasm,capabilities.json}`), run.

Owns what a tool may do during a call (its capabilities, enforced in the host imports) and what leaves a call
(output, logs and error text, each through the leak detector; a blocked one is withheld and logged).  Running the
component is sandbox/wasm.py's; deciding on HTTP is sandbox/egress.py's, reached through an `HttpGateway`: in a jailed
tool worker the daemon's egress proxy (`ProxyGateway`), elsewhere the in-process `Egress` with no credentials.
Every request carries the tool's identity (`ToolIdentity`: name and the BLAKE3 of the binary that runs).

Secret values never reach this module: `secret-exists` asks a `SecretNames` (names only, e.g. the listing of the
home's `secrets/`); values are injected only by the daemon's egress proxy, outside the jail.

Store-free: imports nothing of clawfs, agent, migrations or mountd (the agent runtime imports this module).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import tomllib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any, Protocol

from . import capabilities as caps_mod
from . import leaks
from .capabilities import Capabilities, HttpCapability
from .egress import Egress, EgressError, EgressRequest, EgressResponse, ToolIdentity, parse_target
from .errors import ToolError
from .wasm import GuestResult, HttpFailure, HttpResult, Limits, Loaded, WasmRuntime

log = logging.getLogger(__name__)

TOOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
WASM_NAME, CAPS_NAME, LIMITS_NAME = "tool.wasm", "capabilities.json", "limits.toml"
MAX_LOG_ENTRIES, MAX_LOG_BYTES = 1000, 4096  # IronClaw's per-execution log limits
MAX_WORKSPACE_READ = 1024 * 1024
MAX_OUTPUT_CHARS = 100_000  # IronClaw's SAFETY_MAX_OUTPUT_LENGTH
MAX_INVOKE_DEPTH = 3
# Never readable through workspace-read, whatever a tool's prefixes say: policy, secrets and ClawFS's own files.
NEVER_READ = ("secrets", ".clawfs", "tools", "settings")


class HttpGateway(Protocol):
    """Where a tool's HTTP goes: `sandbox.egress.Egress` in process (no credentials), or `ProxyGateway` to the
    daemon's egress proxy from a jailed tool worker."""

    def send(self, tool: ToolIdentity, http: HttpCapability | None, req: EgressRequest) -> EgressResponse: ...


class ProxyGateway:
    """A jailed tool worker's gateway (sandbox/toolworker.py): each request goes to the egress proxy at `proxy`
    ($HTTP_PROXY, `http://127.0.0.1:3128` in a jail) as an absolute-form `http://host[:port]/path` request, which
    the proxy sends upstream over https (sandbox/proxy.py).  The proxy decides everything - allowlist, address
    checks, credentials, redaction, rate and size limits - for the tool its socket was leased to, so nothing this
    process sends (the identity argument included) can widen the list.  Only https URLs are taken (the in-process
    default); a proxy refusal (its reason phrase `Refused`, which an upstream's answer never carries: the proxy
    writes `OK` for those) becomes the EgressError an in-process gateway would raise."""

    REFUSED_KINDS = {403: "network-denied", 413: "input", 429: "client", 431: "input", 400: "input"}

    def __init__(self, proxy: str, default_timeout_ms: int = 30_000) -> None:
        parts = urllib.parse.urlsplit(proxy)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the proxy must be an http://host:port URL, not {proxy!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.default_timeout_ms = default_timeout_ms

    def send(self, tool: ToolIdentity, http: HttpCapability | None, req: EgressRequest) -> EgressResponse:
        target = parse_target(req.url)  # https only; the proxy checks the rest (and logs every refusal)
        if target.port == 80:  # http://host:80/ is the proxy's way of saying https://host/ (port 443)
            raise EgressError("network-denied", "https on port 80 cannot be reached through the proxy")
        netloc = f"[{target.host}]" if ":" in target.host else target.host
        if target.port != 443:
            netloc += f":{target.port}"
        url = f"http://{netloc}{target.path}" + (f"?{target.query}" if target.query else "")
        timeout = (req.timeout_ms or self.default_timeout_ms) / 1000
        conn = HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(req.method.upper(), url, body=req.body,
                         headers={**req.headers, "Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
        except TimeoutError:
            raise EgressError("operation-failed", f"timed out after {timeout:g} s", request_sent=True,
                              code="timeout") from None
        except (OSError, HTTPException) as e:
            raise EgressError("operation-failed", f"the egress proxy: {type(e).__name__}: {e}",
                              request_sent=True) from None
        finally:
            conn.close()
        if resp.reason == "Refused" and body.startswith(b"clawfs proxy: "):
            reason = body[len(b"clawfs proxy: "):].decode("utf-8", "replace").strip()
            kind = self.REFUSED_KINDS.get(resp.status, "operation-failed")
            raise EgressError(kind, reason, code="rate_limited" if resp.status == 429 else None,
                              request_sent=resp.status == 502)
        return EgressResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)


class NoEgress:
    """A gateway that refuses every request: the agent runtime's own host when tools run in jailed workers (it
    only asks description() and schema(); a tool's HTTP leaves from its worker, never from the runtime)."""

    def send(self, tool: ToolIdentity, http: HttpCapability | None, req: EgressRequest) -> EgressResponse:
        raise EgressError("network-denied", "no network here: the tool's calls run in its jailed worker")


SecretNames = Callable[[], set[str]]
Invoker = Callable[[str, str, str, int], "Outcome"]
"""(alias, target tool, params, depth) -> the target's Outcome, or ToolError: a worker's tool-invoke of another tool."""


def home_secret_names(home: Path) -> SecretNames:
    """The names under the home's `secrets/` (names are visible; values are not readable through the mount)."""
    def names() -> set[str]:
        try:
            return {e.name.lower() for e in os.scandir(home / "secrets") if e.is_file()}
        except OSError:
            return set()
    return names


@dataclass(frozen=True)
class InstalledTool:
    name: str
    directory: Path
    loaded: Loaded
    capabilities: Capabilities
    limits: Limits

    @property
    def identity(self) -> ToolIdentity:
        return ToolIdentity(self.name, self.loaded.blake3)


@dataclass
class Outcome:
    """A successful call: the output (leak-checked), the tool's log lines (leak-checked), time and fuel."""

    output: str
    logs: list[tuple[str, str]] = field(default_factory=list)
    ms: float = 0.0
    fuel: int | None = None


def load_limits(path: Path) -> Limits:
    """A tool's `limits.toml` (memory_mib, fuel, timeout_secs), over IronClaw's defaults; absent = defaults."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Limits()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ToolError("capabilities", f"{path}: cannot read ({e})") from None
    unknown = sorted(set(data) - {"memory_mib", "fuel", "timeout_secs"})
    if unknown:
        raise ToolError("capabilities", f"{path}: unknown key {unknown[0]!r} (memory_mib, fuel, timeout_secs)")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ToolError("capabilities", f"{path}: {key} must be a positive number")
    base = Limits()
    return Limits(int(data.get("memory_mib", base.memory_bytes / 2**20) * 2**20),
                  int(data.get("fuel", base.fuel or 0)), float(data.get("timeout_secs", base.timeout_s)))


def check_output(text: str, what: str, tool: str) -> str:
    """`text` with redact-patterns masked; ToolError('blocked') (and a log line) if a block-pattern matches."""
    redacted, findings = leaks.redact(text)
    bad = leaks.blocked(findings)
    if bad:
        log.warning("tool %s: %s withheld by the leak detector: %s", tool, what, leaks.describe(bad))
        raise ToolError("blocked", f"the tool's {what} was withheld: it looks like it holds a secret "
                        f"({', '.join(sorted({f.pattern for f in bad}))})")
    return redacted


class ToolHost:
    """The tools of one home.  Thread-safe; keep one per process so compiled components stay cached."""

    def __init__(self, home: Path, *, runtime: WasmRuntime | None = None, gateway: HttpGateway | None = None,
                 secret_names: SecretNames | None = None, cache_dir: Path | None = None,
                 only: str | None = None, invoker: Invoker | None = None) -> None:
        self.home = Path(home)
        # A jailed worker's host runs this one tool; a tool-invoke of another goes to `invoker` (the broker, which
        # runs it in that tool's own worker), or is refused without one.
        self.only = only
        self.invoker = invoker
        self.runtime = runtime or WasmRuntime(cache_dir)
        self.gateway: HttpGateway = gateway or Egress()
        self.secret_names = secret_names or home_secret_names(self.home)
        self._texts: dict[str, tuple[str, dict[str, Any]]] = {}

    @property
    def tools_dir(self) -> Path:
        return self.home / "tools"

    def names(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.tools_dir)
                          if TOOL_NAME.match(e.name) and os.path.isfile(os.path.join(e.path, WASM_NAME)))
        except OSError:
            return []

    def tool(self, name: str) -> InstalledTool:
        if not TOOL_NAME.match(name):
            raise ToolError("not-found", f"{name!r} is not a tool name (lower-case letters, digits, - and _)")
        if self.only is not None and name != self.only:
            # its HTTP would leave with this worker's lease, i.e. another tool's list: refused, not widened
            raise ToolError("not-found", f"this jailed worker runs {self.only!r} only; {name!r} runs in its own")
        directory = self.tools_dir / name
        try:
            binary = (directory / WASM_NAME).read_bytes()
        except FileNotFoundError:
            raise ToolError("not-found", f"no tool {name!r}: {directory / WASM_NAME} does not exist") from None
        except OSError as e:
            raise ToolError("not-found", f"cannot read {directory / WASM_NAME}: {e.strerror}") from None
        try:
            capabilities = caps_mod.load(directory / CAPS_NAME)
        except caps_mod.CapabilitiesError as e:
            raise ToolError("capabilities", str(e)) from None
        return InstalledTool(name, directory, self.runtime.load(binary), capabilities,
                             load_limits(directory / LIMITS_NAME))

    def texts(self, tool: InstalledTool) -> tuple[str, dict[str, Any]]:
        """(description, parameters schema) from the guest's description() and schema(), once per binary."""
        hit = self._texts.get(tool.loaded.blake3)
        if hit is not None:
            return hit
        calls = _Call(self, tool, depth=MAX_INVOKE_DEPTH)  # no tool-invoke from schema()/description()
        description = self.runtime.call_text(tool.loaded, "description", tool.limits, calls).strip()
        description = check_output(description or tool.capabilities.description or tool.name, "description",
                                   tool.name)
        raw = self.runtime.call_text(tool.loaded, "schema", tool.limits, calls)
        try:
            schema = json.loads(raw)
        except ValueError:
            raise ToolError("malformed", "schema() did not return JSON") from None
        if not isinstance(schema, dict):
            raise ToolError("malformed", "schema() did not return a JSON object")
        self._texts[tool.loaded.blake3] = (description, schema)
        return description, schema

    def run(self, name: str, params: str, context: str | None = None, *, _depth: int = 0) -> Outcome:
        """Call the tool's execute(params, context); ToolError for anything but a usable output."""
        tool = self.tool(name)
        calls = _Call(self, tool, depth=_depth)
        start = time.perf_counter()
        try:
            result, fuel = self.runtime.execute(tool.loaded, params, context, tool.limits, calls)
        except ToolError as e:
            e.logs = calls.checked_logs()
            if e.kind == "trap":  # a panic message is the guest's own text: it passes the detector like output
                try:
                    e.reason = check_output(e.reason, "panic message", name)
                except ToolError:
                    e.reason = "the tool trapped (its panic message was withheld by the leak detector)"
            raise
        ms = (time.perf_counter() - start) * 1000
        logs = calls.checked_logs()
        if result.output is None:
            err = _guest_error(tool, result)
            err.logs = logs
            raise err
        output = result.output
        if len(output) > MAX_OUTPUT_CHARS:
            output = output[:MAX_OUTPUT_CHARS] + f"\n[output truncated at {MAX_OUTPUT_CHARS} characters]"
        return Outcome(check_output(output, "output", name), logs, ms, fuel)


def _guest_error(tool: InstalledTool, result: GuestResult) -> ToolError:
    text = check_output(result.error or "error", "error", tool.name)
    return ToolError("tool", text, guest_kind=result.error_kind or "", code=result.error_code or "")


class _Call:
    """The host imports for one call of one tool: its capabilities, enforced."""

    def __init__(self, host: ToolHost, tool: InstalledTool, depth: int) -> None:
        self.host, self.tool, self.depth = host, tool, depth
        # wasm's epoch deadline cannot interrupt the host while it waits on the network: HTTP gets what is left
        self.deadline = time.monotonic() + tool.limits.timeout_s
        self.logs: list[tuple[str, str]] = []
        self.dropped = 0

    def checked_logs(self) -> list[tuple[str, str]]:
        out = []
        for level, message in self.logs:
            try:
                out.append((level, check_output(message, "log", self.tool.name)))
            except ToolError:
                out.append((level, "[log line withheld by the leak detector]"))
        if self.dropped:
            out.append(("warn", f"[{self.dropped} log lines over the limit of {MAX_LOG_ENTRIES} dropped]"))
        return out

    def log(self, level: str, message: str) -> None:
        if len(self.logs) >= MAX_LOG_ENTRIES:
            self.dropped += 1
            return
        raw = message.encode()
        if len(raw) > MAX_LOG_BYTES:
            message = raw[:MAX_LOG_BYTES].decode("utf-8", "ignore") + "…"
        self.logs.append((level, message))

    def now_millis(self) -> int:
        return int(time.time() * 1000)

    def workspace_read(self, path: str) -> str | None:
        prefixes = self.tool.capabilities.workspace_prefixes
        if not prefixes or not path or path.startswith("/") or "\\" in path or "\0" in path:
            return None
        parts = path.split("/")
        if ".." in parts or "." in parts or parts[0] in NEVER_READ or "secrets" in parts:
            return None
        if not any(path.startswith(p) for p in prefixes):
            return None
        home = os.path.realpath(self.host.home)
        full = os.path.realpath(os.path.join(home, path))
        if not full.startswith(home + os.sep):  # a symlink out of the home
            return None
        try:
            with open(full, "rb") as f:
                data = f.read(MAX_WORKSPACE_READ + 1)
        except OSError:
            return None
        if len(data) > MAX_WORKSPACE_READ:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def secret_exists(self, name: str) -> bool:
        return self.tool.capabilities.secret_allowed(name) and name.lower() in self.host.secret_names()

    def tool_invoke(self, alias: str, params_json: str) -> tuple[bool, str]:
        target = self.tool.capabilities.aliases.get(alias)
        if target is None:
            return False, f"alias {alias!r} is not in this tool's tool_invoke.aliases"
        if self.depth + 1 >= MAX_INVOKE_DEPTH:
            return False, f"tool-invoke nested more than {MAX_INVOKE_DEPTH} deep"
        try:
            if self.host.invoker is not None and self.host.only is not None and target != self.host.only:
                return True, self.host.invoker(alias, target, params_json, self.depth + 1).output
            return True, self.host.run(target, params_json, _depth=self.depth + 1).output
        except ToolError as e:
            return False, f"{e.kind}: {e.reason}"

    def http_request(self, method: str, url: str, headers_json: str, body: bytes | None,
                     timeout_ms: int | None) -> HttpResult:
        headers = _headers(headers_json)
        outbound = "\n".join([url, *(f"{k}: {v}" for k, v in headers.items()),
                              (body or b"").decode("utf-8", "replace")])
        bad = leaks.blocked(leaks.scan(outbound))
        if bad:
            log.warning("tool %s: request to %s refused by the leak detector: %s", self.tool.name,
                        url.split("?")[0], leaks.describe(bad))
            raise HttpFailure("input", "the request looks like it carries a secret; refused", "leak_blocked")
        left_ms = int((self.deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise HttpFailure("operation-failed", "the call's wall time is used up", "timeout")
        req = EgressRequest(method, url, headers, body, min(timeout_ms or left_ms, left_ms))
        try:
            resp = self.host.gateway.send(self.tool.identity, self.tool.capabilities.http, req)
        except EgressError as e:
            raise HttpFailure(e.kind, e.message, e.code, e.request_sent) from None
        text = resp.body.decode("utf-8", "replace") + "\n" + json.dumps(resp.headers)
        bad = leaks.blocked(leaks.scan(text))
        if bad:
            log.warning("tool %s: response from %s withheld by the leak detector: %s", self.tool.name,
                        url.split("?")[0], leaks.describe(bad))
            raise HttpFailure("operation-failed", "the response looks like it carries a secret; withheld",
                              "leak_blocked", request_sent=True)
        return HttpResult(resp.status, json.dumps(resp.headers), resp.body)


def _headers(headers_json: str) -> dict[str, str]:
    if not headers_json.strip():
        return {}
    try:
        value = json.loads(headers_json)
    except ValueError:
        raise HttpFailure("input", "headers-json is not JSON") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise HttpFailure("input", "headers-json must be an object of strings")
    return value


def check_tool(runtime: WasmRuntime, name: str, binary: bytes, capabilities_text: str | None,
               directory: Path) -> dict[str, Any]:
    """What `clawfs tool check` reports for a tool before it is copied in; ToolError if it cannot be used:
    capabilities valid, a near:agent component of a version this host speaks, importing nothing else, whose
    description() and schema() answer (schema a JSON object) within the default limits."""
    try:
        caps = caps_mod.parse(capabilities_text, str(directory / CAPS_NAME)) if capabilities_text is not None \
            else Capabilities.none()
    except caps_mod.CapabilitiesError as e:
        raise ToolError("capabilities", str(e)) from None
    tool = InstalledTool(name, directory, runtime.load(binary), caps, load_limits(directory / LIMITS_NAME))
    host = ToolHost(directory, runtime=runtime, secret_names=set)
    description, schema = host.texts(tool)
    return {"name": name, "wit_version": tool.loaded.wit_version, "blake3": tool.loaded.blake3,
            "description": description, "schema": schema, "capabilities": caps.summary(),
            "has_capabilities_file": capabilities_text is not None}
