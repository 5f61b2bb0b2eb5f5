"""Dependencies every router uses: the process's services, the clock, the command context,
and read-your-writes waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from aggregates.base import CommandContext
from api.problems import ProjectionBehindError
from api.request_id import current_request_id
from runtime.clock import Clock
from runtime.settings import Settings
from services.bootstrap import Services
from services.eventlog import EventLog


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


def wait_for(projection: str) -> Callable[..., None]:
    """A dependency that holds a read until `projection` has reached the asked position.

    The position comes from `min_position` or the `X-Min-Position` header (a command's
    response carries it); past `read_wait_timeout` the answer is 503 with Retry-After.
    """

    def dependency(
        services: ServicesDep,
        min_position: Annotated[
            int | None, Query(ge=0, description="wait until read models reach this log position")
        ] = None,
        x_min_position: Annotated[int | None, Header(ge=0)] = None,
    ) -> None:
        wanted = max(min_position or 0, x_min_position or 0)
        if wanted == 0:
            return
        deadline = time.monotonic() + services.settings.read_wait_timeout
        while services.projections.position(projection) < wanted:
            if time.monotonic() >= deadline:
                raise ProjectionBehindError(f"{projection} has not reached position {wanted} yet")
            time.sleep(0.02)

    return dependency
