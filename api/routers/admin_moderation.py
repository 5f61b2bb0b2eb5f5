"""Admins moderate public profiles: approve or reject submissions; after reports, restore,
keep hidden or ban the clone. Each decision carries a reason and is an event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel

from api.auth import AdminUser
from api.commands import AdminCommand, Command, items_of
from api.deps import ReadsDep, wait_for
from api.pagination import PageDep
from api.routing import APIRouter
from api.schemas import Reason
from projections import moderation_queue
from services import cloning
from services.cloning import ProfileState
from services.eventlog import Written

router = APIRouter(prefix="/v1/admin/moderation", tags=["admin"])


class ApprovalCreate(BaseModel):
    reason: Reason | None = None


class DecisionCreate(BaseModel):
    reason: Reason


class DecisionPublic(BaseModel):
    profile_id: UUID
    clone_id: UUID
    status: str
    position: int


class QueueEntryPublic(BaseModel):
    profile_id: UUID
    clone_id: UUID
    owner_id: UUID
    display_name: str
    status: str
    awaiting: str
    open_reports: int
    queued_at: datetime


class QueuePublic(BaseModel):
    items: list[QueueEntryPublic]
    next_cursor: str | None


class ReportPublic(BaseModel):
    report_id: UUID
    reporter_id: UUID
    reason: str
    text: str
    status: str
    reported_at: datetime
    resolved_at: datetime | None


class ReportsPublic(BaseModel):
    items: list[ReportPublic]
    next_cursor: str | None


@router.get(
    "/queue", operation_id="moderation_queue", dependencies=[Depends(wait_for("moderation_queue"))]
)
async def queue(
    admin: AdminUser,
    reads: ReadsDep,
    page: PageDep,
    awaiting: Annotated[Literal["approval", "review"] | None, Query()] = None,
) -> QueuePublic:
    """Profiles awaiting a decision, oldest first: new or edited ones, and reported ones."""
    rows, next_cursor = page.cut(
        await moderation_queue.awaiting_decision(reads, awaiting, page), "queued_position"
    )
    return QueuePublic(
        items=items_of(QueueEntryPublic, rows),
        next_cursor=next_cursor,
    )


@router.get(
    "/profiles/{profile_id}/reports",
    operation_id="moderation_reports",
    dependencies=[Depends(wait_for("moderation_queue"))],
)
async def reports(
    profile_id: UUID, admin: AdminUser, reads: ReadsDep, page: PageDep
) -> ReportsPublic:
    rows, next_cursor = page.cut(
        await moderation_queue.reports_of_profile(reads, profile_id, page), "position"
    )
    return ReportsPublic(
        items=items_of(ReportPublic, rows),
        next_cursor=next_cursor,
    )


def decide(
    decision: Callable[..., Written[ProfileState]], command: Command, profile_id: UUID, reason: str
) -> DecisionPublic:
    written = decision(command.event_log, command.context, profile_id=profile_id, reason=reason)
    state = written.result
    return DecisionPublic(
        profile_id=state.profile_id,
        clone_id=state.clone_id,
        status=state.status,
        position=written.position,
    )


@router.post("/profiles/{profile_id}/approve", operation_id="moderation_approve")
def approve(profile_id: UUID, body: ApprovalCreate, admin: AdminCommand) -> DecisionPublic:
    return decide(cloning.approve_profile, admin, profile_id, body.reason or "")


@router.post("/profiles/{profile_id}/reject", operation_id="moderation_reject")
def reject(profile_id: UUID, body: DecisionCreate, admin: AdminCommand) -> DecisionPublic:
    return decide(cloning.reject_profile, admin, profile_id, body.reason)


@router.post("/profiles/{profile_id}/restore", operation_id="moderation_restore")
def restore(profile_id: UUID, body: DecisionCreate, admin: AdminCommand) -> DecisionPublic:
    """A hidden profile was reported wrongly: it is public again, its reports closed."""
    return decide(cloning.restore_profile, admin, profile_id, body.reason)


@router.post("/profiles/{profile_id}/keep-hidden", operation_id="moderation_keep_hidden")
def keep_hidden(profile_id: UUID, body: DecisionCreate, admin: AdminCommand) -> DecisionPublic:
    """The reports were right: the profile stays hidden until its owner edits it."""
    return decide(cloning.keep_profile_hidden, admin, profile_id, body.reason)


@router.post("/profiles/{profile_id}/ban", operation_id="moderation_ban")
def ban(profile_id: UUID, body: DecisionCreate, admin: AdminCommand) -> DecisionPublic:
    """Ban the clone behind the profile: hidden for good, and it can no longer publish."""
    return decide(cloning.ban_clone, admin, profile_id, body.reason)
