"""Auditions (owner routes): submit a published clone version, list and read them, retry a
failed one. Someone else's audition (or clone) is answered exactly like a missing one."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from api.auth import CurrentUser, owned_or_404
from api.commands import UserCommand, items_of
from api.deps import (
    ReadsDep,
    ServicesDep,
    SettingsDep,
    found,
    wait_for,
)
from api.pagination import PageDep
from api.problems import PROBLEM_MEDIA_TYPE, Problem
from api.routers.prop import Amount
from api.routing import APIRouter
from api.schemas import IdempotencyKey
from projections import auditions, prop_accounts
from projections.entitlements import available_entitlements
from projections.paging import Page
from services import auditions as auditioning
from services.auditions import AttemptState
from services.bootstrap import Services
from services.eventlog import Written

router = APIRouter(prefix="/v1/auditions", tags=["auditions"])

PAYMENT_REQUIRED: dict[int | str, dict[str, Any]] = {
    402: {
        "model": Problem,
        "content": {PROBLEM_MEDIA_TYPE: {}},
        "description": "no available audition entitlement (`entitlement-required`)",
    }
}


STATUS_PATTERN = "^(running|passed|failed|voided)$"


class AuditionCreate(BaseModel):
    clone_id: UUID
    version_hash: str = Field(
        pattern=r"^[0-9a-fA-F]{64}$", description="a published version of the clone (its id)"
    )


class AttemptWrittenPublic(BaseModel):
    audition_id: UUID
    status: str
    attempt: int
    prop_account_id: UUID
    entitlement_id: UUID | None = Field(description="what paid for the attempt; null if free")
    started_at: datetime
    due_at: datetime
    position: int


class AuditionRulesPublic(BaseModel):
    duration_seconds: int
    starting_equity: Amount
    profit_target: Amount
    daily_loss_limit: Amount
    max_drawdown: Amount
    min_trades: int
    min_active_days: int
    free_retries: int
    retry_window_seconds: int
    prop_rule_set: str
    prop_rule_set_version: int


class MetricsPublic(BaseModel):
    equity: Amount
    total_return: Amount = Field(description="(equity - starting equity) / starting equity")
    max_drawdown: Amount = Field(description="worst fall below the equity peak, / start")
    worst_daily_loss: Amount = Field(description="worst fall below a day's reference, / start")
    trades: int
    active_days: int
    breach: str | None


class AttemptPublic(BaseModel):
    number: int
    status: str
    prop_account_id: UUID
    entitlement_id: UUID | None
    free: bool
    started_at: datetime
    due_at: datetime
    ended_by: str | None = Field(description="due, breach or admin, once judged")
    evaluated_at: datetime | None
    failed_rules: list[str]
    metrics: MetricsPublic | None


class PropAccountSummaryPublic(BaseModel):
    account_id: UUID
    status: str
    breach: str | None
    starting_equity: Amount
    balance: Amount
    equity: Amount
    realized_pnl: Amount
    unrealized_pnl: Amount
    peak_equity: Amount
    fills: int
    rejections: int
    updated_at: datetime


class AuditionSummaryPublic(BaseModel):
    audition_id: UUID
    owner_id: UUID
    clone_id: UUID
    version_hash: str
    status: str
    current_attempt: int
    prop_account_id: UUID | None
    started_at: datetime | None
    due_at: datetime | None
    void_reason: str | None
    submitted_at: datetime
    updated_at: datetime


class AuditionsPublic(BaseModel):
    items: list[AuditionSummaryPublic]
    next_cursor: str | None


class AuditionPublic(AuditionSummaryPublic):
    rules: AuditionRulesPublic
    restored_entitlement_id: UUID | None
    attempts: list[AttemptPublic]
    prop_account: PropAccountSummaryPublic | None = Field(
        description="the current attempt's prop account, as its read model shows it"
    )


def written_attempt(written: Written[AttemptState]) -> AttemptWrittenPublic:
    state = written.result
    return AttemptWrittenPublic(
        audition_id=state.audition_id,
        status=state.status.value,
        attempt=state.attempt.number,
        prop_account_id=state.attempt.prop_account_id,
        entitlement_id=state.attempt.entitlement_id,
        started_at=state.attempt.started_at,
        due_at=state.attempt.due_at,
        position=written.position,
    )


async def audition_detail(services: Services, row: auditions.AuditionRow) -> AuditionPublic:
    """An audition with its attempts and its current prop account's summary (read through
    `found`: the account opened with the attempt, in the same transaction)."""
    reads = services.reads
    account_id = row.prop_account_id

    async def account() -> prop_accounts.PropAccountRow | None:
        if account_id is None:
            return None
        return await found(
            services, "prop_accounts", lambda: prop_accounts.account_by_id(reads, account_id)
        )

    attempts, summary = await asyncio.gather(
        auditions.attempts_of(reads, row.audition_id), account()
    )
    return AuditionPublic.model_validate(
        {
            **asdict(row),
            "attempts": [AttemptPublic.model_validate(a, from_attributes=True) for a in attempts],
            "prop_account": None
            if summary is None
            else PropAccountSummaryPublic.model_validate(summary, from_attributes=True),
        }
    )


def page_of(rows: Sequence[auditions.AuditionSummaryRow], page: Page) -> AuditionsPublic:
    """A page of audition rows read in `position` order."""
    items, next_cursor = page.cut(rows, "position")
    return AuditionsPublic(
        items=items_of(AuditionSummaryPublic, items),
        next_cursor=next_cursor,
    )


@router.post(
    "",
    status_code=201,
    operation_id="audition_submit",
    responses=PAYMENT_REQUIRED,
    dependencies=[Depends(wait_for("entitlements"))],
)
def submit_audition(
    body: AuditionCreate,
    user: UserCommand,
    services: ServicesDep,
    settings: SettingsDep,
    key: IdempotencyKey = None,
) -> AttemptWrittenPublic:
    """Submit a published version of your clone: one available audition entitlement is
    consumed, the audition created and its prop account opened, all at once. Pass the
    purchase's `position` as `X-Min-Position` to be sure a fresh entitlement is seen."""
    written = auditioning.submit_audition(
        user.event_log,
        user.context,
        owner_id=user.user_id,
        clone_id=body.clone_id,
        version_hash=body.version_hash.lower(),
        key=key or secrets.token_hex(16),
        rules=auditioning.audition_rules(settings),
        entitlements=available_entitlements(services.projections.datastore, user.user_id),
    )
    return written_attempt(written)


