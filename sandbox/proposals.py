"""The agent's requests for more reach, and what each would add: `proposals/` of an agent home.

The jailed agent may not write policy (clawfs/policy.py) but may ask: a tool it built goes into
`proposals/tools/<name>/{tool.wasm,capabilities.json}`, a host it needs into `proposals/network.toml` (the whole
`settings/network.toml` it wants, `[[allow]]` host / path_prefix / methods).  This module owns reading them and
the capability diff against what is installed; it copies nothing into policy (mountd/tool_cli.py and
mountd/policy_cli.py apply a proposal, as the owner).

Files are read without following symlinks at any step below the home (a proposal that is a symlink to
`secrets/...` would otherwise be copied into `tools/`, where the agent may read it) and as regular files only,
into memory once: what is shown to the owner is exactly what gets installed.  A malformed proposal is listed as
invalid with the reason and is never applied.  Store-free, and wasmtime-free (listing is cheap): the tool's
binary is checked as a component only when it is approved.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .capabilities import Capabilities, CapabilitiesError, parse

PROPOSALS = "proposals"
TOOLS = "tools"
NETWORK = "network.toml"
WASM_NAME, CAPS_NAME = "tool.wasm", "capabilities.json"
# as sandbox/toolhost.py's TOOL_NAME; not imported from there so that listing never loads wasmtime
TOOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_WASM_BYTES = 64 << 20
MAX_TEXT_BYTES = 1 << 20
NETWORK_KEYS = frozenset({"host", "path_prefix", "methods"})


class ProposalError(ValueError):
    """A proposal that cannot be applied; the message says why."""


# -- reading without following links ---------------------------------------------------------------------------
def _open_dir(home: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of home/parts..., each component opened with O_NOFOLLOW (a symlink is refused)."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(home: Path, rel: str, limit: int) -> bytes | None:
    """The bytes of home/rel, or None if it does not exist.  ProposalError if a component is a symlink, the
    file is not a regular file, or it is larger than `limit`."""
    *dirs, name = rel.split("/")
    try:
        dfd = _open_dir(home, tuple(dirs))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ProposalError(f"{rel}: {_why(e)}") from None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ProposalError(f"{rel}: {_why(e)}") from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProposalError(f"{rel}: not a regular file")
        if st.st_size > limit:
            raise ProposalError(f"{rel}: larger than {limit} bytes")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise ProposalError(f"{rel}: larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _why(e: OSError) -> str:
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a symlink or not a folder (proposals are read without following links)"
    return e.strerror or str(e)


def _list_dir(home: Path, parts: tuple[str, ...]) -> list[str]:
    try:
        fd = _open_dir(home, parts)
    except OSError:
        return []
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


# -- what a capability grants, as comparable sets --------------------------------------------------------------
def reach(caps: Capabilities) -> dict[str, set[str]]:
    """Everything a capabilities file grants, as named sets of short strings (the diff compares these)."""
    out: dict[str, set[str]] = {k: set() for k in ("hosts", "paths", "methods", "credentials", "secrets",
                                                   "workspace", "tool_invoke")}
    http = caps.http
    if http is not None:
        for e in http.allowlist:
            place = f"{e.host}{e.path_prefix or '/'}"
            out["hosts"].add(e.host)
            out["paths"].add(place)
            out["methods"].update(f"{m} {place}" for m in (e.methods or ("ANY",)))
        for c in http.credentials:
            for host in c.host_patterns or ("(any allowed host)",):
                out["credentials"].add(f"{c.secret_name} as {c.location.type} to {host}")
    out["secrets"].update(caps.secret_names)
    out["workspace"].update(caps.workspace_prefixes)
    out["tool_invoke"].update(f"{alias} -> {name}" for alias, name in caps.aliases.items())
    return out


def diff_sets(old: dict[str, set[str]], new: dict[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """{kind: {"added": [...], "removed": [...]}} for each kind that changed."""
    out: dict[str, dict[str, list[str]]] = {}
    for kind in sorted(set(old) | set(new)):
        a, b = old.get(kind, set()), new.get(kind, set())
        if a != b:
            out[kind] = {"added": sorted(b - a), "removed": sorted(a - b)}
    return out


def widens(diff: dict[str, dict[str, list[str]]]) -> bool:
    return any(change["added"] for change in diff.values())


# -- the proposals ---------------------------------------------------------------------------------------------
@dataclass
class ToolProposal:
    """proposals/tools/<name>/: the bytes read once, and what approving them would change."""

    name: str
    wasm: bytes | None = None
    capabilities_text: str | None = None
    capabilities: Capabilities | None = None
    installed: bool = False  # a tool of this name is installed now (then the diff is against it)
    wasm_changed: bool = True
    diff: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "tool", "name": self.name, "valid": self.valid,
                               "path": f"{PROPOSALS}/{TOOLS}/{self.name}"}
        if self.error is not None:
            out["error"] = self.error
            return out
        assert self.wasm is not None
        out.update({"change": "changed" if self.installed else "new", "diff": self.diff,
                    "widens": widens(self.diff), "wasm_changed": self.wasm_changed,
                    "wasm_sha256": hashlib.sha256(self.wasm).hexdigest(), "wasm_bytes": len(self.wasm),
                    "has_capabilities_file": self.capabilities_text is not None})
        return out


@dataclass
class NetworkProposal:
    """proposals/network.toml: the whole settings/network.toml the agent asks for."""

    text: bytes | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)
    diff: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "network", "name": NETWORK, "valid": self.valid,
                               "path": f"{PROPOSALS}/{NETWORK}"}
        if self.error is not None:
            out["error"] = self.error
        else:
            out.update({"diff": self.diff, "widens": widens(self.diff)})
        return out


def _caps(text: bytes | None, source: str) -> tuple[str | None, Capabilities]:
    if text is None:
        return None, Capabilities.none()
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise ProposalError(f"{source}: not UTF-8") from None
    try:
        return decoded, parse(decoded, source)
    except CapabilitiesError as e:
        raise ProposalError(str(e)) from None


def tool_proposal(home: Path, name: str) -> ToolProposal | None:
    """The proposal of tool `name` (None when there is none), its diff against tools/<name>/ if installed."""
    home = Path(home)
    p = ToolProposal(name)
    base = f"{PROPOSALS}/{TOOLS}/{name}"
    try:
        if not TOOL_NAME.match(name):
            raise ProposalError(f"{name!r} is not a tool name (lower-case letters, digits, - and _, at most 64)")
        p.wasm = read_file(home, f"{base}/{WASM_NAME}", MAX_WASM_BYTES)
        caps_bytes = read_file(home, f"{base}/{CAPS_NAME}", MAX_TEXT_BYTES)
        if p.wasm is None and caps_bytes is None and not _exists_dir(home, (PROPOSALS, TOOLS, name)):
            return None
        if p.wasm is None:
            raise ProposalError(f"{base}/{WASM_NAME}: missing (a tool proposal is tool.wasm + capabilities.json)")
        p.capabilities_text, p.capabilities = _caps(caps_bytes, f"{base}/{CAPS_NAME}")
        installed_wasm = _installed(home, f"{TOOLS}/{name}/{WASM_NAME}", MAX_WASM_BYTES)
        p.installed = installed_wasm is not None
        old = Capabilities.none()
        if p.installed:
            try:
                _, old = _caps(_installed(home, f"{TOOLS}/{name}/{CAPS_NAME}", MAX_TEXT_BYTES),
                               f"{TOOLS}/{name}/{CAPS_NAME}")
            except ProposalError:
                old = Capabilities.none()  # an installed file that no longer parses grants nothing now
        p.wasm_changed = installed_wasm != p.wasm
        p.diff = diff_sets(reach(old), reach(p.capabilities))
    except ProposalError as e:
        p.error = str(e)
    return p


def _installed(home: Path, rel: str, limit: int) -> bytes | None:
    """An installed file (the owner's): what the agent runs now; unreadable counts as absent."""
    try:
        return read_file(home, rel, limit)
    except ProposalError:
        return None


def _exists_dir(home: Path, parts: tuple[str, ...]) -> bool:
    try:
        os.close(_open_dir(home, parts))
        return True
    except OSError as e:
        return e.errno not in (errno.ENOENT,)  # a symlink in its place is there, and invalid


# -- network.toml ------------------------------------------------------------------------------------------------
def parse_network(text: bytes, source: str) -> list[dict[str, Any]]:
    """The `[[allow]]` entries of a network.toml (as mountd/jail_cli.py reads settings/network.toml), checked:
    each a host name or *.domain, an optional path_prefix starting with /, optional methods (strings)."""
    try:
        doc = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ProposalError(f"{source}: not valid TOML ({err})") from None
    unknown = sorted(set(doc) - {"allow"})
    if unknown:
        raise ProposalError(f"{source}: unknown key {unknown[0]!r} (only [[allow]] tables)")
    entries = doc.get("allow", [])
    if not isinstance(entries, list):
        raise ProposalError(f"{source}: `allow` must be an array of tables ([[allow]] host = ...)")
    out = []
    for i, entry in enumerate(entries):
        where = f"{source}: allow[{i}]"
        if not isinstance(entry, dict):
            raise ProposalError(f"{where}: expected a table")
        e: dict[str, Any] = entry
        extra = sorted(set(e) - NETWORK_KEYS)
        if extra:
            raise ProposalError(f"{where}.{extra[0]}: unknown field (host, path_prefix, methods)")
        host = e.get("host")
        if not isinstance(host, str) or not host.strip() or "/" in host or "@" in host or ":" in host \
                or (host.count("*") and not (host.startswith("*.") and host.count("*") == 1)):
            raise ProposalError(f"{where}.host: {host!r} is not a host name or *.domain")
        prefix = e.get("path_prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
            raise ProposalError(f"{where}.path_prefix: {prefix!r} must be a string starting with /")
        methods = e.get("methods", [])
        if not isinstance(methods, list) or not all(isinstance(m, str) and m.isalpha() for m in methods):
            raise ProposalError(f"{where}.methods: expected a list of HTTP method names")
        out.append({"host": host.strip().lower(), "path_prefix": prefix, "methods": [m.upper() for m in methods]})
    return out


def network_reach(entries: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"hosts": set(), "paths": set(), "methods": set()}
    for e in entries:
        place = f"{e['host']}{e['path_prefix'] or '/'}"
        out["hosts"].add(e["host"])
        out["paths"].add(place)
        out["methods"].update(f"{m} {place}" for m in (e["methods"] or ["ANY"]))
    return out


def network_proposal(home: Path) -> NetworkProposal | None:
    """proposals/network.toml and its diff against settings/network.toml (None when there is no proposal)."""
    home = Path(home)
    p = NetworkProposal()
    try:
        p.text = read_file(home, f"{PROPOSALS}/{NETWORK}", MAX_TEXT_BYTES)
        if p.text is None:
            return None
        p.entries = parse_network(p.text, f"{PROPOSALS}/{NETWORK}")
        current_text = _installed(home, f"settings/{NETWORK}", MAX_TEXT_BYTES)
        try:
            current = parse_network(current_text, f"settings/{NETWORK}") if current_text is not None else []
        except ProposalError:
            current = []  # settings/network.toml that does not parse allows nothing now (jail exec refuses it)
        p.diff = diff_sets(network_reach(current), network_reach(p.entries))
    except ProposalError as err:
        p.error = str(err)
    return p


def tool_names(home: Path) -> list[str]:
    return _list_dir(Path(home), (PROPOSALS, TOOLS))


def pending(home: Path) -> list[ToolProposal | NetworkProposal]:
    """Every proposal in `home`: tools by name, then network.toml."""
    out: list[ToolProposal | NetworkProposal] = []
    for name in tool_names(home):
        t = tool_proposal(home, name)
        if t is not None:
            out.append(t)
    n = network_proposal(home)
    if n is not None:
        out.append(n)
    return out
