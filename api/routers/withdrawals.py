"""Withdrawals to the signed-in wallet (owner routes), and their authorization by admins
(maker-checker: the requesting user is the maker and never approves). Custody's side is
`api/routers/custody.py`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from aggregates.errors import NotFoundError
from aggregates.withdrawals import WithdrawalStatus
from api.auth import AdminUser, CurrentUser, owned_or_404
from api.commands import AdminCommand, UserCommand
from api.deps import ReadsDep, ServicesDep, SettingsDep, found, wait_for
from api.pagination import PageDep
from api.routing import APIRouter
from api.schemas import Reason, RequiredIdempotencyKey, usdc_text
from projections import withdrawals
from services import withdrawals as withdrawing
from services.economy import usdc_minor_units

router = APIRouter(prefix="/v1/economy/withdrawals", tags=["economy"])
admin_router = APIRouter(prefix="/v1/admin/withdrawals", tags=["admin"])

STATUS_PATTERN = "^(" + "|".join(s.value for s in WithdrawalStatus) + ")$"

Amount = Annotated[
    Decimal,
    Field(gt=0, le=Decimal("1e9"), decimal_places=6, description="USDC (up to 6 decimals)"),
]


class WithdrawalCreate(BaseModel):
    amount: Amount


class WithdrawalWrittenPublic(BaseModel):
    withdrawal_id: UUID
    status: str = Field(
        description="awaiting_approval, authorized, leased, executed (the transaction is "
        "being verified), posted, rejected or cancelled"
    )
    reason: str | None
    wallet: str = Field(description="where it is paid: the wallet that requested it")
    amount_minor: str
    amount: str
    required_approvals: int = Field(description="0: authorized at once; 1: an admin approves")
    position: int


class WithdrawalPublic(BaseModel):
    withdrawal_id: UUID
    wallet: str
    amount_minor: str
    amount: str
    status: str
    reason: str | None = Field(
        description="why it is where it is: a rejection's or cancellation's reason, what "
        "the last transaction was refused for, or what its verification waits for"
    )
    required_approvals: int
    tx_hash: str | None = Field(description="the last transaction reported for it")
    tx_status: str | None = Field(description="pending_confirmations, verified or rejected")
    confirmations: int
    requested_at: datetime
    updated_at: datetime
    position: int


class WithdrawalsPublic(BaseModel):
    items: list[WithdrawalPublic]
    next_cursor: str | None


class WithdrawalAttemptPublic(BaseModel):
    tx_hash: str
    fencing_token: int
    custodian: str
    reported_at: datetime
    status: str
    reason: str | None


class AdminWithdrawalPublic(WithdrawalPublic):
    user_id: UUID
    maker: str
    approved_by: str | None
    resolved_by: str | None
    custodian: str | None
    fencing_token: int = Field(description="the latest lease's (0: never leased)")
    lease_expires_at: datetime | None
    attempts: list[WithdrawalAttemptPublic] = Field(
        description="every transaction reported, judged"
    )


class AdminWithdrawalsPublic(BaseModel):
    items: list[AdminWithdrawalPublic]
    next_cursor: str | None


class WithdrawalDecisionCreate(BaseModel):
    reason: Reason


class WithdrawalDecisionPublic(BaseModel):
    withdrawal_id: UUID
    status: str
    position: int


def public(row: withdrawals.WithdrawalRow) -> dict[str, Any]:
    return {
        **asdict(row),
        "amount_minor": str(row.amount_minor),
        "amount": usdc_text(row.amount_minor),
    }


@router.post("", status_code=202, operation_id="economy_withdrawal_request")
def request_withdrawal(
    body: WithdrawalCreate,
    key: RequiredIdempotencyKey,
    user: UserCommand,
    settings: SettingsDep,
) -> WithdrawalWrittenPublic:
    """Withdraw to your signed-in wallet: the amount leaves your available balance at once
    (more than is available: 409 `insufficient-funds`). Below the auto-approval amount it
    is authorized at once, otherwise an admin approves it; then custody pays it on chain
    and the transaction is verified before your posted balance drops. Retrying with the
    same key returns the first withdrawal."""
    written = withdrawing.request_withdrawal(
        user.event_log,
        user.context,
        user_id=user.user_id,
        key=key,
        wallet=user.address,
        amount_minor=usdc_minor_units(body.amount),
        terms=withdrawing.ChainTerms(
            chain_id=settings.chain_id,
            token_contract=settings.usdc_contract,
            treasury_address=settings.treasury_address,
        ),
        policy=withdrawing.withdrawal_policy(settings),
    )
    state = written.result
    return WithdrawalWrittenPublic(
        withdrawal_id=state.withdrawal_id,
        status=state.status,
        reason=state.reason,
        wallet=state.wallet,
        amount_minor=str(state.amount_minor),
        amount=usdc_text(state.amount_minor),
        required_approvals=state.required_approvals,
        position=written.position,
    )


@router.get(
    "", operation_id="economy_withdrawals_list", dependencies=[Depends(wait_for("withdrawals"))]
)
async def list_withdrawals(user: CurrentUser, reads: ReadsDep, page: PageDep) -> WithdrawalsPublic:
    """Your withdrawals, oldest first."""
    rows, next_cursor = page.cut(
        await withdrawals.withdrawals_of_user(reads, user.user_id, page), "position"
    )
    return WithdrawalsPublic(
        items=[WithdrawalPublic.model_validate(public(row)) for row in rows],
        next_cursor=next_cursor,
    )


@router.get(
    "/{withdrawal_id}",
    operation_id="economy_withdrawal_get",
    dependencies=[Depends(wait_for("withdrawals"))],
)
async def get_withdrawal(
    withdrawal_id: UUID, user: CurrentUser, services: ServicesDep
) -> WithdrawalPublic:
    row = await found(
        services,
        "withdrawals",
        lambda: withdrawals.withdrawal_by_id(services.reads, withdrawal_id),
    )
    owned_or_404(row.user_id if row else None, user, f"withdrawal {withdrawal_id}")
    assert row is not None
    return WithdrawalPublic.model_validate(public(row))


@admin_router.get(
    "", operation_id="admin_withdrawals_list", dependencies=[Depends(wait_for("withdrawals"))]
)
async def admin_list_withdrawals(
    admin: AdminUser,
    reads: ReadsDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
) -> AdminWithdrawalsPublic:
    """Every withdrawal, oldest first, narrowed by status (`awaiting_approval`...), with
    its approval, its lease and every transaction reported for it."""
    rows, next_cursor = page.cut(await withdrawals.withdrawals(reads, status, page), "position")
    return AdminWithdrawalsPublic(
        items=[AdminWithdrawalPublic.model_validate(public(row)) for row in rows],
        next_cursor=next_cursor,
    )


@admin_router.get(
    "/{withdrawal_id}",
    operation_id="admin_withdrawal_get",
    dependencies=[Depends(wait_for("withdrawals"))],
)
async def admin_get_withdrawal(
    withdrawal_id: UUID, admin: AdminUser, services: ServicesDep
) -> AdminWithdrawalPublic:
    row = await found(
        services,
        "withdrawals",
        lambda: withdrawals.withdrawal_by_id(services.reads, withdrawal_id),
    )
    if row is None:
        raise NotFoundError(f"withdrawal {withdrawal_id} not found")
    return AdminWithdrawalPublic.model_validate(public(row))


@admin_router.post("/{withdrawal_id}/approve", operation_id="admin_withdrawal_approve")
def approve(
    withdrawal_id: UUID, body: WithdrawalDecisionCreate, admin: AdminCommand
) -> WithdrawalDecisionPublic:
    """Authorize a withdrawal awaiting approval, so custody may lease it. Not its maker
    (403 `maker-cannot-approve`); one not awaiting approval is 409."""
    done = withdrawing.approve_withdrawal(
        admin.event_log, admin.context, withdrawal_id, body.reason
    )
    return WithdrawalDecisionPublic(
        withdrawal_id=withdrawal_id, status=done.result.status, position=done.position
    )


@admin_router.post("/{withdrawal_id}/reject", operation_id="admin_withdrawal_reject")
def reject(
    withdrawal_id: UUID, body: WithdrawalDecisionCreate, admin: AdminCommand
) -> WithdrawalDecisionPublic:
    """Refuse a withdrawal awaiting approval: its amount returns to the user's available
    balance (the pending transfer is voided)."""
    done = withdrawing.reject_withdrawal(admin.event_log, admin.context, withdrawal_id, body.reason)
    return WithdrawalDecisionPublic(
        withdrawal_id=withdrawal_id, status=done.result.status, position=done.position
    )
