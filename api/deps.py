"""Dependencies every router uses: the process's services, the clock, the command context,
and read-your-writes waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Query, Request

from aggregates.base import CommandContext
from api.problems import ProjectionBehindError
from api.request_id import current_request_id
from projections.reads import ReadModels
from runtime.clock import Clock
from runtime.settings import Settings
from services.bootstrap import Services
from services.eventlog import EventLog

R = TypeVar("R")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ServicesDep = Annotated[Services, Depends(get_services)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_event_log(services: ServicesDep) -> EventLog:
    return services.event_log


SettingsDep = Annotated[Settings, Depends(get_settings)]
EventLogDep = Annotated[EventLog, Depends(get_event_log)]


def command_context(actor: str, clock: Clock) -> CommandContext:
    """What every event of this request records: who, when, and the request id, which is
    both the correlation and the cause of the command."""
    request_id = current_request_id()
    return CommandContext(
        actor=actor,
        occurred_at=clock(),
        correlation_id=request_id,
        causation_id=f"request:{request_id}",
    )


def get_reads(services: ServicesDep) -> ReadModels:
    return services.reads


ReadsDep = Annotated[ReadModels, Depends(get_reads)]


def wait_for(projection: str) -> Callable[..., Awaitable[None]]:
    """A dependency that holds a read until `projection` has reached the asked position.

    The position comes from `min_position` or the `X-Min-Position` header (a command's
    response carries it); past `read_wait_timeout` the answer is 503 with Retry-After.
    """

    async def dependency(
        services: ServicesDep,
        min_position: Annotated[
            int | None, Query(ge=0, description="wait until read models reach this log position")
        ] = None,
        x_min_position: Annotated[int | None, Header(ge=0)] = None,
    ) -> None:
        wanted = max(min_position or 0, x_min_position or 0)
        if wanted == 0:
            return
        timeout = services.settings.read_wait_timeout
        if not await services.reads.wait_until(projection, wanted, timeout):
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
    if await reads.wait_until(projection, await reads.head(), services.settings.read_wait_timeout):
        return await read()
    return None
