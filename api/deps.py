"""Dependencies every router uses: the process's services, the clock, the command context,
and read-your-writes waits.

Every dependency here is `async def` and reads the app's state: FastAPI runs a plain `def`
dependency in the thread pool, a hop per dependency per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Query, Request

from aggregates.base import CommandContext
from api.auth import bearer, caller_of, require_admin_or_scope
from api.problems import PositionBeyondHeadError, ProjectionBehindError, TooManyWaitsError
from api.request_id import current_request_id
from projections.reads import ProjectionReads
from runtime.clock import Clock
from runtime.settings import Settings
from services.bootstrap import Services
from services.eventlog import EventLog

log = logging.getLogger(__name__)

R = TypeVar("R")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def clock_of(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_clock(request: Request) -> Clock:
    return clock_of(request)


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_event_log(request: Request) -> EventLog:
    return services_of(request).event_log


async def get_reads(request: Request) -> ProjectionReads:
    return services_of(request).reads


ServicesDep = Annotated[Services, Depends(get_services)]
ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EventLogDep = Annotated[EventLog, Depends(get_event_log)]
ReadsDep = Annotated[ProjectionReads, Depends(get_reads)]


HEALTH_SCOPE = "health:read"
"""The service scope that may read operators' health details (issue 15, L3): projection
errors, worker processes, ingestion errors and `/metrics`. Admins may too; `/v1/health`
stays public."""

health_reader = require_admin_or_scope(HEALTH_SCOPE)


def command_context(actor: str, clock: Clock) -> CommandContext:
    """What every event of this request records: who, when, and the request id (made by the
    server, never the client's), which is both the correlation and the cause of the
    command."""
    request_id = current_request_id()
    return CommandContext(
        actor=actor,
        occurred_at=clock(),
        correlation_id=request_id,
        causation_id=f"request:{request_id}",
    )


# --- read-your-writes --------------------------------------------------------------------

WATCH_SECONDS = 0.005
"""How often the watcher looks at the projections' positions while a read waits."""

RETRY_SECONDS = 0.2
"""How long the watcher pauses after a failed look (the database away)."""


class ProjectionPositions:
    """How far each projection has read the log, as one watcher per process sees it.

    A read that must wait sleeps on a condition; one background task looks at the
    positions of the projections someone waits on (one look, whatever the number of
    waiters), every `WATCH_SECONDS` while anyone waits and never otherwise, and wakes the
    waiters. `wait_until` keeps `ProjectionReads.wait_until`'s contract: at most `timeout`
    seconds, False when the position was not reached, and never False on a stale look.
    """

    def __init__(self, reads: ProjectionReads, *, interval: float = WATCH_SECONDS) -> None:
        self.reads = reads
        self.interval = interval
        self._known: dict[str, int] = {}
        self._waiting: Counter[str] = Counter()
        self._changed = asyncio.Condition()
        self._wanted = asyncio.Event()
        self._looks_begun = 0
        self._looks_seen = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.waiting = 0
        """Reads waiting here now (`wait_for` refuses more than `read_wait_limit`)."""

    async def wait_until(self, projection: str, position: int, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until `projection` has read up to `position`."""
        if self._known.get(projection, 0) >= position:
            return True
        if self._closed:
            return await self.reads.wait_until(projection, position, timeout)
        self._start()
        asked = self._looks_begun
        self._waiting[projection] += 1
        self.waiting += 1
        self._wanted.set()
        try:
            async with self._changed:
                try:
                    async with asyncio.timeout(timeout):
                        await self._changed.wait_for(lambda: self._reached(projection, position))
                    return True
                except TimeoutError:
                    pass
        finally:
            self.waiting -= 1
            self._waiting[projection] -= 1
            if self._waiting[projection] <= 0:
                del self._waiting[projection]
        if self._looks_seen > asked:  # a look begun after this wait did, so not stale
            return self._reached(projection, position)
        return await self.reads.position(projection) >= position

    def _reached(self, projection: str, position: int) -> bool:
        return self._known.get(projection, 0) >= position

    def reached(self, projection: str, position: int) -> bool:
        """What the last look saw: True means reached (positions only grow)."""
        return self._reached(projection, position)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._watch(), name="projection positions"
            )

    async def close(self) -> None:
        """Stop the watcher (the app is stopping); later waits poll on their own."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while not self._closed:
            if not self._waiting:
                self._wanted.clear()
                await self._wanted.wait()
                continue
            self._looks_begun += 1
            begun = self._looks_begun
            try:
                positions = await self._look(sorted(self._waiting))
            except Exception as error:
                log.warning("projection positions: %s", error)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            async with self._changed:
                self._known.update(positions)
                self._looks_seen = begun
                self._changed.notify_all()
            await asyncio.sleep(self.interval)

    async def _look(self, names: list[str]) -> dict[str, int]:
        positions = await asyncio.gather(*(self.reads.position(name) for name in names))
        return dict(zip(names, positions, strict=True))


_positions: weakref.WeakKeyDictionary[ProjectionReads, ProjectionPositions] = (
    weakref.WeakKeyDictionary()
)


def positions_of(reads: ProjectionReads) -> ProjectionPositions:
    """The watcher of this process's read pool (the app's lifespan opens and closes it)."""
    positions = _positions.get(reads)
    if positions is None or positions._closed:
        positions = _positions[reads] = ProjectionPositions(reads)
    return positions


async def close_positions(reads: ProjectionReads) -> None:
    positions = _positions.pop(reads, None)
    if positions is not None:
        await positions.close()


def wait_for(projection: str) -> Callable[..., Awaitable[None]]:
    """A dependency that holds a read until `projection` has reached the asked position.

    The position comes from `min_position` or the `X-Min-Position` header (a command's
    response carries it); past `read_wait_timeout` the answer is 503 with Retry-After.

    Route dependencies run before the endpoint's, so this one guards itself (issue 15, H1):
    a position beyond the log head can never be reached and is refused at once (409
    `position-beyond-head`); bearer credentials, when given, are verified before any wait
    (a bad token is a 401 at once); an anonymous caller never waits (a public read answers
    with what the read models hold, an owner route answers 401 next); and at most
    `read_wait_limit` reads wait at once per process (more: 503 `too-many-waits`).
    """

    async def dependency(
        request: Request,
        min_position: Annotated[
            int | None, Query(ge=0, description="wait until read models reach this log position")
        ] = None,
        x_min_position: Annotated[int | None, Header(ge=0)] = None,
    ) -> None:
        wanted = max(min_position or 0, x_min_position or 0)
        if wanted == 0:
            return
        services = services_of(request)
        positions = positions_of(services.reads)
        if positions.reached(projection, wanted):
            return
        head = await services.reads.head()
        if wanted > head:
            raise PositionBeyondHeadError(
                f"position {wanted} is beyond the head of the log ({head})"
            )
        # Read here rather than declared, so public routes do not document a bearer scheme.
        credentials = await bearer(request)
        if credentials is None:
            return
        await caller_of(request, credentials)
        settings = services.settings
        if positions.waiting >= settings.read_wait_limit:
            raise TooManyWaitsError("too many reads are waiting for a position; try again")
        if not await positions.wait_until(projection, wanted, settings.read_wait_timeout):
            raise ProjectionBehindError(f"{projection} has not reached position {wanted} yet")

    return dependency


async def found(
    services: Services, projection: str, read: Callable[[], Awaitable[R | None]]
) -> R | None:
    """Read one resource by id; on a miss, wait (bounded) until `projection` has caught up
    with the log as it was when the request came, and read again. So what the caller just
    created is never a false 404, and what does not exist costs one short wait at most."""
    row = await read()
    if row is not None:
        return row
    reads = services.reads
    head = await reads.head()
    if await positions_of(reads).wait_until(projection, head, services.settings.read_wait_timeout):
        return await read()
    return None
