"""Where a tool to install comes from: ClawFS's and IronClaw's layouts, resolved to (name, binary, capabilities).

Owns layout recognition only (no copying, no running):
- a ClawFS tool folder: `tool.wasm` (+ `capabilities.json`);
- IronClaw v1's files: `<name>.wasm` beside `<name>.capabilities.json` (a `-tool` / `_tool` suffix is dropped from
  the name, as IronClaw's registry names tools);
- an IronClaw extension package: a folder with `manifest.toml` (`reborn.extension_manifest.v2`/`v3`) and
  `wasm/<module>.wasm`.  A package has no capabilities file: its credential audiences (`audience` + `target` /
  `injection`) and `network_targets` become a v1 capabilities file (https to those hosts, the header credential
  under the handle's name as the secret name), so the package's HTTP works under the same policy.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .capabilities import CapabilitiesError, parse

NAME_CLEAN = re.compile(r"[^a-z0-9_-]+")


class PackageError(ValueError):
    """A path that is no tool layout this host knows; the message says which layouts are."""


@dataclass
class Package:
    name: str
    wasm: Path
    capabilities: str | None  # the capabilities.json text to install, or None (no capability)
    note: str = ""


def tool_name(raw: str) -> str:
    name = NAME_CLEAN.sub("-", raw.lower()).strip("-_")
    for suffix in ("-tool", "_tool"):
        name = name.removesuffix(suffix)
    return name[:64]


def _read_caps(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    try:
        parse(text, str(path))
    except CapabilitiesError as e:
        raise PackageError(str(e)) from None
    return text


def resolve(path: Path) -> Package:
    """The package at `path`, or PackageError naming what was expected."""
    if path.is_file():
        if path.suffix != ".wasm":
            raise PackageError(f"{path}: expected a .wasm file, a tool folder or an IronClaw package folder")
        stem = path.name.removesuffix(".wasm")
        caps = path.with_name(f"{stem}.capabilities.json")
        return Package(tool_name(stem), path, _read_caps(caps) if caps.exists() else None,
                       "" if caps.exists() else f"no {caps.name} beside it: installed with no capability")
    if not path.is_dir():
        raise PackageError(f"{path}: no such file or folder")
    if (path / "tool.wasm").is_file():
        caps = path / "capabilities.json"
        return Package(tool_name(path.resolve().name), path / "tool.wasm",
                       _read_caps(caps) if caps.exists() else None)
    if (path / "manifest.toml").is_file():
        return _from_manifest(path)
    wasms = sorted(path.glob("*.wasm"))
    if len(wasms) == 1:
        return resolve(wasms[0])
    raise PackageError(f"{path}: no tool.wasm, no manifest.toml and not exactly one <name>.wasm in it")


def _from_manifest(path: Path) -> Package:
    try:
        manifest = tomllib.loads((path / "manifest.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PackageError(f"{path / 'manifest.toml'}: cannot read ({e})") from None
    runtime = manifest.get("runtime") or {}
    module = runtime.get("module")
    candidates = [path / module, path / Path(module).name] if isinstance(module, str) else []
    # a copied package may have lost its wasm/ folder: then the one .wasm beside the manifest is the module
    found = sorted((path / "wasm").glob("*.wasm")) or sorted(path.glob("*.wasm"))
    candidates += found[:1] if len(found) == 1 else []
    wasm = next((c for c in candidates if c.is_file()), None)
    if wasm is None or not wasm.is_file() or path.resolve() not in wasm.resolve().parents:
        raise PackageError(f"{path}: manifest.toml names no wasm module inside the package (runtime.module)")
    caps = path / "capabilities.json"
    if caps.exists():
        return Package(tool_name(str(manifest.get("id") or path.name)), wasm, _read_caps(caps))
    text = json.dumps(manifest_capabilities(manifest), indent=2)
    return Package(tool_name(str(manifest.get("id") or path.name)), wasm, _read_caps_text(text, path),
                   "capabilities.json made from the manifest's credential audiences and network targets")


def _read_caps_text(text: str, path: Path) -> str:
    try:
        parse(text, f"{path}/manifest.toml (as capabilities)")
    except CapabilitiesError as e:
        raise PackageError(str(e)) from None
    return text


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(d for v in node.values() for d in _walk(v))]
    if isinstance(node, list):
        return [d for v in node for d in _walk(v)]
    return []


def manifest_capabilities(manifest: dict[str, Any]) -> dict[str, Any]:
    """A v1 capabilities document from a Reborn manifest's credential audiences and network targets."""
    hosts: list[str] = []
    credentials: dict[str, Any] = {}
    for d in _walk(manifest):
        audience, inject = d.get("audience"), d.get("target") or d.get("injection")
        if isinstance(audience, dict) and isinstance(inject, dict) and d.get("handle"):
            host = str(audience.get("host") or audience.get("host_pattern") or "")
            if host and audience.get("scheme", "https") == "https" and inject.get("type") == "header":
                hosts.append(host)
                credentials.setdefault(f"{d['handle']}@{host}", _header_credential(str(d["handle"]), host, inject))
        for t in d.get("network_targets") or []:
            if isinstance(t, dict) and t.get("scheme", "https") == "https" and t.get("host_pattern"):
                hosts.append(str(t["host_pattern"]))
    names = sorted({c["secret_name"] for c in credentials.values()})
    doc: dict[str, Any] = {"description": str(manifest.get("description") or "")} if manifest.get("description") \
        else {}
    if hosts:
        doc["http"] = {"allowlist": [{"host": h} for h in dict.fromkeys(hosts)], "credentials": credentials}
    if names:
        doc["secrets"] = {"allowed_names": names}
    return doc


def _header_credential(handle: str, host: str, inject: dict[str, Any]) -> dict[str, Any]:
    name, prefix = str(inject.get("name") or ""), inject.get("prefix")
    if name.lower() == "authorization" and prefix == "Bearer ":
        location: dict[str, Any] = {"type": "bearer"}
    else:
        location = {"type": "header", "name": name, **({"prefix": prefix} if prefix else {})}
    return {"secret_name": handle, "location": location, "host_patterns": [host]}
