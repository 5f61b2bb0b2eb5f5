"""Admins run the arena: its controls (capacity, paused admissions) and last round, the
whole queue with the entries a round would skip, members by status, and suspending,
reinstating or removing a member. Every change is an event with the admin and a reason."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from aggregates.arena import Arena, MembershipStatus
from api.auth import AdminUser
from api.commands import AdminCommand
from api.deps import ReadsDep, SettingsDep, wait_for
from api.pagination import PageDep
from api.routers.arena import (
    MembershipWrittenPublic,
    MembersPublic,
    QueuePublic,
    SkippedPublic,
    members_page,
    queue_page,
)
from api.routing import APIRouter
from api.schemas import Reason
from projections import arena
from services import arena as arenas
from services.arena import ArenaControls, MembershipState
from services.eventlog import Written

router = APIRouter(prefix="/v1/admin/arena", tags=["admin"])

STATUS_PATTERN = "^(" + "|".join(s.value for s in MembershipStatus) + ")$"


class ReasonCreate(BaseModel):
    reason: Reason


class CapacityUpdate(BaseModel):
    capacity: Annotated[int, Field(strict=True, ge=0, le=Arena.MAX_CAPACITY)]
    reason: Reason


class LastRoundPublic(BaseModel):
    round_id: UUID
    held_at: datetime
    actor: str
    admitted: list[UUID]
    skipped: list[SkippedPublic]


class ArenaPublic(BaseModel):
    capacity: int = Field(description="the admin's capacity, or the service's setting")
    capacity_set_by_admin: bool
    paused: bool
    pause_reason: str | None
    seats_taken: int
    queue_depth: int
    eligible: int
    last_round: LastRoundPublic | None


class ControlsWrittenPublic(BaseModel):
    capacity: int
    paused: bool
    seats_taken: int
    position: int


def controls_written(written: Written[ArenaControls]) -> ControlsWrittenPublic:
    controls = written.result
    return ControlsWrittenPublic(
        capacity=controls.capacity,
        paused=controls.paused,
        seats_taken=controls.seats,
        position=written.position,
    )


def membership_written(
    clone_id: UUID, written: Written[MembershipState]
) -> MembershipWrittenPublic:
    return MembershipWrittenPublic(
        clone_id=clone_id, status=written.result.status, position=written.position
    )


@router.get("", operation_id="admin_arena_get", dependencies=[Depends(wait_for("arena"))])
async def get_arena(admin: AdminUser, reads: ReadsDep, settings: SettingsDep) -> ArenaPublic:
    """The controls in force, the seats taken, the queue's size, and the last round."""
    controls = await arena.controls(reads)
    entries = await arena.queue(reads)
    last = await arena.latest_round(reads)
    chosen = controls.capacity if controls else None
    return ArenaPublic(
        capacity=settings.arena_capacity if chosen is None else chosen,
        capacity_set_by_admin=chosen is not None,
        paused=controls.paused if controls else False,
        pause_reason=controls.pause_reason if controls else None,
        seats_taken=controls.seats if controls else 0,
        queue_depth=len(entries),
        eligible=sum(entry.eligible for entry in entries),
        last_round=None
        if last is None
        else LastRoundPublic(
            round_id=last.round_id,
            held_at=last.held_at,
            actor=last.actor,
            admitted=last.admitted,
            skipped=[SkippedPublic.model_validate(s) for s in last.skipped],
        ),
    )


@router.get("/queue", operation_id="admin_arena_queue", dependencies=[Depends(wait_for("arena"))])
async def admin_queue(admin: AdminUser, reads: ReadsDep, page: PageDep) -> QueuePublic:
    """Every queued clone in order, the ones a round would skip included, with why."""
    return queue_page(await arena.queue(reads), page)


@router.get(
    "/members", operation_id="admin_arena_members", dependencies=[Depends(wait_for("arena"))]
)
async def admin_members(
    admin: AdminUser,
    reads: ReadsDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
    owner_id: UUID | None = None,
) -> MembersPublic:
    """Memberships narrowed by status (default: admitted and suspended) and owner."""
    where = arena.MemberFilter(owner_id=owner_id)
    if status is not None:
        where = arena.MemberFilter(statuses=(status,), owner_id=owner_id)
    return members_page(await arena.members(reads, where, page), page)


@router.post("/members/{clone_id}/suspend", operation_id="admin_arena_suspend")
def suspend(clone_id: UUID, body: ReasonCreate, admin: AdminCommand) -> MembershipWrittenPublic:
    """The member keeps its seat, but is out of races until reinstated."""
    written = arenas.suspend_member(
        admin.event_log, admin.context, clone_id=clone_id, reason=body.reason
    )
    return membership_written(clone_id, written)


@router.post("/members/{clone_id}/reinstate", operation_id="admin_arena_reinstate")
def reinstate(clone_id: UUID, body: ReasonCreate, admin: AdminCommand) -> MembershipWrittenPublic:
    written = arenas.reinstate_member(
        admin.event_log, admin.context, clone_id=clone_id, reason=body.reason
    )
    return membership_written(clone_id, written)


@router.post("/members/{clone_id}/remove", operation_id="admin_arena_remove")
def remove(clone_id: UUID, body: ReasonCreate, admin: AdminCommand) -> MembershipWrittenPublic:
    """Out of the queue or the arena; a seat it held is free for the next round."""
    written = arenas.remove_member(
        admin.event_log, admin.context, clone_id=clone_id, reason=body.reason
    )
    return membership_written(clone_id, written)


@router.put("/capacity", operation_id="admin_arena_capacity")
def set_capacity(
    body: CapacityUpdate, admin: AdminCommand, settings: SettingsDep
) -> ControlsWrittenPublic:
    """Seats from now on. Lower than the seats taken removes nobody: rounds admit no one
    until members leave."""
    written = arenas.set_capacity(
        admin.event_log,
        admin.context,
        capacity=body.capacity,
        reason=body.reason,
        default_capacity=settings.arena_capacity,
    )
    return controls_written(written)


@router.post("/pause", operation_id="admin_arena_pause")
def pause(body: ReasonCreate, admin: AdminCommand, settings: SettingsDep) -> ControlsWrittenPublic:
    """Rounds admit no one until admissions resume; each says it was paused."""
    written = arenas.pause_admissions(
        admin.event_log,
        admin.context,
        reason=body.reason,
        default_capacity=settings.arena_capacity,
    )
    return controls_written(written)


@router.post("/resume", operation_id="admin_arena_resume")
def resume(body: ReasonCreate, admin: AdminCommand, settings: SettingsDep) -> ControlsWrittenPublic:
    written = arenas.resume_admissions(
        admin.event_log,
        admin.context,
        reason=body.reason,
        default_capacity=settings.arena_capacity,
    )
    return controls_written(written)
