"""sandbox/toolhost.py + sandbox/wasm.py with real wasmtime: synthetic tools (tests/wasm/*.wat) and IronClaw's own
prebuilt tools (../shared/ironclaw-tools), limits, capabilities, the leak detector, the compiled cache."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from wasm.support import (
    ALLOWED,
    IRONCLAW_SKIP,
    IRONCLAW_TOOLS,
    Secrets,
    Server,
    StubResolver,
    http_caps,
    install,
    install_file,
    serve,
    wat,
)

from sandbox import wasm
from sandbox.egress import Egress
from sandbox.errors import ToolError
from sandbox.toolhost import ToolHost


@pytest.fixture(scope="module")
def runtime() -> Iterator[wasm.WasmRuntime]:
    rt = wasm.WasmRuntime(None)
    yield rt
    rt.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def server() -> Iterator[Server]:
    with serve() as srv:
        yield srv


def host_for(home: Path, runtime: wasm.WasmRuntime, srv: Server | None = None) -> ToolHost:
    gateway = Egress(srv.config()) if srv is not None else Egress()
    return ToolHost(home, runtime=runtime, gateway=gateway)


def test_echo_and_texts(home: Path, runtime: wasm.WasmRuntime) -> None:
    install(home, "echo", wat("echo"))
    host = host_for(home, runtime)
    assert host.names() == ["echo"]
    out = host.run("echo", '{"text": "hi"}')
    assert out.output == '{"text": "hi"}' and out.fuel and out.fuel > 0
    description, schema = host.texts(host.tool("echo"))
    assert description == "Echoes its parameters." and schema["properties"]["text"]["type"] == "string"


def test_wit_041_success_and_failure(home: Path, runtime: wasm.WasmRuntime) -> None:
    install(home, "echo41", wat("echo_v041"))
    install(home, "fail41", wat("fail_v041"))
    host = host_for(home, runtime)
    assert host.tool("echo41").loaded.wit_version == "0.4.1"
    assert host.run("echo41", "[1]").output == "[1]"
    with pytest.raises(ToolError) as e:
        host.run("fail41", "{}")
    assert e.value.kind == "tool" and e.value.reason == "no such action"
    assert e.value.detail == {"guest_kind": "input", "code": "bad_params"}


@pytest.mark.parametrize("tool,kind,limits", [
    ("loop", "fuel", None),
    ("loop", "timeout", 'fuel = 1000000000000000\ntimeout_secs = 0.3\n'),
    ("alloc", "memory", None),
    ("panic", "trap", None),
    ("badutf8", "malformed", None),
])
def test_failures_are_one_typed_error(home: Path, runtime: wasm.WasmRuntime, tool: str, kind: str,
                                      limits: str | None) -> None:
    d = install(home, tool, wat(tool))
    if limits:
        (d / "limits.toml").write_text(limits)
    host = host_for(home, runtime)
    with pytest.raises(ToolError) as e:
        host.run(tool, "{}")
    assert e.value.kind == kind
    install(home, "echo", wat("echo"))  # the host still runs tools after a trap
    assert host.run("echo", "{}").output == "{}"


def test_memory_limit_is_the_stores(home: Path, runtime: wasm.WasmRuntime) -> None:
    """The same allocation that fails at 10 MiB fails at 2 MiB too, and a limit below the tool's initial memory
    refuses instantiation as a memory error."""
    d = install(home, "alloc", wat("alloc"))
    (d / "limits.toml").write_text("memory_mib = 2\n")
    with pytest.raises(ToolError) as e:
        host_for(home, runtime).run("alloc", "{}")
    assert e.value.kind == "memory"
    d = install(home, "echo", wat("echo"))
    (d / "limits.toml").write_text("memory_mib = 0.01\n")
    with pytest.raises(ToolError) as e:
        host_for(home, runtime).run("echo", "{}")
    assert e.value.kind == "memory"


def test_bad_limits_file(home: Path, runtime: wasm.WasmRuntime) -> None:
    d = install(home, "echo", wat("echo"))
    (d / "limits.toml").write_text("fuel_limit = 3\n")
    with pytest.raises(ToolError, match="unknown key 'fuel_limit'"):
        host_for(home, runtime).run("echo", "{}")


def test_http_allowed_and_denied(home: Path, runtime: wasm.WasmRuntime, server: Server) -> None:
    install(home, "http", wat("http"), http_caps(server.port))
    host = host_for(home, runtime, server)
    out = host.run("http", json.dumps(server.url("/api/ok")))
    assert out.output == '{"ok": true}' and out.logs == [("info", "fetching")]
    with pytest.raises(ToolError, match="not in the tool's allowlist"):
        host.run("http", json.dumps(f"https://{ALLOWED}:{server.port}/private"))
    with pytest.raises(ToolError, match="not in the tool's allowlist"):
        host.run("http", json.dumps("https://elsewhere.invalid/api/ok"))
    assert [s["path"] for s in server.seen] == ["/api/ok"]


def test_http_without_capability(home: Path, runtime: wasm.WasmRuntime, server: Server) -> None:
    install(home, "http", wat("http"))  # no capabilities.json: no capability
    with pytest.raises(ToolError, match="no HTTP capability"):
        host_for(home, runtime, server).run("http", json.dumps(server.url("/api/ok")))
    assert server.seen == []


def test_http_response_with_a_token_is_withheld(home: Path, runtime: wasm.WasmRuntime, server: Server,
                                               caplog: pytest.LogCaptureFixture) -> None:
    install(home, "http", wat("http"), http_caps(server.port))
    with caplog.at_level(logging.WARNING), pytest.raises(ToolError, match="withheld"):
        host_for(home, runtime, server).run("http", json.dumps(server.url("/api/leak")))
    assert "github_token" in caplog.text and "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789" not in caplog.text


def test_request_carrying_a_token_is_refused(home: Path, runtime: wasm.WasmRuntime, server: Server) -> None:
    install(home, "http", wat("http"), http_caps(server.port))
    url = server.url("/api/ok?k=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789")
    with pytest.raises(ToolError, match="carries a secret"):
        host_for(home, runtime, server).run("http", json.dumps(url))
    assert server.seen == []


def test_output_and_log_with_a_credential_are_withheld(home: Path, runtime: wasm.WasmRuntime,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    install(home, "leak", wat("leak"))
    with caplog.at_level(logging.WARNING), pytest.raises(ToolError) as e:
        host_for(home, runtime).run("leak", "{}")
    assert e.value.kind == "blocked" and "github_token" in e.value.reason
    assert "ghp_aBcD" not in str(e.value) and "output withheld" in caplog.text


def test_workspace_read_inside_and_outside_prefixes(home: Path, runtime: wasm.WasmRuntime) -> None:
    (home / "notes").mkdir()
    (home / "notes" / "a.json").write_text('{"a": 1}')
    (home / "private.json").write_text('{"p": 1}')
    (home / "secrets").mkdir()
    (home / "secrets" / "tok").write_text("value")
    (home / "notes" / "link.json").symlink_to(home / "private.json")
    install(home, "ws", wat("workspace"), {"workspace": {"allowed_prefixes": ["notes/", "secrets/"]}})
    host = host_for(home, runtime)
    assert host.run("ws", '"notes/a.json"').output == '{"a": 1}'
    for path in ("private.json", "notes/../private.json", "/etc/passwd", "secrets/tok", "notes/missing.json"):
        with pytest.raises(ToolError, match="none"):
            host.run("ws", json.dumps(path))
    # a symlink inside the prefix to a file outside it still reads (it is inside the home); one out of the home not
    assert host.run("ws", '"notes/link.json"').output == '{"p": 1}'
    (home / "notes" / "out.json").symlink_to("/etc/hostname")
    with pytest.raises(ToolError, match="none"):
        host.run("ws", '"notes/out.json"')
    install(home, "ws2", wat("workspace"))  # no workspace capability
    with pytest.raises(ToolError, match="none"):
        host.run("ws2", '"notes/a.json"')


def test_secret_exists_names_only(home: Path, runtime: wasm.WasmRuntime) -> None:
    (home / "secrets").mkdir()
    (home / "secrets" / "slack_token").write_text("xoxb-value")
    (home / "secrets" / "other").write_text("v")
    install(home, "sec", wat("secret"), {"secrets": {"allowed_names": ["slack_*"]}})
    host = host_for(home, runtime)
    assert host.run("sec", '"slack_token"').output == "true"
    assert host.run("sec", '"slack_missing"').output == "false"
    assert host.run("sec", '"other"').output == "false"  # exists, but not among the tool's allowed names


def test_not_found_and_invalid(home: Path, runtime: wasm.WasmRuntime) -> None:
    host = host_for(home, runtime)
    with pytest.raises(ToolError) as e:
        host.run("nope", "{}")
    assert e.value.kind == "not-found"
    install(home, "junk", b"\0asm not really")
    with pytest.raises(ToolError) as e:
        host.run("junk", "{}")
    assert e.value.kind == "invalid"
    install(home, "badcaps", wat("echo"), None)
    (home / "tools" / "badcaps" / "capabilities.json").write_text('{"htp": {}}')
    with pytest.raises(ToolError, match="htp: unknown field") as e:
        host.run("badcaps", "{}")
    assert e.value.kind == "capabilities"


def test_compiled_cache_on_disk(home: Path, tmp_path: Path) -> None:
    install(home, "echo", wat("echo"))
    cache = tmp_path / "cache"
    rt1 = wasm.WasmRuntime(cache)
    try:
        assert ToolHost(home, runtime=rt1).tool("echo").loaded.from_cache == "compiled"
        assert ToolHost(home, runtime=rt1).tool("echo").loaded.from_cache == "memory"
    finally:
        rt1.close()
    files = list(cache.iterdir())
    assert len(files) == 1 and wasm.WASMTIME_VERSION in files[0].name and (cache.stat().st_mode & 0o077) == 0
    rt2 = wasm.WasmRuntime(cache)
    try:
        host = ToolHost(home, runtime=rt2)
        assert host.tool("echo").loaded.from_cache == "disk" and host.run("echo", "{}").output == "{}"
    finally:
        rt2.close()
    files[0].write_bytes(b"damaged")  # a damaged cache file is recompiled, not trusted
    rt3 = wasm.WasmRuntime(cache)
    try:
        assert ToolHost(home, runtime=rt3).tool("echo").loaded.from_cache == "compiled"
    finally:
        rt3.close()


IRONCLAW = sorted(IRONCLAW_TOOLS.glob("v*/*/*.wasm"))


@pytest.mark.skipif(not IRONCLAW, reason=IRONCLAW_SKIP)
@pytest.mark.parametrize("binary", IRONCLAW, ids=lambda p: f"{p.parent.parent.name}-{p.parent.name}")
def test_ironclaw_tools_run_unchanged(binary: Path, home: Path, runtime: wasm.WasmRuntime) -> None:
    version = binary.parent.parent.name[1:]
    install_file(home, binary.parent.name, binary)
    host = host_for(home, runtime)
    tool = host.tool(binary.parent.name)
    assert tool.loaded.wit_version == version
    description, schema = host.texts(tool)
    assert description and isinstance(schema, dict)
    with pytest.raises(ToolError) as e:
        host.run(binary.parent.name, "{}")  # no invocation context: the tool's own failure, not a crash
    assert e.value.kind == "tool" and "missing_invocation_context" in e.value.reason


@pytest.mark.skipif(not IRONCLAW, reason=IRONCLAW_SKIP)
@pytest.mark.parametrize("version", ["v0.3.0", "v0.4.1"])
def test_ironclaw_slack_http_goes_through_the_policy(version: str, home: Path, runtime: wasm.WasmRuntime,
                                                     server: Server) -> None:
    """IronClaw's Slack tool asks for slack.com; with no capability (or not in the allowlist) it is refused before
    any lookup, and the tool reports the host's denial as its own failure."""
    install_file(home, "slack", IRONCLAW_TOOLS / version / "slack" / "slack_user_tool.wasm")
    (home / "tools" / "slack" / "capabilities.json").write_text(json.dumps(http_caps(server.port)))
    host = host_for(home, runtime, server)
    with pytest.raises(ToolError) as e:
        host.run("slack", '{"query": "x"}', '{"capability_id": "slack.search_messages"}')
    assert e.value.kind == "tool" and "allowlist" in e.value.reason
    if version == "v0.4.1":
        assert e.value.detail.get("guest_kind") == "network-denied"
    assert server.seen == []


