"""The audition fee (quotes, purchases paid on-chain, entitlements), balance deposits paid
on-chain, and the user's ledger account."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import Depends
from pydantic import BaseModel, BeforeValidator, Field, field_validator

from aggregates.deposits import DepositTerms
from aggregates.ledger import user_account
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
from api.routing import APIRouter
from api.schemas import RequiredIdempotencyKey, usdc_text
from projections import deposits, entitlements, ledger, purchases
from services import economy

router = APIRouter(tags=["economy"])

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


def _minor_text(value: object) -> object:
    return str(value) if isinstance(value, int) else value


MinorText = Annotated[str, BeforeValidator(_minor_text)]
"""An amount in minor units, as text (JSON numbers lose precision past 2**53)."""


class QuotePublic(BaseModel):
    quote_id: UUID
    amount: str
    amount_minor: str
    token_contract: str
    chain_id: int
    treasury_address: str
    expires_at: datetime
    position: int


def _hex_hash(value: str) -> str:
    if not _TX_HASH.match(value):
        raise ValueError("a transaction hash is 0x and 64 hex digits")
    return value.lower()


class PurchaseCreate(BaseModel):
    quote_id: UUID
    tx_hash: str = Field(max_length=66)

    @field_validator("tx_hash")
    @classmethod
    def hex_hash(cls, value: str) -> str:
        return _hex_hash(value)


class DepositCreate(BaseModel):
    tx_hash: str = Field(max_length=66)

    @field_validator("tx_hash")
    @classmethod
    def hex_hash(cls, value: str) -> str:
        return _hex_hash(value)


class DepositAccepted(BaseModel):
    deposit_id: UUID
    status: str
    reason: str | None
    amount_minor: MinorText | None
    """What was credited to the balance (verified only)."""
    amount: str | None
    position: int


class DepositPublic(BaseModel):
    deposit_id: UUID
    tx_hash: str
    status: str
    reason: str | None
    confirmations: int
    incoming_minor: MinorText
    """While pending: what the transaction carries to the treasury so far (not credited)."""
    amount_minor: MinorText | None
    """Once verified: what was credited to the balance."""
    position: int
    submitted_at: datetime
    updated_at: datetime


class DepositsPublic(BaseModel):
    items: list[DepositPublic]
    next_cursor: str | None


class PurchaseAccepted(BaseModel):
    purchase_id: UUID
    status: str
    reason: str | None
    position: int


class PurchasePublic(BaseModel):
    purchase_id: UUID
    quote_id: UUID
    tx_hash: str
    status: str
    reason: str | None
    confirmations: int
    paid_minor: MinorText | None
    submitted_at: datetime
    updated_at: datetime


class EntitlementPublic(BaseModel):
    entitlement_id: UUID
    purchase_id: UUID
    kind: str
    status: str
    consumed_by: UUID | None
    reason: str | None
    granted_at: datetime


class EntitlementsPublic(BaseModel):
    items: list[EntitlementPublic]
    next_cursor: str | None


class LedgerEntryPublic(BaseModel):
    transfer_id: UUID
    counterparty: str
    amount_minor: MinorText
    cause: str
    position: int
    posted_at: datetime


class LedgerAccountPublic(BaseModel):
    account: str
    balance_minor: str
    balance: str
    posted_minor: str
    """The sum of the account's posted entries (the same as `balance_minor`)."""
    posted: str
    pending_minor: str
    """On its way in, not spendable: deposits not yet credited (as far as the chain shows
    them) and pending transfers in (a payout awaiting authorization)."""
    pending: str
    reserved_minor: str
    """Held by pending transfers out (a withdrawal on its way): posted, not spendable."""
    reserved: str
    available_minor: str
    """What may be spent: posted less reserved."""
    available: str
    entries: list[LedgerEntryPublic]
    next_cursor: str | None


@router.post("/v1/economy/audition-quotes", status_code=201, operation_id="economy_quote")
def create_quote(user: UserCommand, settings: SettingsDep) -> QuotePublic:
    written = economy.quote_audition(
        user.event_log,
        user.context,
        quote_id=uuid.uuid4(),
        user_id=user.user_id,
        payer=user.address,
        fee=settings.audition_fee,
        token_contract=settings.usdc_contract,
        chain_id=settings.chain_id,
        treasury_address=settings.treasury_address,
        valid_for=timedelta(seconds=settings.quote_ttl),
    )
    quote = written.result
    return QuotePublic(
        quote_id=quote.id,
        amount=usdc_text(quote.amount_minor),
        amount_minor=str(quote.amount_minor),
        token_contract=quote.token_contract,
        chain_id=quote.chain_id,
        treasury_address=quote.treasury_address,
        expires_at=quote.expires_at,
        position=written.position,
    )


