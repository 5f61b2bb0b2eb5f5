"""Live updates for clients (`GET /v1/stream`, Server-Sent Events): one broadcaster per
process, following the read models' positions, never the raw log.

What a message is and who may see it is the read models' answer (`projections.changes`):
each change has a log position (the message's `id:`), a topic (its `event:`), an owner
(None: public) and a small payload of ids and status. The broadcaster

- looks, every `poll` seconds while anyone listens (never otherwise), at the lowest
  position of the read models the changes come from (`stream_position`), reads every
  change up to it once for all listeners, and hands each listener what it may see;
- keeps each listener's backlog bounded (`queue_size`): a listener that falls that far
  behind (a slow client) is ended, after what it was given, and resumes with
  `Last-Event-ID` like any reconnect;
- ends every stream when uvicorn is told to stop (its `should_exit`), so a graceful
  shutdown is not held open by clients that never hang up.

A listener starts at a position (its `Last-Event-ID`, or the log's head: "now"), reads
what it may see from there up to the broadcaster's `cursor` straight from the read models,
then joins the broadcaster in the same step in which it sees that it has caught up. Every
change at or below `cursor` was handed out already and every one above it will be, so the
join leaves no gap; a listener skips any position at or below the last it had, so there
are no duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
from fastapi.sse import ServerSentEvent

from api.problems import ApiError
from projections.changes import Change, changes_between, stream_position
from projections.reads import ProjectionReads

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
"""How often the broadcaster looks at the read models' positions while anyone listens."""

RETRY_SECONDS = 1.0
"""How long the broadcaster pauses after a failed look (the database away)."""

PING_SECONDS = 15.0
"""A keep-alive comment after this long without a message; the caller's token and session
are checked again as often (an expired or revoked one ends the stream)."""

QUEUE_SIZE = 1000
"""Messages waiting for one listener at most: one more ends its stream (it resumes)."""

WINDOW = 2000
"""Log positions read per query, by the broadcaster and by a listener catching up."""

MAX_STREAMS = 1000
"""Streams open at once per process; one more is 503 `too-many-streams`."""

RECONNECT_MILLISECONDS = 2000
"""The `retry:` a stream opens with: how long a browser waits before reconnecting."""


class TooManyStreamsError(ApiError):
    status = 503
    code = "too-many-streams"
    headers = {"Retry-After": "5"}


class StreamStoppingError(ApiError):
    """The process is shutting down: reconnect (to another one) with `Last-Event-ID`."""

    status = 503
    code = "stream-stopping"
    headers = {"Retry-After": "1"}


class InvalidLastEventIdError(ApiError):
    status = 422
    code = "invalid-last-event-id"


@dataclass(eq=False)
class Listener:
    """One open stream: what its user may see, and what waits to be sent to it."""

    user_id: UUID
    last: int
    """Every change at or below this position was sent, passed over or queued."""
    queue_size: int
    queued: deque[Change] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: str | None = None

    def may_see(self, change: Change) -> bool:
        return change.owner_id is None or change.owner_id == self.user_id

    def offer(self, changes: list[Change], upto: int) -> None:
        """The changes of (…, `upto`], in log order: queue what is new and visible."""
        for change in changes:
            if change.position <= self.last or not self.may_see(change):
                continue
            if len(self.queued) >= self.queue_size:
                self.end("too far behind")
                return
            self.queued.append(change)
            self.last = change.position
        self.last = max(self.last, upto)
        self.wake.set()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self.wake.set()


def message(change: Change) -> ServerSentEvent:
    return ServerSentEvent(
        id=str(change.position), event=change.topic, raw_data=orjson.dumps(change.data).decode()
    )


def serving_server() -> Any:
    """uvicorn's `Server`, when this process serves under it: uvicorn installs its bound
    `handle_exit` as the SIGTERM handler before the app starts. None otherwise."""
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return server if hasattr(server, "should_exit") else None