def test_tool_invoke_by_alias_only(home: Path, runtime: wasm.WasmRuntime) -> None:
    install(home, "echo", wat("echo"))
    install(home, "panic", wat("panic"))
    install(home, "inv", wat("invoke"), {"tool_invoke": {"aliases": {"e": "echo", "p": "panic", "self": "inv"}}})
    host = host_for(home, runtime)
    assert host.texts(host.tool("inv"))[0] == "Invokes another tool."
    out = host.run("inv", '"e"')
    assert out.output == '"e"' and out.logs == [("info", "after")]  # imports work after the nested call
    with pytest.raises(ToolError, match="trap"):
        host.run("inv", '"p"')
    with pytest.raises(ToolError, match=r"not in this tool's tool_invoke\.aliases"):
        host.run("inv", '"echo"')  # a real name is not an alias
    with pytest.raises(ToolError, match="nested more than"):
        host.run("inv", '"self"')


def test_cache_dir_others_can_write_is_not_used(home: Path, tmp_path: Path) -> None:
    install(home, "echo", wat("echo"))
    cache = tmp_path / "shared-cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    rt = wasm.WasmRuntime(cache)
    try:
        assert ToolHost(home, runtime=rt).run("echo", "{}").output == "{}"
    finally:
        rt.close()
    assert list(cache.iterdir()) == []  # neither written nor, by the same check, read


