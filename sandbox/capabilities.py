"""IronClaw's `capabilities.json` (schema v1, `src/tools/wasm/capabilities_schema.rs`): parsed, validated, typed.

Owns the file format only.  Every field of the v1 schema loads, including the ones the tool host does not act on
(`auth`, `setup`, `config`, `discovery_summary`, `webhook`, `websocket`, a channel's `channel` block): the shipped
sidecars use them.  A field no version of the schema has is refused, naming it with its path; so is a value of the
wrong shape.  The capability blocks may sit at the top level or under `capabilities` (as in IronClaw, the outer one
wins).  No file means no capability at all (`Capabilities.none()`).

Defaults are IronClaw's: rate limit 60/min and 1000/h, requests up to 1 MiB, responses up to 10 MiB, 30 s timeout.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PER_MINUTE = 60
DEFAULT_PER_HOUR = 1000
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_TIMEOUT_SECS = 30
MAX_DESCRIPTION_CHARS = 4096  # IronClaw truncates longer descriptions (its issue #976)
MAX_FILE_BYTES = 1024 * 1024
LOCATION_TYPES = ("bearer", "basic", "header", "query_param", "url_path")


class CapabilitiesError(ValueError):
    """A capabilities file that cannot be used; the message names the file and the field."""


# -- the schema: each object is {field: shape}; a shape is a type, a nested object, or a marker ------------------

ANY = "any"  # free-form JSON (config, discovery_summary, websocket): IronClaw keeps it without a fixed shape
STR, INT, BOOL = str, int, bool
STR_LIST = ("list", str)
STR_MAP = ("map", str)

RATE = {"requests_per_minute": INT, "requests_per_hour": INT}
LOCATION = {"type": STR, "username": STR, "name": STR, "header_name": STR, "prefix": STR, "placeholder": STR}
CREDENTIAL = {"secret_name": STR, "location": LOCATION, "host_patterns": STR_LIST, "path_patterns": STR_LIST,
              "optional": BOOL}
ENDPOINT = {"host": STR, "path_prefix": STR, "methods": STR_LIST}
HTTP = {"allowlist": ("list", ENDPOINT), "credentials": ("map", CREDENTIAL), "rate_limit": RATE,
        "max_request_bytes": INT, "max_response_bytes": INT, "timeout_secs": INT}
WEBHOOK = {k: STR for k in ("secret_header", "secret_name", "signature_key_secret_name", "hmac_secret_name",
                            "hmac_signature_header", "hmac_timestamp_header", "hmac_prefix")}
OAUTH = {"authorization_url": STR, "token_url": STR, "client_id": STR, "client_id_env": STR, "client_secret": STR,
         "client_secret_env": STR, "scopes": STR_LIST, "use_pkce": BOOL, "extra_params": STR_MAP,
         "pending_instructions": STR, "access_token_field": STR}
VALIDATION = {"url": STR, "method": STR, "success_status": INT, "headers": STR_MAP}
AUTH = {"secret_name": STR, "display_name": STR, "oauth": OAUTH, "instructions": STR, "setup_url": STR,
        "token_hint": STR, "env_var": STR, "provider": STR, "validation_endpoint": VALIDATION, "optional": BOOL}
SETUP_SECRET = {"name": STR, "prompt": STR, "optional": BOOL}
SETUP_FIELD = {"name": STR, "prompt": STR, "optional": BOOL, "input_type": STR, "setting_path": STR}
SETUP = {"required_secrets": ("list", SETUP_SECRET), "optional_secrets": ("list", SETUP_SECRET),
         "required_fields": ("list", SETUP_FIELD)}
EMIT_RATE = {"messages_per_minute": INT, "messages_per_hour": INT}
CHANNEL = {"allowed_paths": STR_LIST, "allow_polling": BOOL, "min_poll_interval_ms": INT, "workspace_prefix": STR,
           "emit_rate_limit": EMIT_RATE, "webhook": ANY}
BLOCKS: dict[str, Any] = {
    "description": STR, "discovery_summary": ANY, "version": STR, "wit_version": STR,
    "http": HTTP, "secrets": {"allowed_names": STR_LIST},
    "tool_invoke": {"aliases": STR_MAP, "rate_limit": RATE}, "workspace": {"allowed_prefixes": STR_LIST},
    "webhook": WEBHOOK, "websocket": ANY, "auth": AUTH, "setup": SETUP,
    # channel sidecars (channels/<name>.capabilities.json) share the parser
    "type": STR, "name": STR, "config": ANY, "channel": CHANNEL,
}
FILE = {**BLOCKS, "capabilities": "nested"}
REQUIRED = {id(ENDPOINT): ("host",), id(CREDENTIAL): ("secret_name", "location"), id(AUTH): ("secret_name",),
            id(OAUTH): ("authorization_url", "token_url"), id(VALIDATION): ("url",), id(LOCATION): ("type",),
            id(SETUP_SECRET): ("name", "prompt"), id(SETUP_FIELD): ("name", "prompt")}
MAX_NESTING = 8


def _check(value: Any, shape: Any, where: str) -> None:
    """Raise CapabilitiesError if `value` does not have `shape`; `where` is the field's dotted path."""
    if shape is ANY:
        return
    if shape is INT:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CapabilitiesError(f"{where}: expected a non-negative integer, got {json.dumps(value)[:60]}")
        return
    if isinstance(shape, type):
        if not isinstance(value, shape):
            raise CapabilitiesError(f"{where}: expected {shape.__name__}, got {json.dumps(value)[:60]}")
        return
    if isinstance(shape, tuple):
        kind, inner = shape
        if kind == "list":
            if not isinstance(value, list):
                raise CapabilitiesError(f"{where}: expected a list")
            for i, item in enumerate(value):
                _check(item, inner, f"{where}[{i}]")
        else:
            if not isinstance(value, dict):
                raise CapabilitiesError(f"{where}: expected an object")
            for k, item in value.items():
                _check(item, inner, f"{where}.{k}")
        return
    _check_object(value, shape, where)


