"""Admins authorize race payouts (maker-checker): read a payout with its table and digest,
approve the table they saw (never their own), post it once enough approvals stand, or
reject it. Each is an event with the admin as its actor."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, Field, StringConstraints

from aggregates.errors import NotFoundError
from aggregates.payouts import PayoutStatus
from api.auth import AdminUser
from api.commands import AdminCommand
from api.deps import ReadsDep, ServicesDep, found, wait_for
from api.pagination import PageDep
from api.routing import APIRouter
from api.schemas import Reason
from projections import payouts
from services import payouts as authorizing
from services import races as racing

router = APIRouter(prefix="/v1/admin/payouts", tags=["admin"])

STATUS_PATTERN = "^(" + "|".join(s.value for s in PayoutStatus) + ")$"
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ApprovalPublic(BaseModel):
    approver: str
    digest: str
    approved_at: datetime


class PayoutPublic(BaseModel):
    payout_id: UUID
    race_id: UUID
    settlement: int
    status: str
    maker: str
    table_digest: str
    total_minor: str
    required_approvals: int
    approval_ttl_seconds: int
    approvals: list[ApprovalPublic]
    requested_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    reason: str | None


class PayoutsPublic(BaseModel):
    items: list[PayoutPublic]
    next_cursor: str | None


class TableLinePublic(BaseModel):
    ticket_id: UUID
    user_id: UUID
    amount_minor: str


class HeldPublic(BaseModel):
    transfer_id: UUID
    debit_account: str
    credit_account: str
    amount_minor: str
    status: str


class PayoutDetailPublic(PayoutPublic):
    table: list[TableLinePublic] = Field(description="per ticket, as the digest hashes it")
    held: list[HeldPublic] = Field(description="the pending transfers, summed per account")


class ApprovalCreate(BaseModel):
    digest: Digest = Field(description="the `table_digest` you reviewed")


class ReasonCreate(BaseModel):
    reason: Reason


class PayoutWrittenPublic(BaseModel):
    payout_id: UUID
    status: str
    position: int


def payout_public(row: payouts.PayoutRow) -> PayoutPublic:
    return PayoutPublic.model_validate({**asdict(row), "total_minor": str(row.total_minor)})


@router.get("", operation_id="admin_payouts_list", dependencies=[Depends(wait_for("payouts"))])
async def list_payouts(
    admin: AdminUser,
    reads: ReadsDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
) -> PayoutsPublic:
    """Payouts in the order requested, narrowed by status (`awaiting_approval`...)."""
    rows = await payouts.payouts(reads, status, page)
    items, next_cursor = page.cut(rows, "position")
    return PayoutsPublic(items=[payout_public(row) for row in items], next_cursor=next_cursor)


@router.get(
    "/{payout_id}", operation_id="admin_payout_get", dependencies=[Depends(wait_for("payouts"))]
)
async def get_payout(
    payout_id: UUID, admin: AdminUser, services: ServicesDep
) -> PayoutDetailPublic:
    """The payout with its table per ticket (recomputed from the race's tickets and result:
    what `table_digest` hashes) and the pending transfers that hold it."""
    row = await found(services, "payouts", lambda: payouts.payout_by_id(services.reads, payout_id))
    if row is None:
        raise NotFoundError(f"payout {payout_id} not found")
    held = await payouts.held_transfers(services.reads, payout_id)
    settlement = await asyncio.to_thread(  # the store and the tickets are read in threads
        lambda: racing.settlement_of(
            services.event_log, row.race_id, racing.race_tickets(services.projections, row.race_id)
        )
    )
    return PayoutDetailPublic(
        **payout_public(row).model_dump(),
        table=[
            TableLinePublic(
                ticket_id=p.ticket_id, user_id=p.user_id, amount_minor=str(p.amount_minor)
            )
            for p in settlement.payouts
        ],
        held=[
            HeldPublic(
                transfer_id=h.transfer_id,
                debit_account=h.debit_account,
                credit_account=h.credit_account,
                amount_minor=str(h.amount_minor),
                status=h.status,
            )
            for h in held
        ],
    )


def written(payout_id: UUID, status: str, position: int) -> PayoutWrittenPublic:
    return PayoutWrittenPublic(payout_id=payout_id, status=status, position=position)


@router.post("/{payout_id}/approve", operation_id="admin_payout_approve")
def approve(payout_id: UUID, body: ApprovalCreate, admin: AdminCommand) -> PayoutWrittenPublic:
    """Approve the table whose digest you reviewed. Not its maker (403
    `maker-cannot-approve`); another digest is 409 `payout-table-changed`; approving again
    counts once."""
    done = authorizing.approve_payout(admin.event_log, admin.context, payout_id, body.digest)
    return written(payout_id, done.result, done.position)


@router.post("/{payout_id}/post", operation_id="admin_payout_post")
def post(payout_id: UUID, body: ReasonCreate, admin: AdminCommand) -> PayoutWrittenPublic:
    """Post every pending transfer at once, with enough approvals in force (409
    `approvals-missing` otherwise); the race is paid."""
    done = authorizing.post_payout(admin.event_log, admin.context, payout_id, body.reason)
    return written(payout_id, done.result, done.position)


@router.post("/{payout_id}/reject", operation_id="admin_payout_reject")
def reject(payout_id: UUID, body: ReasonCreate, admin: AdminCommand) -> PayoutWrittenPublic:
    """Void the pending transfers; the race is official again, to settle again or void."""
    done = authorizing.reject_payout(admin.event_log, admin.context, payout_id, body.reason)
    return written(payout_id, done.result, done.position)
