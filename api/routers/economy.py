"""The audition fee: quotes, purchases paid on-chain, entitlements, the user's ledger account."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, BeforeValidator, Field, field_validator

from aggregates.ledger import USDC_DECIMALS, user_account
from aggregates.purchases import InvalidIdempotencyKeyError
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
from projections import entitlements, ledger, purchases
from services import economy

router = APIRouter(tags=["economy"])

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


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


class PurchaseCreate(BaseModel):
    quote_id: UUID
    tx_hash: str = Field(max_length=66)

    @field_validator("tx_hash")
    @classmethod
    def hex_hash(cls, value: str) -> str:
        if not _TX_HASH.match(value):
            raise ValueError("a transaction hash is 0x and 64 hex digits")
        return value.lower()


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
    entries: list[LedgerEntryPublic]
    next_cursor: str | None


def idempotency_key(key: Annotated[str, Header(alias="Idempotency-Key", max_length=255)]) -> str:
    if not _KEY.match(key):
        raise InvalidIdempotencyKeyError(
            "Idempotency-Key must be 1 to 255 visible ASCII characters"
        )
    return key


def as_usdc(minor: int) -> str:
    return str(Decimal(minor).scaleb(-USDC_DECIMALS).quantize(Decimal(1).scaleb(-USDC_DECIMALS)))


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
        amount=as_usdc(quote.amount_minor),
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
    key: Annotated[str, Depends(idempotency_key)],
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
        purchase_id=state.purchase_id,
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
    dependencies=[Depends(wait_for("ledger"))],
)
async def my_ledger_account(
    user: CurrentUser, reads: ReadsDep, page: PageDep
) -> LedgerAccountPublic:
    account = user_account(user.user_id)
    balance = await ledger.balance_of(reads, account)
    rows, next_cursor = page.cut(await ledger.entries_of_account(reads, account, page), "position")
    return LedgerAccountPublic(
        account=account,
        balance_minor=str(balance),
        balance=as_usdc(balance),
        entries=items_of(LedgerEntryPublic, rows),
        next_cursor=next_cursor,
    )
