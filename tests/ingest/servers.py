"""Loopback stand-ins for Hyperliquid, Polymarket and DefiLlama: real HTTP servers on
127.0.0.1 that answer with the recorded payloads in `ingest/fixtures`, and can be told to
misbehave (429 with Retry-After, 500, hang, truncated JSON, a wrong shape) or be stopped
and started again on the same port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ingest.replay import HOSTS, Recordings, contains

HANG_LIMIT = 10.0
"""A hanging answer gives up after this long even if nobody stops the server."""


@dataclass
class Fault:
    """How to change the answer to a request: to any request, or only to those on `path`
    and whose JSON body contains `match`."""

    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    truncate: bool = False
    path: str | None = None
    match: Any = None

    def applies_to(self, path: str, body: Any) -> bool:
        return (self.path is None or self.path == path) and (
            self.match is None or contains(body, self.match)
        )


def rate_limited(retry_after: str, *, path: str | None = None, match: Any = None) -> Fault:
    return Fault(
        status=429,
        body=b"Too Many Requests",
        headers={"Retry-After": retry_after},
        path=path,
        match=match,
    )


def server_error(*, path: str | None = None, match: Any = None) -> Fault:
    return Fault(status=500, body=b"Internal error", path=path, match=match)


def hang(*, path: str | None = None, match: Any = None) -> Fault:
    return Fault(hang=True, path=path, match=match)


def truncated(*, path: str | None = None, match: Any = None) -> Fault:
    """The recorded body cut in half, served as a complete HTTP answer."""
    return Fault(truncate=True, path=path, match=match)


def answer(body: object, *, path: str | None = None, match: Any = None) -> Fault:
    """Answer 200 with this JSON body instead of the recording (a known series, a wrong shape)."""
    return Fault(status=200, body=json.dumps(body).encode(), path=path, match=match)


wrong_shape = answer


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


class RecordedServer:
    """One host's recordings over real HTTP."""

    def __init__(self, host: str, recordings: Recordings | None = None) -> None:
        self.host = host
        self.recordings = recordings or Recordings()
        self.port = 0
        self.seen: list[Seen] = []
        self._faults: list[tuple[Fault, int | None]] = []  # (fault, remaining uses or forever)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordedServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.handle(self)

            def do_POST(self) -> None:
                owner.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._released.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
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
        self._released.set()  # let hanging answers go
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def restart(self) -> None:
        self.stop()
        self.start()

    def fail(self, fault: Fault, times: int | None = 1) -> None:
        """Spoil the next `times` matching answers (None: every one, until `heal`)."""
        with self._lock:
            self._faults.append((fault, times))

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_for(self, **body: Any) -> list[Seen]:
        return [seen for seen in self.seen if contains(seen.body, body)]

    # --- answering ---------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        query = parse_qs(parts.query)
        self.seen.append(Seen(request.command, parts.path, query, body, dict(request.headers)))
        fault = self._take_fault(parts.path, body)
        if fault is not None and fault.hang:
            self._released.wait(HANG_LIMIT)
            request.close_connection = True
            return
        replaced = fault is not None and fault.body is not None
        answer = (
            None
            if replaced
            else self.recordings.answer(self.host, request.command, parts.path, query, body)
        )
        if answer is None:
            status, payload, kind = 404, b'{"error":"no recording"}', "application/json"
        else:
            status, payload, kind = answer.status, answer.body, answer.content_type
        if fault is not None:
            status = fault.status or status
            payload = fault.body if fault.body is not None else payload
            payload = payload[: len(payload) // 2] if fault.truncate else payload
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(payload)))
        for name, value in (fault.headers if fault else {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(payload)

    def _take_fault(self, path: str, body: Any) -> Fault | None:
        with self._lock:
            for index, (fault, remaining) in enumerate(self._faults):
                if not fault.applies_to(path, body):
                    continue
                if remaining is not None:
                    if remaining <= 1:
                        del self._faults[index]
                    else:
                        self._faults[index] = (fault, remaining - 1)
                return fault
        return None


@dataclass
class Servers:
    """All five hosts, sharing one set of recordings."""

    hyperliquid: RecordedServer
    polymarket_gamma: RecordedServer
    polymarket_clob: RecordedServer
    defillama_coins: RecordedServer
    defillama_api: RecordedServer

    def __iter__(self) -> Iterator[RecordedServer]:
        return iter(
            (
                self.hyperliquid,
                self.polymarket_gamma,
                self.polymarket_clob,
                self.defillama_coins,
                self.defillama_api,
            )
        )


def start_servers() -> Servers:
    recordings = Recordings()
    return Servers(*(RecordedServer(host, recordings).start() for host in HOSTS))