def test_http_gets_only_the_calls_remaining_wall_time(home: Path, runtime: wasm.WasmRuntime, server: Server) -> None:
    d = install(home, "http", wat("http"), http_caps(server.port))
    (d / "limits.toml").write_text("timeout_secs = 0.5\n")
    with pytest.raises(ToolError) as e:  # the server would answer only after 10 s
        host_for(home, runtime, server).run("http", json.dumps(server.url("/api/slow")))
    # the request timed out when the call's time ran out; back in wasm the epoch deadline had passed too
    assert e.value.kind == "timeout" or "timed out" in e.value.reason


SLACK_TOKEN = "xoxp-test-token-value-123456"


@pytest.fixture
def fake_slack() -> Iterator[Server]:
    """A local HTTPS server standing in for slack.com on port 443 of a loopback address of its own (IronClaw's tool
    dials https://slack.com/api/...; stub DNS sends that name here, nothing leaves the machine)."""
    if os.geteuid() != 0:
        pytest.skip("binding port 443 (the port IronClaw's Slack tool dials) on a loopback address needs root")
    address = f"127.{os.getpid() % 250 + 1}.{os.getpid() // 250 % 250 + 1}.9"
    try:
        with serve(names=("slack.com",), address=(address, 443)) as srv:
            yield srv
    except OSError as e:
        pytest.skip(f"cannot listen on {address}:443 ({e.strerror})")


