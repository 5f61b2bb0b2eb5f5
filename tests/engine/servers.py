"""A loopback OpenAI-compatible server: a real HTTP server on 127.0.0.1 answering
`POST /v1/chat/completions` in the Chat Completions format (with `usage`, including
`prompt_tokens_details.cached_tokens`), scripted answer by answer, or told to misbehave
(429 with Retry-After, 401, 500, hang, not JSON)."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aggregates.ports import ChatMessage, ModelRequest
from ingest.providers.offline import strategy_graph_answer

HANG_LIMIT = 10.0


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Seen:
    path: str
    body: Any
    headers: dict[str, str]


def completion(
    content: Any,
    *,
    prompt_tokens: int = 1200,
    completion_tokens: int = 340,
    cached_tokens: int | None = 512,
    model: str = "gpt-test-2026-01-01",
    finish_reason: str = "stop",
) -> Reply:
    """A 200 chat completion whose message is `content` (JSON-encoded unless a str)."""
    text = content if isinstance(content, str) else json.dumps(content)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0}
    body = {
        "id": "chatcmpl-RETRO-CLOCK",
        "object": "chat.completion",
        "created": 1795000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }
    return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


def error(status: int, message: str, **headers: str) -> Reply:
    body = {"error": {"message": message, "type": "error", "param": None, "code": None}}
    return Reply(status, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})


def rate_limited(retry_after: str = "7") -> Reply:
    return error(429, "Rate limit reached", **{"Retry-After": retry_after})


def hang() -> Reply:
    return Reply(hang=True)


def graph_from_prompt(body: dict[str, Any]) -> Reply:
    """The default answer: the graph the offline provider would build for the user's idea
    (read back out of the user message)."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    idea = user.split("\n\n", 1)[-1]
    request = ModelRequest(
        purpose="loopback",
        messages=(ChatMessage("user", idea),),
        schema_name="strategy_graph",
        json_schema={},
        inputs={"prompt": idea, "assets": ["BTC", "ETH", "SOL"], "channels": CHANNELS},
    )
    return completion(strategy_graph_answer(request))


CHANNELS = [
    f"hyperliquid.{coin}.{feature}"
    for coin in ("BTC", "ETH", "SOL")
    for feature in ("return_1h", "return_4h", "volatility_1h", "volatility_4h", "funding_rate")
]


class ChatServer:
    """One provider's endpoint. Scripted replies are used in order, then `default`."""

    def __init__(self, default: Callable[[dict[str, Any]], Reply] = graph_from_prompt) -> None:
        self.default = default
        self.port = 0
        self.seen: list[Seen] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (with `/v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [seen.body for seen in self.seen if seen.path == "/v1/chat/completions"]

    def start(self) -> ChatServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._released.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.seen.append(Seen(request.path, body, headers))
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        reply = scripted or self.default(body or {})
        if reply.hang:
            self._released.wait(HANG_LIMIT)
            request.close_connection = True
            return
        request.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(reply.body)))
        request.end_headers()
        request.wfile.write(reply.body)
