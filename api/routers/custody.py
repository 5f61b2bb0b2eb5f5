"""Custody: the process that holds the treasury key, a service client with the
`payout:execute` scope. It leases the oldest authorized withdrawal (with a fencing token),
pays it on chain, then reports the transaction or cancels; only the latest token counts."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends
from pydantic import BaseModel, Field, field_validator

from api.auth import Principal, require_service
from api.deps import ClockDep, ServicesDep, command_context
from api.routing import APIRouter
from api.schemas import Reason, usdc_text
from projections.withdrawals import leasable_withdrawals
from services import withdrawals as withdrawing
from services.withdrawals import CUSTODY_SCOPE, WithdrawalState

router = APIRouter(prefix="/v1/custody/withdrawals", tags=["custody"])

CustodyService = Annotated[Principal, Depends(require_service(CUSTODY_SCOPE))]

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
FencingToken = Annotated[int, Field(ge=1, le=2**31 - 1, description="the lease's token")]


class LeasedWithdrawalPublic(BaseModel):
    withdrawal_id: UUID
    wallet: str = Field(description="the destination: the wallet that requested it")
    amount_minor: str
    amount: str
    token_contract: str
    chain_id: int
    fencing_token: int = Field(description="present it with the report; higher each lease")
    lease_expires_at: datetime


class CustodyLeasePublic(BaseModel):
    lease: LeasedWithdrawalPublic | None = Field(description="null: nothing to lease now")
    position: int


class CustodyExecutedCreate(BaseModel):
    tx_hash: str = Field(max_length=66)
    fencing_token: FencingToken

    @field_validator("tx_hash")
    @classmethod
    def hex_hash(cls, value: str) -> str:
        if not _TX_HASH.match(value):
            raise ValueError("a transaction hash is 0x and 64 hex digits")
        return value.lower()


class CustodyCancelCreate(BaseModel):
    fencing_token: FencingToken
    reason: Reason


class CustodyWrittenPublic(BaseModel):
    withdrawal_id: UUID
    status: str = Field(
        description="executed (being verified), posted, authorized (the transaction was "
        "refused: leasable again) or cancelled"
    )
    reason: str | None
    tx_hash: str | None
    tx_status: str | None = Field(description="pending_confirmations, verified or rejected")
    fencing_token: int
    position: int


def written(state: WithdrawalState, position: int) -> CustodyWrittenPublic:
    return CustodyWrittenPublic(
        withdrawal_id=state.withdrawal_id,
        status=state.status,
        reason=state.reason,
        tx_hash=state.tx_hash,
        tx_status=state.tx_status,
        fencing_token=state.fencing_token,
        position=position,
    )


@router.post("/lease", operation_id="custody_withdrawal_lease")
def lease(custodian: CustodyService, services: ServicesDep, clock: ClockDep) -> CustodyLeasePublic:
    """Lease the oldest authorized withdrawal (or one whose lease ran out) for
    `PUMPPARTY_WITHDRAWAL_LEASE_SECONDS`: its destination, amount and a fencing token
    higher than any before for it. Two custodians never hold one withdrawal at once."""
    context = command_context(custodian.actor, clock)
    done = withdrawing.lease_withdrawal(
        services.event_log,
        context,
        candidates=leasable_withdrawals(services.datastore, context.occurred_at),
        policy=withdrawing.withdrawal_policy(services.settings),
    )
    state = done.result
    if state is None:
        return CustodyLeasePublic(lease=None, position=done.position)
    assert state.lease_expires_at is not None
    return CustodyLeasePublic(
        lease=LeasedWithdrawalPublic(
            withdrawal_id=state.withdrawal_id,
            wallet=state.wallet,
            amount_minor=str(state.amount_minor),
            amount=usdc_text(state.amount_minor),
            token_contract=state.token_contract,
            chain_id=state.chain_id,
            fencing_token=state.fencing_token,
            lease_expires_at=state.lease_expires_at,
        ),
        position=done.position,
    )


@router.post("/{withdrawal_id}/executed", operation_id="custody_withdrawal_executed")
def executed(
    withdrawal_id: UUID,
    body: CustodyExecutedCreate,
    custodian: CustodyService,
    services: ServicesDep,
    clock: ClockDep,
) -> CustodyWrittenPublic:
    """Report the transaction that paid the withdrawal, with the lease's fencing token (a
    stale one: 409 `stale-fencing-token`). The chain is asked at once and again by the
    poller: verified, it is posted; refused (wrong wallet or amount, reorged out...), it is
    authorized again, to be leased anew."""
    done = withdrawing.report_executed(
        services.event_log,
        command_context(custodian.actor, clock),
        services.evm,
        services.deposit_policy,
        withdrawal_id=withdrawal_id,
        fencing_token=body.fencing_token,
        tx_hash=body.tx_hash,
    )
    return written(done.result, done.position)


@router.post("/{withdrawal_id}/cancel", operation_id="custody_withdrawal_cancel")
def cancel(
    withdrawal_id: UUID,
    body: CustodyCancelCreate,
    custodian: CustodyService,
    services: ServicesDep,
    clock: ClockDep,
) -> CustodyWrittenPublic:
    """Give the leased withdrawal up, with the lease's fencing token: its amount returns
    to the user's available balance."""
    done = withdrawing.cancel_withdrawal(
        services.event_log,
        command_context(custodian.actor, clock),
        withdrawal_id=withdrawal_id,
        fencing_token=body.fencing_token,
        reason=body.reason,
    )
    return written(done.result, done.position)