@router.post("/v1/economy/audition-purchases", status_code=202, operation_id="economy_purchase")
def create_purchase(
    body: PurchaseCreate,
    key: RequiredIdempotencyKey,
    user: UserCommand,
    services: ServicesDep,
) -> PurchaseAccepted:
    written = economy.purchase(
        user.event_log,
        user.context,
        services.evm,
        services.deposit_policy,
        user_id=user.user_id,
        key=key,
        quote_id=body.quote_id,
        tx_hash=body.tx_hash,
    )
    state = written.result
    return PurchaseAccepted(
        purchase_id=state.payment_id,
        status=state.status,
        reason=state.reason,
        position=written.position,
    )


@router.get(
    "/v1/economy/audition-purchases/{purchase_id}",
    operation_id="economy_purchase_get",
    dependencies=[Depends(wait_for("purchases"))],
)
async def get_purchase(
    purchase_id: UUID, user: CurrentUser, services: ServicesDep
) -> PurchasePublic:
    row = await found(
        services, "purchases", lambda: purchases.purchase_by_id(services.reads, purchase_id)
    )
    owned_or_404(row.user_id if row else None, user, f"purchase {purchase_id}")
    return PurchasePublic.model_validate(row, from_attributes=True)


@router.post("/v1/economy/deposits", status_code=202, operation_id="economy_deposit")
def create_deposit(
    body: DepositCreate,
    key: RequiredIdempotencyKey,
    user: UserCommand,
    services: ServicesDep,
    settings: SettingsDep,
) -> DepositAccepted:
    written = economy.deposit(
        user.event_log,
        user.context,
        services.evm,
        services.deposit_policy,
        user_id=user.user_id,
        key=key,
        terms=DepositTerms(
            chain_id=settings.chain_id,
            payer=user.address,
            token_contract=settings.usdc_contract,
            treasury_address=settings.treasury_address,
        ),
        tx_hash=body.tx_hash,
    )
    state = written.result
    credited = state.paid_minor if state.status == "verified" else None
    return DepositAccepted(
        deposit_id=state.payment_id,
        status=state.status,
        reason=state.reason,
        amount_minor=None if credited is None else str(credited),
        amount=None if credited is None else usdc_text(credited),
        position=written.position,
    )


@router.get(
    "/v1/economy/deposits",
    operation_id="economy_deposits_list",
    dependencies=[Depends(wait_for("deposits"))],
)
async def list_deposits(user: CurrentUser, reads: ReadsDep, page: PageDep) -> DepositsPublic:
    rows, next_cursor = page.cut(
        await deposits.deposits_of_user(reads, user.user_id, page), "position"
    )
    return DepositsPublic(items=items_of(DepositPublic, rows), next_cursor=next_cursor)


@router.get(
    "/v1/economy/deposits/{deposit_id}",
    operation_id="economy_deposit_get",
    dependencies=[Depends(wait_for("deposits"))],
)
async def get_deposit(deposit_id: UUID, user: CurrentUser, services: ServicesDep) -> DepositPublic:
    row = await found(
        services, "deposits", lambda: deposits.deposit_by_id(services.reads, deposit_id)
    )
    owned_or_404(row.user_id if row else None, user, f"deposit {deposit_id}")
    return DepositPublic.model_validate(row, from_attributes=True)


@router.get(
    "/v1/entitlements",
    operation_id="entitlements_list",
    dependencies=[Depends(wait_for("entitlements"))],
)
async def list_entitlements(
    user: CurrentUser, reads: ReadsDep, page: PageDep
) -> EntitlementsPublic:
    rows, next_cursor = page.cut(
        await entitlements.entitlements_of_user(reads, user.user_id, page),
        "granted_at",
        "entitlement_id",
    )
    return EntitlementsPublic(
        items=items_of(EntitlementPublic, rows),
        next_cursor=next_cursor,
    )


@router.get(
    "/v1/ledger/accounts/me",
    operation_id="ledger_account_me",
    dependencies=[Depends(wait_for("ledger")), Depends(wait_for("deposits"))],
)
async def my_ledger_account(
    user: CurrentUser, reads: ReadsDep, page: PageDep
) -> LedgerAccountPublic:
    account = user_account(user.user_id)
    balance = await ledger.user_balance(reads, user.user_id, account)
    rows, next_cursor = page.cut(await ledger.entries_of_account(reads, account, page), "position")
    return LedgerAccountPublic(
        account=account,
        balance_minor=str(balance.posted_minor),
        balance=usdc_text(balance.posted_minor),
        posted_minor=str(balance.posted_minor),
        posted=usdc_text(balance.posted_minor),
        pending_minor=str(balance.pending_minor),
        pending=usdc_text(balance.pending_minor),
        reserved_minor=str(balance.reserved_minor),
        reserved=usdc_text(balance.reserved_minor),
        available_minor=str(balance.available_minor),
        available=usdc_text(balance.available_minor),
        entries=items_of(LedgerEntryPublic, rows),
        next_cursor=next_cursor,
    )
