"""Admins list every audition (with filters), read one, see the evaluator's queue, void an
audition with a reason, or have it evaluated now; the admin is the actor of each change."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from aggregates.errors import NotFoundError
from api.auth import AdminUser
from api.commands import AdminCommand
from api.deps import (
    ClockDep,
    ReadsDep,
    ServicesDep,
    SettingsDep,
    found,
    wait_for,
)
from api.pagination import PageDep
from api.routers.auditions import (
    STATUS_PATTERN,
    AuditionPublic,
    AuditionsPublic,
    audition_detail,
    page_of,
)
from api.routers.prop import PricesDep
from api.routing import APIRouter
from api.schemas import Reason
from projections import audition_queue, auditions
from services import auditions as auditioning

router = APIRouter(prefix="/v1/admin/auditions", tags=["admin"])


class VoidCreate(BaseModel):
    reason: Reason


class VoidedPublic(BaseModel):
    audition_id: UUID
    status: str
    restored_entitlement_id: UUID | None = Field(description="null when nothing was restored")
    position: int


class EvaluatedPublic(BaseModel):
    audition_id: UUID
    attempt: int
    status: str
    failed_rules: list[str]
    ended_by: str
    position: int


class QueuedPublic(BaseModel):
    audition_id: UUID
    owner_id: UUID
    clone_id: UUID
    attempt: int
    prop_account_id: UUID
    started_at: datetime
    due_at: datetime
    overdue: bool
    breach: str | None


class QueuePublic(BaseModel):
    items: list[QueuedPublic]
    next_cursor: str | None


@router.get("", operation_id="admin_auditions_list", dependencies=[Depends(wait_for("auditions"))])
async def list_auditions(
    admin: AdminUser,
    reads: ReadsDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
    owner_id: UUID | None = None,
    clone_id: UUID | None = None,
) -> AuditionsPublic:
    """Every audition, oldest first, narrowed by status, owner or clone."""
    where = auditions.AuditionFilter(status=status, owner_id=owner_id, clone_id=clone_id)
    return page_of(await auditions.auditions_matching(reads, where, page), page)


@router.get(
    "/queue",
    operation_id="admin_auditions_queue",
    dependencies=[Depends(wait_for("audition_queue"))],
)
async def evaluator_queue(
    admin: AdminUser,
    reads: ReadsDep,
    settings: SettingsDep,
    clock: ClockDep,
    page: PageDep,
    within: Annotated[
        int | None,
        Query(ge=0, le=366 * 24 * 3600, description="seconds ahead; the default is due-soon"),
    ] = None,
) -> QueuePublic:
    """The evaluator's queue: running auditions that are overdue, breached, or due within
    `within` seconds, soonest first."""
    now = clock()
    ahead = timedelta(seconds=settings.audition_due_soon if within is None else within)
    rows = await audition_queue.queued(reads, now + ahead, page)
    items, next_cursor = page.cut(rows, "due_at", "audition_id")
    return QueuePublic(
        items=[
            QueuedPublic.model_validate({**asdict(row), "overdue": row.due_at <= now})
            for row in items
        ],
        next_cursor=next_cursor,
    )


@router.get(
    "/{audition_id}",
    operation_id="admin_audition_get",
    dependencies=[Depends(wait_for("auditions")), Depends(wait_for("prop_accounts"))],
)
async def get_audition(
    audition_id: UUID, admin: AdminUser, services: ServicesDep
) -> AuditionPublic:
    row = await found(
        services, "auditions", lambda: auditions.audition_by_id(services.reads, audition_id)
    )
    if row is None:
        raise NotFoundError(f"audition {audition_id} not found")
    return await audition_detail(services, row)


@router.post("/{audition_id}/void", operation_id="admin_audition_void")
def void_audition(
    audition_id: UUID,
    body: VoidCreate,
    admin: AdminCommand,
    prices: PricesDep,
) -> VoidedPublic:
    """Void for good: the prop account is closed and the entitlement that paid for the
    current attempt is restored (not after a free retry). Voiding twice is a 409."""
    written = auditioning.void_audition(
        admin.event_log, admin.context, prices, audition_id, body.reason
    )
    return VoidedPublic(
        audition_id=audition_id,
        status="voided",
        restored_entitlement_id=written.result.restored_entitlement_id,
        position=written.position,
    )


@router.post("/{audition_id}/evaluate", operation_id="admin_audition_evaluate")
def evaluate_audition(audition_id: UUID, admin: AdminCommand, prices: PricesDep) -> EvaluatedPublic:
    """Judge the running attempt now, on every rule, as if it were due."""
    written = auditioning.evaluate_audition(
        admin.event_log, admin.context, prices, audition_id, now_requested=True
    )
    evaluation = written.result
    assert evaluation is not None  # asked for now, it is judged or refused
    return EvaluatedPublic(
        audition_id=evaluation.audition_id,
        attempt=evaluation.number,
        status=evaluation.status.value,
        failed_rules=evaluation.failed_rules,
        ended_by=evaluation.ended_by.value,
        position=written.position,
    )
