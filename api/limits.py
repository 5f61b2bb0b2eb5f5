"""The request body limit (issue 15, M2): refused before anything parses it.

Pure ASGI, outside FastAPI's handlers: a `Content-Length` over the limit is answered 413 at
once, without reading the body; a body without one (chunked) or longer than it said is
counted as it streams, and reading past the limit raises a 413 `HTTPException`, which the
problem handlers answer (FastAPI lets an `HTTPException` from reading the body through).
The limit is `max_body_bytes`, and `max_draft_body_bytes` for a strategy-graph draft
(`PUT /v1/clones/{id}/draft`). The answer is problem+json of type
`/problems/payload-too-large`.
"""

from __future__ import annotations

import re

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX

CODE = "payload-too-large"
DRAFT_PATH = re.compile(r"/v1/clones/[^/]+/draft")


def limit_for(scope: Scope) -> int:
    settings = scope["app"].state.services.settings  # set by the app's lifespan
    draft = scope["method"] == "PUT" and DRAFT_PATH.fullmatch(scope["path"]) is not None
    limit: int = settings.max_draft_body_bytes if draft else settings.max_body_bytes
    return limit


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await refuse(scope, send, limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(limit)
            return message

        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, send_tracked)
        except HTTPException as error:  # read past the limit outside FastAPI's handlers
            if error.status_code != 413 or started:
                raise
            await refuse(scope, send, limit)


async def refuse(scope: Scope, send: Send, limit: int) -> None:
    body = orjson.dumps(
        {
            "type": TYPE_PREFIX + CODE,
            "title": CODE.replace("-", " ").capitalize(),
            "status": 413,
            "detail": too_large(limit).detail,
            "instance": scope["path"],
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
