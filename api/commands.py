"""What a command route needs, in one dependency: the acting principal, the context every
event of the request records (`command_context`), and the event log to write to.

`UserCommand` acts as the signed-in user, `AdminCommand` as an admin; each resolves the
same principal dependency as `CurrentUser` / `AdminUser`, so the OpenAPI is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import Depends, Request
from pydantic import BaseModel

from aggregates.base import CommandContext
from api.auth import AdminUser, CurrentUser, Principal
from api.deps import clock_of, command_context, services_of
from services.eventlog import EventLog

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Command:
    """Who acts, what their events record, and where they are written."""

    principal: Principal
    context: CommandContext
    event_log: EventLog

    @property
    def user_id(self) -> UUID:
        return self.principal.user_id

    @property
    def address(self) -> str:
        return self.principal.address


def command_of(principal: Principal, request: Request) -> Command:
    """The event log and clock are read from the app's state here rather than declared as
    two more dependencies: FastAPI spends tens of microseconds solving each one."""
    context = command_context(principal.actor, clock_of(request))
    return Command(principal, context, services_of(request).event_log)


async def user_command(user: CurrentUser, request: Request) -> Command:
    return command_of(user, request)


async def admin_command(admin: AdminUser, request: Request) -> Command:
    return command_of(admin, request)


UserCommand = Annotated[Command, Depends(user_command)]
AdminCommand = Annotated[Command, Depends(admin_command)]


def items_of(model: type[M], rows: Sequence[Any]) -> list[M]:
    """Rows of a query function as the list route's public items."""
    return [model.model_validate(row, from_attributes=True) for row in rows]