def _check_object(value: Any, shape: dict[str, Any], where: str) -> None:
    if not isinstance(value, dict):
        raise CapabilitiesError(f"{where}: expected an object")
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        if key not in shape:
            raise CapabilitiesError(f"{path}: unknown field (not in IronClaw's capabilities schema)")
        if item is None:
            continue  # serde's Option: null is the same as absent
        sub = shape[key]
        if sub == "nested":
            depth = where.count("capabilities")
            if depth >= MAX_NESTING:
                raise CapabilitiesError(f"{path}: nested more than {MAX_NESTING} deep")
            _check_object(item, FILE, path)
        else:
            _check(item, sub, path)
    for key in REQUIRED.get(id(shape), ()):
        if value.get(key) is None:
            raise CapabilitiesError(f"{where}.{key}: missing (required)")


def _flatten(doc: dict[str, Any]) -> dict[str, Any]:
    """Promote `capabilities` blocks into the top level; the outer value wins, as in IronClaw's resolve_nested."""
    inner = doc.get("capabilities")
    out = {k: v for k, v in doc.items() if k != "capabilities" and v is not None}
    if isinstance(inner, dict):
        for k, v in _flatten(inner).items():
            out.setdefault(k, v)
    return out


# -- the typed result -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One allowlist entry: host (exact, or `*.example.com` for its subdomains), path prefix, methods (empty=all)."""

    host: str
    path_prefix: str | None = None
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class CredentialLocation:
    type: str  # bearer | basic | header | query_param | url_path
    name: str | None = None  # header or query parameter name
    prefix: str | None = None  # header value prefix
    username: str | None = None  # basic
    placeholder: str | None = None  # url_path


@dataclass(frozen=True)
class Credential:
    """A secret injected at the egress boundary into requests to matching hosts (and paths)."""

    key: str
    secret_name: str
    location: CredentialLocation
    host_patterns: tuple[str, ...] = ()
    path_patterns: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class RateLimit:
    per_minute: int = DEFAULT_PER_MINUTE
    per_hour: int = DEFAULT_PER_HOUR


@dataclass(frozen=True)
class HttpCapability:
    allowlist: tuple[Endpoint, ...] = ()
    credentials: tuple[Credential, ...] = ()
    rate_limit: RateLimit = RateLimit()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    timeout_secs: int = DEFAULT_TIMEOUT_SECS


