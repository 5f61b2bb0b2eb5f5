"""Admins revoke entitlements, with a reason (the admin is the actor), and read any ledger
account's balance: a race's escrow, the treasury's takeout, breakage and minus pool."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Path
from pydantic import BaseModel, Field

from api.auth import AdminUser
from api.commands import AdminCommand
from api.deps import ReadsDep, wait_for
from api.routing import APIRouter
from api.schemas import Reason, WrittenPublic
from projections import ledger
from services import economy

router = APIRouter(prefix="/v1/admin/entitlements", tags=["admin"])
ledger_router = APIRouter(prefix="/v1/admin/ledger", tags=["admin"])

LedgerAccount = Annotated[
    str,
    Path(
        pattern=r"^[a-z_]+(:[A-Za-z0-9_-]{1,64}){0,2}$",
        description="e.g. `treasury`, `treasury:takeout`, `race:<id>:escrow`, `user:<id>`",
    ),
]


class AccountBalancePublic(BaseModel):
    account: str
    balance_minor: str = Field(description="posted: the sum of the account's entries")
    reserved_minor: str = Field(description="held by pending transfers out of it")
    incoming_minor: str = Field(description="pending transfers into it")
    available_minor: str = Field(description="posted less reserved")


class RevocationCreate(BaseModel):
    reason: Reason


@router.post("/{entitlement_id}/revoke", operation_id="admin_revoke_entitlement")
def revoke(
    entitlement_id: UUID,
    body: RevocationCreate,
    admin: AdminCommand,
) -> WrittenPublic:
    written = economy.revoke_entitlement(
        admin.event_log, admin.context, entitlement_id, body.reason
    )
    return WrittenPublic(position=written.position)


@ledger_router.get(
    "/accounts/{account}",
    operation_id="admin_ledger_balance",
    dependencies=[Depends(wait_for("ledger"))],
)
async def balance(
    account: LedgerAccount, admin: AdminUser, reads: ReadsDep
) -> AccountBalancePublic:
    """Any ledger account's balances in minor units (0 for one with no entries)."""
    balance = await ledger.balance_of(reads, account)
    return AccountBalancePublic(
        account=account,
        balance_minor=str(balance.posted_minor),
        reserved_minor=str(balance.reserved_minor),
        incoming_minor=str(balance.incoming_minor),
        available_minor=str(balance.available_minor),
    )