@pytest.mark.skipif(not IRONCLAW, reason=IRONCLAW_SKIP)
@pytest.mark.parametrize("version", ["v0.3.0", "v0.4.1"])
def test_ironclaw_slack_end_to_end(version: str, home: Path, runtime: wasm.WasmRuntime, fake_slack: Server) -> None:
    """IronClaw's own Slack tool, unchanged, searches messages: its request passes the allowlist, the token is
    injected at the boundary (the tool only learns that the secret exists), and the answer comes back as output."""
    install_file(home, "slack", IRONCLAW_TOOLS / version / "slack" / "slack_user_tool.wasm")
    caps = {"http": {"allowlist": [{"host": "slack.com", "path_prefix": "/api/", "methods": ["GET", "POST"]}],
                     "credentials": {"t": {"secret_name": "slack_user_token", "location": {"type": "bearer"},
                                           "host_patterns": ["slack.com"]}}}}
    (home / "tools" / "slack" / "capabilities.json").write_text(json.dumps(caps))
    secrets = Secrets({"slack_user_token": SLACK_TOKEN})
    cfg = fake_slack.config(resolver=StubResolver({"slack.com": [fake_slack.address]}), credentials=secrets)
    host = ToolHost(home, runtime=runtime, gateway=Egress(cfg))
    out = host.run("slack", '{"query": "deadline"}', '{"capability_id": "slack.search_messages"}')
    assert "deadline is friday" in out.output and SLACK_TOKEN not in out.output
    first = fake_slack.seen[0]
    assert str(first["path"]).startswith("/api/search.messages?query=deadline")
    assert first["headers"]["Authorization"] == f"Bearer {SLACK_TOKEN}"  # type: ignore[index]
    assert ("slack", "slack_user_token") in secrets.asked


