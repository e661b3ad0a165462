"""The LLM client: OpenAI chat completions with `tools` (function calling) over HTTP (httpx).

Retries with exponential backoff on 429, 5xx and connection errors (honouring a short `Retry-After`), a
timeout, and an `LLMError` whose message is fit to tell the user (the runtime replies with it).

Secrets: the runtime never holds the API key.  With `api_key_secret = "NAME"` in settings/llm.toml, requests
carry `Authorization: Bearer <placeholder(NAME)>` and the egress path swaps the placeholder for the value (the
jail's egress proxy in the mount daemon, mountd/proxy_service.py).  Without `api_key_secret`, no Authorization
header is sent (local servers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from .config import LLMSettings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 30.0


def placeholder(secret_name: str) -> str:
    """What stands for secret `secret_name` in an outgoing request until the egress path replaces it."""
    return f"clawfs-secret:{secret_name}"


class LLMError(Exception):
    """The LLM could not give an answer; the message says why in words fit for the user."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # the model's JSON text, parsed (and checked) by the registry


@dataclass
class Completion:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # time spent waiting for the server (the bench subtracts it)


class LLMClient:
    def __init__(self, settings: LLMSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"Content-Type": "application/json"}
        if settings.api_key_secret:
            headers["Authorization"] = f"Bearer {placeholder(settings.api_key_secret)}"
        self._http = httpx.Client(base_url=settings.base_url.rstrip("/") + "/", headers=headers,
                                  timeout=settings.timeout_seconds, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
        body: dict[str, Any] = {"model": self.settings.model, "messages": messages}
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        attempts = max(1, self.settings.retries + 1)
        waited = 0.0
        for attempt in range(attempts):
            last = attempt == attempts - 1
            t0 = time.perf_counter()
            try:
                resp = self._http.post("chat/completions", json=body)
            except httpx.HTTPError as e:  # no answer at all: a timeout, or the server not reached
                waited += time.perf_counter() - t0
                final, why = self._no_answer(e)
                if last:
                    raise LLMError(final) from e
                self._backoff(attempt, None, why)
                continue
            waited += time.perf_counter() - t0
            if resp.status_code == 429 or resp.status_code >= 500:
                if last:
                    raise LLMError(f"the LLM at {self.settings.base_url} kept failing (HTTP {resp.status_code} "
                                   f"after {attempts} attempts): {_short(resp)}")
                self._backoff(attempt, resp.headers.get("retry-after"), f"HTTP {resp.status_code}")
                continue
            if resp.status_code >= 400:
                raise LLMError(f"the LLM refused the request (HTTP {resp.status_code}): {_short(resp)}"
                               + ("; check api_key_secret in settings/llm.toml" if resp.status_code in (401, 403)
                                  else ""))
            completion = parse_completion(resp.content)
            completion.seconds = waited
            return completion
        raise AssertionError("unreachable")

    def _no_answer(self, e: httpx.HTTPError) -> tuple[str, str]:
        """(the error once retries are spent, the reason a retry logs) for a request that got no answer."""
        url = self.settings.base_url
        if isinstance(e, httpx.TimeoutException):
            return f"the LLM at {url} did not answer within {self.settings.timeout_seconds:g} s", f"timeout ({e})"
        return (f"the LLM at {url} cannot be reached ({type(e).__name__}: {e}); is the server running? "
                "(settings/llm.toml base_url)", f"{type(e).__name__}: {e}")

    def _backoff(self, attempt: int, retry_after: str | None, why: str) -> None:
        delay = self.settings.backoff_seconds * (2 ** attempt)
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER))
        log.warning("LLM request failed (%s); retrying in %.2f s", why, delay)
        time.sleep(delay)  # a retry's pause, not a wait for work: nothing else to do until the server recovers


def _short(resp: httpx.Response) -> str:
    text = resp.content[:300].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "(empty body)"


def parse_completion(data: bytes) -> Completion:
    """The first choice of an OpenAI chat completion; LLMError for anything malformed."""
    try:
        doc = json.loads(data)
        message = doc["choices"][0]["message"]
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TypeError("content is not a string")
        calls: list[ToolCall] = []
        for c in message.get("tool_calls") or []:
            fn = c["function"]
            args = fn.get("arguments", "{}")
            calls.append(ToolCall(str(c.get("id") or f"call_{len(calls)}"), str(fn["name"]),
                                  args if isinstance(args, str) else json.dumps(args)))
        usage = doc.get("usage") or {}
        return Completion(content, calls, usage if isinstance(usage, dict) else {})
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise LLMError(f"the LLM answered with a malformed response ({type(e).__name__}: {e}): "
                       f"{data[:200].decode('utf-8', 'replace')!r}") from e
