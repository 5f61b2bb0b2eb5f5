"""The Arena: its members and promotion queue (public), admission rounds (a service with
the `arena:sync` scope), and each owner's view of their clone in it (owner routes)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from pydantic import BaseModel, Field

from api.auth import CurrentUser, Principal, bearer, caller_of, require_service
from api.commands import UserCommand, items_of
from api.deps import ClockDep, EventLogDep, ServicesDep, command_context, wait_for
from api.pagination import PageDep
from api.routers.clones import owned
from api.routing import APIRouter
from api.schemas import RequiredIdempotencyKey
from projections import arena, clones
from projections.paging import Page
from services import arena as arenas
from services.arena import RoundResult

router = APIRouter(tags=["arena"])

SYNC_SCOPE = "arena:sync"


class MemberPublic(BaseModel):
    clone_id: UUID
    display_name: str
    admitted_at: datetime | None
    status: str = Field(description="admitted or suspended (admins also see removed, retired)")


class MembersPublic(BaseModel):
    items: list[MemberPublic]
    next_cursor: str | None


class QueueEntryPublic(BaseModel):
    clone_id: UUID
    display_name: str
    passed_at: datetime
    position: int | None = Field(description="place among eligible entries; null if skipped")
    place: int = Field(description="place among every queued clone, eligible or not")
    eligible: bool
    skip_reason: str | None = Field(
        description="why the entry is skipped (it keeps its place): clone-banned, "
        "clone-archived, profile-missing, profile-not-approved, owner-not-in-good-standing"
    )


class QueuePublic(BaseModel):
    items: list[QueueEntryPublic]
    next_cursor: str | None


class SkippedPublic(BaseModel):
    clone_id: UUID
    reason: str


class RoundPublic(BaseModel):
    round_id: UUID
    capacity: int
    seats_before: int
    paused: bool
    admitted: list[UUID] = Field(description="in queue order")
    skipped: list[SkippedPublic] = Field(description="entries passed over, with why")
    position: int


class ChangePublic(BaseModel):
    change: str
    reason: str | None
    round_id: UUID | None
    audition_id: UUID | None
    attempt: int | None
    actor: str
    at: datetime


class CloneArenaPublic(BaseModel):
    clone_id: UUID
    status: str | None = Field(description="null if the clone never passed an audition")
    status_reason: str | None
    queue_position: int | None = Field(description="among eligible entries, while queued")
    queue_place: int | None
    eligible: bool | None = Field(description="while queued: whether a round would admit it")
    skip_reason: str | None
    admitted_at: datetime | None
    history: list[ChangePublic]


class MembershipWrittenPublic(BaseModel):
    clone_id: UUID
    status: str
    position: int


def queue_page(entries: Sequence[arena.QueueEntry], page: Page) -> QueuePublic:
    """A page of queue entries by place (cursor: place)."""
    after = page.position("place")
    rows = [entry for entry in entries if entry.place > after][: page.fetch]
    items, next_cursor = page.cut(rows, "place")
    return QueuePublic(
        items=[
            QueueEntryPublic(
                clone_id=entry.clone_id,
                display_name=entry.display_name,
                passed_at=entry.passed_at,
                position=entry.position,
                place=entry.place,
                eligible=entry.eligible,
                skip_reason=entry.skip_reason,
            )
            for entry in items
        ],
        next_cursor=next_cursor,
    )


def members_page(rows: Sequence[arena.MemberRow], page: Page) -> MembersPublic:
    items, next_cursor = page.cut(rows, "ordinal")
    return MembersPublic(items=items_of(MemberPublic, items), next_cursor=next_cursor)


def round_public(result: RoundResult, position: int) -> RoundPublic:
    assert result.round_id is not None  # a round asked for by key is always recorded
    return RoundPublic(
        round_id=result.round_id,
        capacity=result.capacity,
        seats_before=result.seats_before,
        paused=result.paused,
        admitted=result.admitted,
        skipped=[SkippedPublic(clone_id=s.clone_id, reason=s.reason) for s in result.skipped],
        position=position,
    )


async def signed_in_caller(request: Request) -> Principal | None:
    """The caller if a bearer token came with a public read (a bad one is still a 401)."""
    credentials = await bearer(request)
    return await caller_of(request, credentials) if credentials is not None else None


@router.get(
    "/v1/arena/members", operation_id="arena_members", dependencies=[Depends(wait_for("arena"))]
)
async def list_members(services: ServicesDep, page: PageDep) -> MembersPublic:
    """Anyone: the arena's members (admitted or suspended), in the order admitted."""
    return members_page(await arena.members(services.reads, arena.MemberFilter(), page), page)


