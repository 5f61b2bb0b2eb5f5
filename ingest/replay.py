"""Recorded payloads, and replay mode: the same clients, answered from the recordings.

`ingest/fixtures/manifest.json` lists which file answers which request (host, method,
path, and the part of the query or JSON body that must match). A `.jsonl` file is a
sequence: each request gets the next line, wrapping around, so replay walks the recorded
price path at the service's own cadence. Other files are answered whole. The recordings
ignore the time window a request asks for.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).parent / "fixtures"

HOSTS = ("hyperliquid", "polymarket_gamma", "polymarket_clob", "defillama_coins", "defillama_api")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


@dataclass
class Recording:
    host: str
    method: str
    path: str
    file: str
    query: dict[str, list[str]] = field(default_factory=dict)
    body: Any = None
    status: int = 200

    def matches(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> bool:
        if (method, path) != (self.method, self.path):
            return False
        for name, values in self.query.items():
            if sorted(query.get(name, [])) != sorted(values):
                return False
        return self.body is None or contains(body, self.body)


class Recordings:
    """The manifest and its files, loaded on first use; safe to share between threads."""

    def __init__(self, directory: Path = FIXTURES) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._entries: list[Recording] | None = None
        self._bodies: dict[str, list[bytes]] = {}
        self._turns: dict[str, int] = {}

    def answer(
        self, host: str, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> Answer | None:
        with self._lock:
            for entry in self._load():
                if entry.host == host and entry.matches(method, path, query, body):
                    return Answer(entry.status, self._next_body(entry.file), content_type(entry))
        return None

    def rewind(self) -> None:
        """Start every sequence again from its first answer."""
        with self._lock:
            self._turns.clear()

    def _load(self) -> list[Recording]:
        if self._entries is None:
            manifest = json.loads((self.directory / "manifest.json").read_text())
            self._entries = [Recording(**entry) for entry in manifest]
        return self._entries

    def _next_body(self, file: str) -> bytes:
        if file not in self._bodies:
            raw = (self.directory / file).read_bytes()
            self._bodies[file] = raw.splitlines() if file.endswith(".jsonl") else [raw]
        bodies = self._bodies[file]
        turn = self._turns.get(file, 0)
        self._turns[file] = turn + 1
        return bodies[turn % len(bodies)]


class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers one host's requests from the recordings, as that host would on the wire."""

    def __init__(self, recordings: Recordings, host: str) -> None:
        self.recordings = recordings
        self.host = host

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.recordings.answer(
            self.host,
            request.method,
            request.url.path,
            query_of(request.url),
            body_of(await request.aread()),
        )
        if answer is None:
            error = {"error": f"no recording for {request.method} {request.url.path}"}
            return httpx.Response(404, json=error, request=request)
        return httpx.Response(
            answer.status,
            content=answer.body,
            headers={"Content-Type": answer.content_type},
            request=request,
        )


def contains(actual: Any, recorded: Any) -> bool:
    """Does the request carry what the recording names? Objects by subset, lists as
    multisets (a request's token order is not the recording's business), the rest equal."""
    if isinstance(recorded, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in recorded.items()
        )
    if isinstance(recorded, list):
        return isinstance(actual, list) and sorted(map(canonical, actual)) == sorted(
            map(canonical, recorded)
        )
    return bool(actual == recorded)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def query_of(url: httpx.URL) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for name, value in url.params.multi_items():
        query.setdefault(name, []).append(value)
    return query


def body_of(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


def content_type(entry: Recording) -> str:
    return "text/plain" if entry.file.endswith(".txt") else "application/json"
