"""Admins run the race lifecycle: schedule a race from arena members, then open, close,
start, finish, amend, make official, settle or void it, each with a reason (the calendar
job takes the same steps on the race's pinned times). The admin is the actor of each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, Field

from aggregates.base import CommandContext
from api.commands import AdminCommand
from api.deps import ServicesDep, SettingsDep
from api.routers.prop import PricesDep
from api.routing import APIRouter
from api.schemas import Reason, RequiredIdempotencyKey, SearchText
from projections import arena
from projections.races import racing_clones
from services import races as racing
from services.eventlog import EventLog, Written
from services.races import RaceState

router = APIRouter(prefix="/v1/admin/races", tags=["admin"])


class RaceCreate(BaseModel):
    name: SearchText
    entrants: Annotated[int | None, Field(ge=2, le=100)] = None
    clone_ids: Annotated[list[UUID] | None, Field(min_length=2, max_length=100)] = Field(
        default=None, description="these arena members, else the first free members"
    )
    sales_open_at: datetime
    starts_at: datetime | None = None
    duration_seconds: Annotated[int | None, Field(gt=0, le=366 * 24 * 3600)] = None
    takeout_bps: Annotated[int | None, Field(ge=0, le=10_000)] = None
    reason: Reason


class ReasonCreate(BaseModel):
    reason: Reason


class AmendCreate(BaseModel):
    disqualified: Annotated[list[UUID], Field(min_length=1, max_length=100)]
    reason: Reason


class RaceWrittenPublic(BaseModel):
    race_id: UUID
    status: str
    position: int


def written_race(written: Written[RaceState]) -> RaceWrittenPublic:
    return RaceWrittenPublic(
        race_id=written.result.race_id, status=written.result.status, position=written.position
    )


@router.post("", status_code=201, operation_id="admin_race_schedule")
def schedule(
    body: RaceCreate,
    admin: AdminCommand,
    services: ServicesDep,
    settings: SettingsDep,
    key: RequiredIdempotencyKey,
) -> RaceWrittenPublic:
    """Schedule a race of arena members that are admitted and not in another unfinished
    race (the named ones, or the first `entrants` in admission order). The terms are
    pinned now: times from the request, pool and stake terms from the settings."""
    rules = racing.race_rules(
        settings,
        sales_open_at=body.sales_open_at,
        starts_at=body.starts_at,
        duration_seconds=body.duration_seconds,
        takeout_bps=body.takeout_bps,
    )
    busy = racing_clones(services.datastore)
    candidates = body.clone_ids or [
        clone_id for clone_id in arena.admitted_members(services.datastore) if clone_id not in busy
    ]
    written = racing.schedule_race(
        admin.event_log,
        admin.context,
        key=key,
        name=body.name,
        rules=rules,
        candidates=[c for c in candidates if c not in busy],
        entrants=len(body.clone_ids) if body.clone_ids else body.entrants or settings.race_entrants,
        reason=body.reason,
    )
    return written_race(written)


Step = Callable[[EventLog, CommandContext, UUID, str], Written[RaceState]]


def step_route(path: str, step: Step, summary: str) -> None:
    def route(race_id: UUID, body: ReasonCreate, admin: AdminCommand) -> RaceWrittenPublic:
        return written_race(step(admin.event_log, admin.context, race_id, body.reason))

    route.__doc__ = summary
    router.post(f"/{{race_id}}/{path}", operation_id=f"admin_race_{path}")(route)


step_route("open", racing.open_sales, "Open ticket sales (scheduled races only).")
step_route("close", racing.close_sales, "Close ticket sales: this event's position ends the pool.")
step_route("start", racing.start_race, "Open each entrant's race account, or scratch it.")
step_route(
    "official",
    racing.make_official,
    "Make the result official once the objection window has passed.",
)


@router.post("/{race_id}/finish", operation_id="admin_race_finish")
def finish(
    race_id: UUID, body: ReasonCreate, admin: AdminCommand, prices: PricesDep
) -> RaceWrittenPublic:
    """Rank the entrants at the end time's marks (not before the end time)."""
    return written_race(
        racing.finish_race(admin.event_log, admin.context, prices, race_id, body.reason)
    )


@router.post("/{race_id}/amend", operation_id="admin_race_amend")
def amend(race_id: UUID, body: AmendCreate, admin: AdminCommand) -> RaceWrittenPublic:
    """Before the result is official: disqualified entrants are placed last."""
    return written_race(
        racing.amend_result(admin.event_log, admin.context, race_id, body.disqualified, body.reason)
    )


@router.post("/{race_id}/settle", operation_id="admin_race_settle")
def settle(
    race_id: UUID, body: ReasonCreate, admin: AdminCommand, services: ServicesDep
) -> RaceWrittenPublic:
    """Settle an official race: refunds post, the payouts wait for authorization (you are
    their maker). Again while settled or paid: 409 `race-already-settled`."""
    return written_race(
        racing.settle_race(
            admin.event_log,
            admin.context,
            race_id,
            lambda: racing.race_tickets(services.projections, race_id),
            racing.payout_policy(services.settings),
            body.reason,
        )
    )


@router.post("/{race_id}/void", operation_id="admin_race_void")
def void(
    race_id: UUID,
    body: ReasonCreate,
    admin: AdminCommand,
    services: ServicesDep,
    prices: PricesDep,
) -> RaceWrittenPublic:
    """No race: every ticket refunded, takeout included (any state before settled)."""
    return written_race(
        racing.void_race(
            admin.event_log,
            admin.context,
            prices,
            race_id,
            lambda: racing.race_tickets(services.projections, race_id),
            body.reason,
        )
    )