def test_injected_credential_echoed_back_reaches_the_tool_redacted(home: Path, runtime: wasm.WasmRuntime,
                                                                    server: Server) -> None:
    """The server echoes the Authorization it received (raw and base64): the tool prints what it got, and what it
    got had the injected value replaced before it entered the sandbox."""
    secret = "injected-secret-value-0123456789"
    install(home, "http", wat("http"), http_caps(server.port, credentials={
        "k": {"secret_name": "tok", "location": {"type": "bearer"}, "host_patterns": [ALLOWED]}}))
    host = ToolHost(home, runtime=runtime, gateway=Egress(server.config(credentials=Secrets({"tok": secret}))))
    out = host.run("http", json.dumps(server.url("/api/echo")))
    assert server.seen[-1]["headers"]["Authorization"] == f"Bearer {secret}"  # type: ignore[index]
    assert secret not in out.output and "[REDACTED:tok]" in out.output
    b64 = json.loads(out.output)["b64"]  # base64 of "Bearer <secret>/api/echo": the value sits mid-group
    assert "[REDACTED:tok]" in b64 and b64 != base64.b64encode(f"Bearer {secret}/api/echo".encode()).decode()


class BrokenImports:
    def log(self, level: str, message: str) -> None:
        raise KeyError("a bug in the host")

    def now_millis(self) -> int:
        return 0

    def workspace_read(self, path: str) -> str | None:
        return None

    def http_request(self, *a: object) -> wasm.HttpResult:
        raise RuntimeError

    def tool_invoke(self, alias: str, params_json: str) -> tuple[bool, str]:
        return False, ""

    def secret_exists(self, name: str) -> bool:
        return False


def test_a_host_import_bug_is_a_tool_error(runtime: wasm.WasmRuntime) -> None:
    loaded = runtime.load(wat("leak"))  # calls log first
    with pytest.raises(ToolError, match="host failed") as e:
        runtime.execute(loaded, "{}", None, wasm.Limits(), BrokenImports())
    assert e.value.kind == "trap"


def test_panic_message_and_allocation_failure_from_stderr(home: Path, runtime: wasm.WasmRuntime) -> None:
    install(home, "pm", wat("panic_message"))
    install(home, "oom", wat("oom_message"))
    host = host_for(home, runtime)
    with pytest.raises(ToolError) as e:
        host.run("pm", "{}")
    assert e.value.kind == "trap" and e.value.reason == "the tool panicked: the tool hit a bug (at src/lib.rs:42:5)"
    with pytest.raises(ToolError) as e:
        host.run("oom", "{}")
    assert e.value.kind == "memory"
    install(home, "panic", wat("panic"))
    with pytest.raises(ToolError) as e:  # each call's stderr starts empty: no earlier panic message shows here
        host.run("panic", "{}")
    assert e.value.reason == "the tool trapped: wasm trap: wasm `unreachable` instruction executed"


def test_a_component_without_the_whole_tool_interface_is_refused(home: Path, runtime: wasm.WasmRuntime) -> None:
    install(home, "noschema", wat("echo").replace('(export "schema" (func $schema))', ""))
    with pytest.raises(ToolError, match="does not export schema") as e:
        host_for(home, runtime).tool("noschema")
    assert e.value.kind == "invalid"
