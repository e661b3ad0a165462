"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (real HTTP, `http.server` in a thread):
the stand-in LLM of the agent tests, `make demo` and bench/agent.py.  No model: it answers from a script.

- Tests queue exact replies (`push`): a text answer, tool calls, an HTTP error, malformed or non-UTF-8 bytes.
- With the queue empty it follows simple rules (`rules`), enough for a believable chat: "remember ..." calls
  memory_write, a question calls memory_search and answers from the best hit, a heartbeat says HEARTBEAT_OK
  unless the checklist says ALERT, anything else is echoed.
- Every request body is recorded (`requests`), with its headers (`headers`).

Run alone: `python tests/llm_server.py [--port N]` prints its base URL and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def completion(message: dict[str, Any]) -> Reply:
    doc = {"id": "chatcmpl-scripted", "object": "chat.completion", "model": "scripted",
           "choices": [{"index": 0, "message": {"role": "assistant", **message},
                        "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
           "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
    return Reply(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})


def answer(text: str) -> Reply:
    return completion({"content": text})


_ids = iter(range(1, 1 << 62))


def calls(*pairs: tuple[str, dict[str, Any] | str]) -> Reply:
    """Tool calls: (name, arguments) pairs; a str argument is sent as is (e.g. broken JSON)."""
    return completion({"content": None, "tool_calls": [
        {"id": f"call_{next(_ids)}", "type": "function",
         "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
        for name, args in pairs]})


def error(status: int, text: str = "scripted failure", headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps({"error": {"message": text}}).encode(),
                 {"Content-Type": "application/json", **(headers or {})})


def raw(body: bytes, status: int = 200) -> Reply:
    return Reply(status, body, {"Content-Type": "application/json"})


def _last_tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(tool name, output) of the tool messages after the last assistant message."""
    names: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for m in messages:
        if m.get("role") == "assistant":
            out = []
            for c in m.get("tool_calls") or []:
                names[c["id"]] = c["function"]["name"]
        elif m.get("role") == "tool":
            out.append((names.get(m.get("tool_call_id", ""), "?"), str(m.get("content", ""))))
    return out


def _fenced(text: str) -> str:
    m = re.search(r"<tool_output[^>]*>\n(.*)\n</tool_output>", text, re.S)
    return m.group(1) if m else text


def rules(body: dict[str, Any]) -> Reply:
    """The default script: a tiny rule-following stand-in for a model."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        results = _last_tool_results(messages)
        name, output = results[-1] if results else ("?", "")
        output = _fenced(output)
        if name == "memory_search":
            try:
                hits = json.loads(output)
                top = hits[0]
                return answer(f"From my memory ({top['path']}): {' '.join(top['text'].split())}")
            except (ValueError, LookupError, TypeError):
                return answer("I found nothing about that in my memory.")
        if name == "memory_write":
            return answer(f"Noted: {output}.")
        return answer(f"Done: {output[:200]}")
    text = str(last.get("content") or "")
    if text.startswith("[heartbeat]"):
        return answer(f"Heartbeat: {text.split('ALERT', 1)[1].strip()[:200]}" if "ALERT" in text
                      else "HEARTBEAT_OK")
    low = text.strip().lower()
    if low.startswith("remember"):
        fact = re.sub(r"^(?i:remember)[\s:,]*(?:that\s+)?", "", text.strip())
        return calls(("memory_write", {"content": f"- {fact}", "target": "memory"}))
    if low.endswith("?"):
        return calls(("memory_search", {"query": text.strip(), "limit": 3}))
    return answer(f"You said: {text.strip()}")


class ScriptedLLM:
    def __init__(self, port: int = 0, script: Callable[[dict[str, Any]], Reply] = rules) -> None:
        self.script = script
        self.queue: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall between

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                reply = outer.handle(self.path, dict(self.headers), data)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read their own logs
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self.queue.extend(replies)

    def handle(self, path: str, headers: dict[str, str], data: bytes) -> Reply:
        if not path.endswith("/chat/completions"):
            return error(404, f"no such endpoint {path}")
        try:
            body = json.loads(data)
        except ValueError:
            return error(400, "the request is not JSON")
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in headers.items()})
            queued = self.queue.popleft() if self.queue else None
        return queued if queued is not None else self.script(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    llm = ScriptedLLM(args.port).start()
    print(llm.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        llm.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