@router.get("", operation_id="auditions_list", dependencies=[Depends(wait_for("auditions"))])
async def list_auditions(
    user: CurrentUser,
    reads: ReadsDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
) -> AuditionsPublic:
    """Your auditions, oldest first."""
    return page_of(await auditions.auditions_of_owner(reads, user.user_id, status, page), page)


@router.get(
    "/{audition_id}",
    operation_id="audition_get",
    dependencies=[Depends(wait_for("auditions")), Depends(wait_for("prop_accounts"))],
)
async def get_audition(
    audition_id: UUID, user: CurrentUser, services: ServicesDep
) -> AuditionPublic:
    """Status, pinned rules, every attempt with its verdict and metrics, the due time, and
    the current attempt's prop account."""
    row = await found(
        services, "auditions", lambda: auditions.audition_by_id(services.reads, audition_id)
    )
    owned_or_404(row.owner_id if row else None, user, f"audition {audition_id}")
    assert row is not None  # owned_or_404 refused a missing row
    return await audition_detail(services, row)


@router.post(
    "/{audition_id}/retry",
    status_code=201,
    operation_id="audition_retry",
    responses=PAYMENT_REQUIRED,
    dependencies=[Depends(wait_for("entitlements"))],
)
def retry_audition(
    audition_id: UUID,
    user: UserCommand,
    services: ServicesDep,
    key: IdempotencyKey = None,
) -> AttemptWrittenPublic:
    """Start the next attempt of a failed audition on a new prop account: free within the
    retry policy pinned on the audition, otherwise it consumes another entitlement."""
    written = auditioning.retry_audition(
        user.event_log,
        user.context,
        audition_id=audition_id,
        owner_id=user.user_id,
        key=key,
        entitlements=available_entitlements(services.projections.datastore, user.user_id),
    )
    return written_attempt(written)
