"""sandbox/capabilities.py: IronClaw's capabilities.json (v1) loads whole; bad files are refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wasm.support import IRONCLAW_SKIP, IRONCLAW_TOOLS

from sandbox import capabilities
from sandbox.capabilities import CapabilitiesError

SIDECARS = sorted((IRONCLAW_TOOLS / "v0.3.0" / "capabilities").glob("*.capabilities.json"))


@pytest.mark.skipif(not SIDECARS, reason=IRONCLAW_SKIP)
@pytest.mark.parametrize("path", SIDECARS, ids=lambda p: p.name)
def test_every_shipped_sidecar_loads(path: Path) -> None:
    caps = capabilities.load(path)
    assert caps.http is not None and caps.http.allowlist
    assert caps.raw.get("description")
    assert caps.summary()["http"]


@pytest.mark.skipif(not SIDECARS, reason=IRONCLAW_SKIP)
def test_nested_capabilities_and_fields_the_host_does_not_act_on() -> None:
    web = capabilities.load(IRONCLAW_TOOLS / "v0.3.0" / "capabilities" / "web-search-tool.capabilities.json")
    assert web.http is not None  # nested under "capabilities"
    cred = web.http.credentials[0]
    assert (cred.secret_name, cred.location.type, cred.location.name) == ("brave_api_key", "header",
                                                                          "X-Subscription-Token")
    assert web.raw["auth"]["env_var"] == "BRAVE_API_KEY" and "setup" in web.raw
    gh = capabilities.load(IRONCLAW_TOOLS / "v0.3.0" / "capabilities" / "github-tool.capabilities.json")
    assert "discovery_summary" in gh.raw and "webhook" in gh.raw
    assert gh.secret_allowed("github_token") and gh.secret_allowed("github_anything")
    assert not gh.secret_allowed("slack_bot_token")


def test_defaults_are_ironclaws() -> None:
    http = capabilities.parse('{"http": {"allowlist": [{"host": "a.test"}]}}').http
    assert http is not None
    assert (http.rate_limit.per_minute, http.rate_limit.per_hour) == (60, 1000)
    assert (http.max_request_bytes, http.max_response_bytes, http.timeout_secs) == (2**20, 10 * 2**20, 30)


def test_every_v1_field_loads() -> None:
    doc = {
        "version": "1.0.0", "wit_version": "0.3.0", "description": "d", "discovery_summary": {"notes": ["n"]},
        "http": {"allowlist": [{"host": "*.a.test", "path_prefix": "/v1/", "methods": ["get"]}],
                 "credentials": {"k": {"secret_name": "s", "location": {"type": "url_path", "placeholder": "{T}"},
                                       "host_patterns": ["*.a.test"], "path_patterns": ["/v1/*"],
                                       "optional": True}},
                 "rate_limit": {"requests_per_minute": 1, "requests_per_hour": 2},
                 "max_request_bytes": 10, "max_response_bytes": 20, "timeout_secs": 3},
        "secrets": {"allowed_names": ["s*"]},
        "tool_invoke": {"aliases": {"x": "echo"}, "rate_limit": {"requests_per_minute": 5}},
        "workspace": {"allowed_prefixes": ["notes/"]},
        "webhook": {"secret_header": "h", "secret_name": "w", "signature_key_secret_name": "e",
                    "hmac_secret_name": "m", "hmac_signature_header": "sig", "hmac_timestamp_header": "ts",
                    "hmac_prefix": "sha256="},
        "websocket": {"anything": [1, 2]},
        "auth": {"secret_name": "s", "display_name": "S", "instructions": "i", "setup_url": "u", "token_hint": "t",
                 "env_var": "E", "provider": "p", "optional": False,
                 "oauth": {"authorization_url": "a", "token_url": "t", "client_id": "c", "client_id_env": "C",
                           "client_secret": "x", "client_secret_env": "X", "scopes": ["s"], "use_pkce": True,
                           "extra_params": {"k": "v"}, "pending_instructions": "p", "access_token_field": "f"},
                 "validation_endpoint": {"url": "u", "method": "GET", "success_status": 200, "headers": {"a": "b"}}},
        "setup": {"required_secrets": [{"name": "s", "prompt": "p", "optional": True}],
                  "optional_secrets": [{"name": "o", "prompt": "p"}],
                  "required_fields": [{"name": "f", "prompt": "p", "input_type": "password", "setting_path": "x"}]},
        "config": {"free": {"form": 1}},
    }
    caps = capabilities.parse(json.dumps(doc))
    assert caps.http is not None and caps.http.allowlist[0].methods == ("GET",)
    assert caps.http.credentials[0].path_patterns == ("/v1/*",) and caps.http.credentials[0].optional
    assert caps.aliases == {"x": "echo"} and caps.workspace_prefixes == ("notes/",)
    assert caps.http.rate_limit.per_hour == 2 and caps.http.timeout_secs == 3


@pytest.mark.parametrize("doc,field", [
    ({"htp": {}}, "htp"),
    ({"http": {"allowlist": [{"host": "a.test", "verbs": ["GET"]}]}}, "http.allowlist[0].verbs"),
    ({"capabilities": {"secrets": {"names": []}}}, "capabilities.secrets.names"),
    ({"http": {"timeout_secs": "30"}}, "http.timeout_secs"),
    ({"http": {"rate_limit": {"requests_per_minute": -1}}}, "http.rate_limit.requests_per_minute"),
    ({"http": {"allowlist": [{"path_prefix": "/"}]}}, "http.allowlist[0].host"),
    ({"http": {"allowlist": [{"host": "a.test", "path_prefix": "api"}]}}, "http.allowlist[0].path_prefix"),
    ({"http": {"allowlist": [{"host": "a.*.test"}]}}, "http.allowlist[0].host"),
    ({"http": {"credentials": {"k": {"secret_name": "s", "location": {"type": "cookie"}}}}},
     "http.credentials.k.location.type"),
    ({"http": {"credentials": {"k": {"secret_name": "s", "location": {"type": "basic"}}}}},
     "http.credentials.k.location.username"),
    ({"secrets": {"allowed_names": "s"}}, "secrets.allowed_names"),
    ({"auth": {"display_name": "x"}}, "auth.secret_name"),
])
def test_malformed_refused_naming_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(CapabilitiesError) as e:
        capabilities.parse(json.dumps(doc), "x.json")
    assert f"x.json: {field}" in str(e.value)


def test_not_json_or_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(CapabilitiesError, match="not JSON"):
        capabilities.parse("{", "x.json")
    with pytest.raises(CapabilitiesError, match="JSON object"):
        capabilities.parse("[]", "x.json")


def test_no_file_no_capability(tmp_path: Path) -> None:
    caps = capabilities.load(tmp_path / "absent.json")
    assert caps.http is None and not caps.secret_names and not caps.workspace_prefixes and not caps.aliases
    assert not caps.secret_allowed("anything")


def test_outer_block_wins_over_nested() -> None:
    caps = capabilities.parse(json.dumps({"workspace": {"allowed_prefixes": ["outer/"]},
                                          "capabilities": {"workspace": {"allowed_prefixes": ["inner/"]},
                                                           "secrets": {"allowed_names": ["s"]}}}))
    assert caps.workspace_prefixes == ("outer/",) and caps.secret_names == ("s",)
