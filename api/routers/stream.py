"""`GET /v1/stream`: live updates for a signed-in user over Server-Sent Events.

Each message is one change the user may see: their own clones, auditions, prop accounts,
purchases, deposits, entitlements, tickets and ledger entries, and the public race and
arena changes (see `projections.changes`). `id:` is the change's log position, `event:`
its topic, `data:` a small JSON object of ids and status. Reconnecting with
`Last-Event-ID` (or `?after=`) resumes after that position with no gap and no repeat;
without either the stream starts at the log's head ("now").

Not in the OpenAPI document (a stream that never ends is not a schema a fuzzer can
exercise); the README's "Live updates" section documents it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from aggregates.errors import DomainError
from api.auth import CurrentUser, bearer, caller_of
from api.deps import ReadsDep
from api.problems import PositionBeyondHeadError
from api.routing import APIRouter
from api.stream import Broadcaster, InvalidLastEventIdError

router = APIRouter(tags=["stream"])

_POSITION = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class StreamStart:
    user_id: UUID
    after: int
    allowed: Callable[[], Awaitable[bool]]


async def stream_start(
    request: Request,
    user: CurrentUser,
    reads: ReadsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(ge=0, le=10**18)] = None,
) -> StreamStart:
    """Who listens and from where; refused before the response starts (401, 409, 422, 503)."""
    broadcaster: Broadcaster = request.app.state.stream
    if last_event_id is not None and last_event_id.strip() != "":
        if not _POSITION.fullmatch(last_event_id.strip()):
            raise InvalidLastEventIdError("Last-Event-ID must be a log position (an integer)")
        after = int(last_event_id.strip())
    head = await reads.head()
    if after is None:
        after = head
    elif after > head:
        raise PositionBeyondHeadError(f"position {after} is beyond the head of the log ({head})")
    broadcaster.admit()
    credentials = await bearer(request)

    async def allowed() -> bool:
        """The token and its session still stand, for the same user."""
        try:
            caller = await caller_of(request, credentials)
        except DomainError:
            return False
        return caller.kind == "user" and caller.subject == user.subject

    return StreamStart(user.user_id, after, allowed)


@router.get("/v1/stream", response_class=EventSourceResponse, include_in_schema=False)
async def stream(
    request: Request, start: Annotated[StreamStart, Depends(stream_start)]
) -> AsyncIterator[ServerSentEvent]:
    broadcaster: Broadcaster = request.app.state.stream
    async for event in broadcaster.events(start.user_id, start.after, start.allowed):
        yield event