@router.get(
    "/v1/arena/queue", operation_id="arena_queue", dependencies=[Depends(wait_for("arena"))]
)
async def list_queue(
    services: ServicesDep,
    page: PageDep,
    caller: Annotated[Principal | None, Depends(signed_in_caller)],
) -> QueuePublic:
    """Anyone: eligible entries in queue order, with their positions. A signed-in owner
    also sees their own skipped entries, in place, with why."""
    owner = caller.user_id if caller is not None and caller.kind == "user" else None
    entries = [
        entry
        for entry in await arena.queue(services.reads)
        if entry.eligible or entry.owner_id == owner
    ]
    return queue_page(entries, page)


SyncService = Annotated[Principal, Depends(require_service(SYNC_SCOPE))]


@router.post("/v1/arena/admissions/sync", operation_id="arena_admissions_sync")
def sync_admissions(
    key: RequiredIdempotencyKey,
    service: SyncService,
    services: ServicesDep,
    event_log: EventLogDep,
    clock: ClockDep,
) -> RoundPublic:
    """One admission round (service token with `arena:sync`): admits eligible queued
    clones in queue order while seats are free; answers who was admitted and who was
    skipped and why. The same key answers the first round again."""
    written = arenas.sync_admissions(
        event_log,
        command_context(service.actor, clock),
        key=key,
        candidates=arena.admission_candidates(services.datastore),
        policy=arenas.admission_policy(services.settings),
    )
    return round_public(written.result, written.position)


@router.get(
    "/v1/clones/{clone_id}/arena",
    operation_id="clone_arena",
    dependencies=[Depends(wait_for("arena"))],
)
async def clone_arena(clone_id: UUID, user: CurrentUser, services: ServicesDep) -> CloneArenaPublic:
    """Owner: the clone's place in the queue and whether a round would admit it, its
    membership, and every change of it."""
    await owned(
        services,
        "clones",
        lambda: clones.clone_owner(services.reads, clone_id),
        user,
        f"clone {clone_id}",
    )
    membership, history, entries = await asyncio.gather(
        arena.membership_of(services.reads, clone_id),
        arena.history_of(services.reads, clone_id),
        arena.queue(services.reads),
    )
    entry = next((e for e in entries if e.clone_id == clone_id), None)
    return CloneArenaPublic(
        clone_id=clone_id,
        status=membership.status if membership else None,
        status_reason=membership.status_reason if membership else None,
        queue_position=entry.position if entry else None,
        queue_place=entry.place if entry else None,
        eligible=entry.eligible if entry else None,
        skip_reason=entry.skip_reason if entry else None,
        admitted_at=membership.admitted_at if membership else None,
        history=items_of(ChangePublic, history),
    )


@router.post("/v1/clones/{clone_id}/arena/retire", operation_id="clone_arena_retire")
def retire(clone_id: UUID, user: UserCommand) -> MembershipWrittenPublic:
    """Owner: take the clone out of the queue or the arena (its seat frees for the next
    round). A clone that is not queued or seated is a 409."""
    written = arenas.retire_clone(
        user.event_log, user.context, clone_id=clone_id, owner_id=user.user_id
    )
    return MembershipWrittenPublic(
        clone_id=clone_id, status=written.result.status, position=written.position
    )
