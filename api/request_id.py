"""Request ids: the server makes one for every request, and it becomes the correlation id of
every event the request writes (issue 15, L5: a client cannot choose it).

A client's own `X-Request-ID`, when valid (1 to 128 of `A-Za-z0-9._:-`, nothing after), is
kept beside it: echoed back as `X-Client-Request-ID` and logged once with the server's id,
so either finds the other. The response's `X-Request-ID` is always the server's id.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

HEADER = "x-request-id"
CLIENT_HEADER = "x-client-request-id"
_HEADER = HEADER.encode()
_CLIENT_HEADER = CLIENT_HEADER.encode()
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_request_id: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    return _request_id.get() or f"internal-{uuid.uuid4()}"


def valid_client_id(given: str) -> str | None:
    """The client's request id if it is one (the whole value, so no trailing newline)."""
    return given if _VALID.fullmatch(given) else None


class RequestIdMiddleware:
    """Pure ASGI, so the id is set in the same context the endpoint runs in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        headers = [(_HEADER, request_id.encode())]
        given = next((v for k, v in scope["headers"] if k == _HEADER), None)
        if given is not None:
            client_id = valid_client_id(given.decode("latin-1"))
            if client_id is not None:
                headers.append((_CLIENT_HEADER, client_id.encode()))
                log.info("request %s: client request id %s", request_id, client_id)
        token = _request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
