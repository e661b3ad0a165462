"""`clawfs jail exec` end to end: CMD's exit status as its own, the proxy from HTTP_PROXY refusing a name no list
allows, the LLM endpoint from settings/llm.toml allowed on loopback, bad input exiting 1 with the fix."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import jailcheck

pytestmark = [pytest.mark.jail,
              pytest.mark.skipif(os.geteuid() != 0, reason="building a jail's root needs root (CI runs as root)"),
              pytest.mark.skipif(not all(layer.ok for layer in jailcheck.layers()),
                                 reason="this host lacks a jail layer: see `kernel.jailcheck.layers()`")]


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    h = tmp_path / "home"
    (h / "settings").mkdir(parents=True)
    h.chmod(0o777)
    port = srv.server_address[1]
    (h / "settings" / "llm.toml").write_text(f'[llm]\nbase_url = "http://127.0.0.1:{port}/v1"\n')
    yield h, port
    srv.shutdown()
    srv.server_close()


def clawfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mountd.cli", *args], capture_output=True, text=True, timeout=120)


def test_exec_runs_the_command_with_the_proxy(home: tuple[Path, int], tmp_path: Path) -> None:
    h, port = home
    audit = tmp_path / "audit.jsonl"
    script = ("import urllib.request as u, urllib.error as e\n"
              f"print(u.urlopen('http://127.0.0.1:{port}/v1/models').read().decode())\n"
              "try:\n    u.urlopen('http://api.example.invalid/')\nexcept e.HTTPError as x:\n    print(x.code)\n"
              "raise SystemExit(9)")
    p = clawfs("jail", "exec", str(h), "--json", "--audit-log", str(audit), "--", "python3", "-c", script)
    assert p.returncode == 9, p.stderr
    assert p.stdout.split() == ["hello", "403"]
    figures = json.loads(p.stderr.strip().splitlines()[-1])
    assert figures["proxy"] == {"allowed": 1, "refused": 1}
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["allowed"] for x in lines] == [True, False]


def test_unknown_tool_is_a_one_line_error(home: tuple[Path, int]) -> None:
    p = clawfs("jail", "exec", str(home[0]), "--tool", "nope", "--", "true")
    assert p.returncode == 1
    assert "no tool 'nope'" in p.stderr


def test_missing_command_is_usage(home: tuple[Path, int]) -> None:
    assert clawfs("jail", "exec", str(home[0])).returncode == 2


def test_check_lists_every_layer() -> None:
    p = clawfs("jail", "check", "--json")
    assert p.returncode == 0, p.stderr
    layers = json.loads(p.stdout)
    assert set(layers) == {"userns", "seccomp", "landlock", "cgroups"}
    assert all(v["ok"] for v in layers.values())
