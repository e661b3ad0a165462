"""sandbox/packages.py: install layouts, and IronClaw's package manifests turned into capabilities files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from wasm.support import IRONCLAW_SKIP, IRONCLAW_TOOLS, wat

from sandbox import capabilities
from sandbox.packages import PackageError, resolve, tool_name


def test_names() -> None:
    assert tool_name("slack-tool") == "slack" and tool_name("Web Search_tool") == "web-search"


@pytest.mark.skipif(not (IRONCLAW_TOOLS / "v0.3.0" / "github").is_dir(), reason=IRONCLAW_SKIP)
def test_reborn_v2_manifest_becomes_capabilities(tmp_path: Path) -> None:
    pkg = tmp_path / "github"
    shutil.copytree(IRONCLAW_TOOLS / "v0.3.0" / "github", pkg)
    p = resolve(pkg)
    assert p.name == "github" and p.wasm.name == "github_tool.wasm" and p.capabilities is not None
    caps = capabilities.parse(p.capabilities)
    assert caps.http is not None
    assert [e.host for e in caps.http.allowlist] == ["api.github.com", "*.blob.core.windows.net"]
    (cred,) = caps.http.credentials
    assert (cred.secret_name, cred.location.type, cred.host_patterns) == ("github_runtime_token", "bearer",
                                                                          ("api.github.com",))
    assert caps.secret_names == ("github_runtime_token",)


def test_v1_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "web_search.wasm").write_text(wat("echo"))
    (tmp_path / "web_search.capabilities.json").write_text(json.dumps({"secrets": {"allowed_names": ["k"]}}))
    p = resolve(tmp_path / "web_search.wasm")
    assert p.name == "web_search" and p.capabilities and not p.note
    (tmp_path / "web_search.capabilities.json").write_text('{"secret": {}}')
    with pytest.raises(PackageError, match="secret: unknown field"):
        resolve(tmp_path / "web_search.wasm")
    (tmp_path / "web_search.capabilities.json").unlink()
    p = resolve(tmp_path)  # one <name>.wasm in the folder
    assert p.capabilities is None and "no capability" in p.note
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(PackageError, match=r"expected a \.wasm"):
        resolve(tmp_path / "x.txt")
    with pytest.raises(PackageError, match="no such file"):
        resolve(tmp_path / "absent")


def test_manifest_without_module(tmp_path: Path) -> None:
    (tmp_path / "manifest.toml").write_text('id = "x"\n[runtime]\nmodule = "wasm/../../etc/passwd"\n')
    with pytest.raises(PackageError, match="names no wasm module"):
        resolve(tmp_path)