class Broadcaster:
    """The process's one follower of the read models for `GET /v1/stream`."""

    def __init__(
        self,
        reads: ProjectionReads,
        *,
        poll: float = POLL_SECONDS,
        ping: float = PING_SECONDS,
        queue_size: int = QUEUE_SIZE,
        window: int = WINDOW,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.reads = reads
        self.poll = poll
        self.ping = ping
        self.queue_size = queue_size
        self.window = window
        self.max_streams = max_streams
        self.cursor = 0
        """Every change at or below this was handed to every listener joined."""
        self.server: Any = None
        """What says the process is stopping (`should_exit`): uvicorn's server, if any."""
        self.streams = 0
        """Streams open now, catching up or joined."""
        self._listeners: set[Listener] = set()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- the process's side -------------------------------------------------------------

    def start(self) -> None:
        self.server = self.server or serving_server()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stream")

    async def close(self) -> None:
        self._closed = True
        self._end_all("the service is stopping")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def stopping(self) -> bool:
        return self._closed or bool(getattr(self.server, "should_exit", False))

    def admit(self) -> None:
        """Refuse a new stream now (503) rather than after its response has started."""
        if self.stopping:
            raise StreamStoppingError("the service is stopping; reconnect with Last-Event-ID")
        if self.streams >= self.max_streams:
            raise TooManyStreamsError("too many streams are open; try again")

    def _end_all(self, reason: str) -> None:
        for listener in self._listeners:
            listener.end(reason)
        self._listeners.clear()

    async def _run(self) -> None:
        while True:
            if not self._listeners:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            if self.stopping:
                self._end_all("the service is stopping")
                continue
            try:
                await self._advance()
            except Exception as error:
                log.warning("stream: %s", error)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            await asyncio.sleep(self.poll)

    async def _advance(self) -> None:
        """Hand out every change up to what the read models have all reached."""
        safe = await stream_position(self.reads)
        while self._listeners:
            floor = max(self.cursor, min(listener.last for listener in self._listeners))
            if safe <= floor:
                # Nobody joined needs what lies below: a listener joining later with an
                # older position catches up to the cursor from the read models itself.
                self.cursor = max(self.cursor, safe)
                return
            upto = min(safe, floor + self.window)
            changes = await changes_between(self.reads, floor, upto)
            # From here to the cursor's move, no await: a listener joins before or after.
            for listener in list(self._listeners):
                listener.offer(changes, upto)
                if listener.ended is not None:
                    self._listeners.discard(listener)
            self.cursor = upto

    # --- one stream ---------------------------------------------------------------------

    async def events(
        self, user_id: UUID, after: int, allowed: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[ServerSentEvent]:
        """One user's stream from position `after` (exclusive) on, until the client hangs
        up, falls too far behind, its token or session ends, or the process stops."""
        listener = Listener(user_id, after, self.queue_size)
        self.streams += 1
        try:
            yield ServerSentEvent(comment="stream open", retry=RECONNECT_MILLISECONDS)
            # Catch up from the read models until the cursor, then join in that same step.
            while listener.last < self.cursor:
                if self.stopping:
                    return
                upto = min(self.cursor, listener.last + self.window)
                try:
                    changes = await changes_between(self.reads, listener.last, upto, user_id)
                except Exception as error:  # the database away: the client resumes later
                    log.warning("stream: %s", error)
                    return
                for change in changes:
                    yield message(change)
                listener.last = max(listener.last, upto)
            if self.stopping:
                return
            self._listeners.add(listener)
            self._wanted.set()
            check_at = time.monotonic() + self.ping
            while True:
                if time.monotonic() >= check_at:
                    try:
                        still = await allowed()
                    except Exception as error:  # the database away: the client resumes later
                        log.warning("stream: %s", error)
                        still = False
                    if not still:
                        return
                    check_at = time.monotonic() + self.ping
                if listener.queued:
                    yield message(listener.queued.popleft())
                    continue
                if listener.ended is not None:
                    return
                listener.wake.clear()
                try:
                    async with asyncio.timeout(max(0.0, check_at - time.monotonic())):
                        await listener.wake.wait()
                except TimeoutError:
                    yield ServerSentEvent(comment="ping")
        finally:
            self._listeners.discard(listener)
            self.streams -= 1