@dataclass(frozen=True)
class Capabilities:
    """What a tool may do.  `raw` keeps the whole (flattened) file, fields the host does not act on included."""

    http: HttpCapability | None = None
    secret_names: tuple[str, ...] = ()  # globs, for secret-exists only
    aliases: dict[str, str] = field(default_factory=dict)  # tool-invoke alias -> tool name
    workspace_prefixes: tuple[str, ...] = ()
    description: str | None = None
    version: str | None = None
    wit_version: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def none(cls) -> Capabilities:
        """No file: no capability."""
        return cls()

    def secret_allowed(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name.lower(), g.lower()) for g in self.secret_names)

    def summary(self) -> dict[str, Any]:
        """A short description for `clawfs tool list`."""
        http = self.http
        return {
            "http": [f"{' '.join(e.methods) or 'ANY'} {e.host}{e.path_prefix or '/'}" for e in http.allowlist]
            if http else [],
            "credentials": sorted({c.secret_name for c in http.credentials}) if http else [],
            "secrets": list(self.secret_names),
            "workspace": list(self.workspace_prefixes),
            "tool_invoke": sorted(self.aliases),
        }


def _location(d: dict[str, Any], where: str) -> CredentialLocation:
    kind = d["type"]
    if kind not in LOCATION_TYPES:
        raise CapabilitiesError(f"{where}.type: {kind!r} is not one of {', '.join(LOCATION_TYPES)}")
    name = d.get("name") or d.get("header_name")
    needs = {"basic": ("username", d.get("username")), "header": ("name", name),
             "query_param": ("name", name), "url_path": ("placeholder", d.get("placeholder"))}
    if kind in needs and not needs[kind][1]:
        raise CapabilitiesError(f"{where}.{needs[kind][0]}: missing (required for type {kind})")
    return CredentialLocation(kind, name, d.get("prefix"), d.get("username"), d.get("placeholder"))


def _http(d: dict[str, Any]) -> HttpCapability:
    allow = []
    for i, e in enumerate(d.get("allowlist") or []):
        host = e["host"].strip().lower()
        if not host or "/" in host or "@" in host or (host.count("*") and not host.startswith("*.")):
            raise CapabilitiesError(f"http.allowlist[{i}].host: {e['host']!r} is not a host name or *.domain")
        prefix = e.get("path_prefix")
        if prefix is not None and not prefix.startswith("/"):
            raise CapabilitiesError(f"http.allowlist[{i}].path_prefix: {prefix!r} must start with /")
        allow.append(Endpoint(host, prefix, tuple(m.upper() for m in e.get("methods") or ())))
    creds = tuple(
        Credential(key, c["secret_name"], _location(c["location"], f"http.credentials.{key}.location"),
                   tuple(h.lower() for h in c.get("host_patterns") or ()), tuple(c.get("path_patterns") or ()),
                   bool(c.get("optional", False)))
        for key, c in sorted((d.get("credentials") or {}).items()))
    rate = d.get("rate_limit") or {}
    return HttpCapability(
        tuple(allow), creds,
        RateLimit(rate.get("requests_per_minute", DEFAULT_PER_MINUTE), rate.get("requests_per_hour", DEFAULT_PER_HOUR)),
        d.get("max_request_bytes") or DEFAULT_MAX_REQUEST_BYTES,
        d.get("max_response_bytes") or DEFAULT_MAX_RESPONSE_BYTES,
        d.get("timeout_secs") or DEFAULT_TIMEOUT_SECS)


def parse(text: str | bytes, source: str = "capabilities.json") -> Capabilities:
    """Parse and validate one file's text; errors name `source` and the field."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CapabilitiesError(f"{source}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CapabilitiesError(f"{source}: expected a JSON object at the top")
    try:
        _check_object(doc, FILE, "")
        flat = _flatten(doc)
        http = _http(flat["http"]) if "http" in flat else None
    except CapabilitiesError as e:
        raise CapabilitiesError(f"{source}: {e}") from None
    desc = flat.get("description")
    return Capabilities(
        http=http,
        secret_names=tuple((flat.get("secrets") or {}).get("allowed_names") or ()),
        aliases=dict((flat.get("tool_invoke") or {}).get("aliases") or {}),
        workspace_prefixes=tuple((flat.get("workspace") or {}).get("allowed_prefixes") or ()),
        description=desc[:MAX_DESCRIPTION_CHARS] if desc else None,
        version=flat.get("version"), wit_version=flat.get("wit_version"), raw=flat)


def load(path: Path) -> Capabilities:
    """The capabilities at `path`; a missing file is no capability."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return Capabilities.none()
    except OSError as e:
        raise CapabilitiesError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise CapabilitiesError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return parse(data, str(path))
