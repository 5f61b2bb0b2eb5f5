"""Admins open prop accounts (auditions and races open theirs through the service) and
freeze, unfreeze, flatten or close them, each with a reason; every change is an event
on the account with the admin as its actor, so the account's audit log shows who and why."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from aggregates.base import CommandContext
from aggregates.prop_accounts import MAX_AMOUNT
from api.commands import AdminCommand, Command
from api.routers.prop import PricesDep
from api.routing import APIRouter
from api.schemas import Reason
from services import prop_trading
from services.eventlog import EventLog, Written

router = APIRouter(prefix="/v1/admin/prop/accounts", tags=["admin"])


class PropAccountCreate(BaseModel):
    key: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="names the account: the same key opens it once; another body is a 409",
    )
    owner_id: UUID
    clone_id: UUID
    clone_version_hash: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    purpose: Literal["audition", "race"]
    starting_equity: Annotated[
        Decimal, Field(gt=0, le=MAX_AMOUNT, max_digits=21, decimal_places=8, examples=["10000"])
    ]
    rule_set: str = Field(min_length=1, max_length=64)
    rule_set_version: int | None = Field(default=None, ge=1, le=1_000_000)


class PropAccountOpenedPublic(BaseModel):
    account_id: UUID
    position: int


class PropControlCreate(BaseModel):
    reason: Reason


class PropStatusPublic(BaseModel):
    account_id: UUID
    status: str
    position: int


@router.post("", status_code=201, operation_id="admin_prop_open")
def open_account(body: PropAccountCreate, admin: AdminCommand) -> PropAccountOpenedPublic:
    written = prop_trading.open_account(
        admin.event_log,
        admin.context,
        key=f"admin:{body.key}",
        owner_id=body.owner_id,
        clone_id=body.clone_id,
        clone_version_hash=body.clone_version_hash,
        purpose=body.purpose,
        starting_equity=body.starting_equity,
        rule_set_name=body.rule_set,
        rule_set_version=body.rule_set_version,
    )
    return PropAccountOpenedPublic(account_id=written.result, position=written.position)


def _control(
    account_id: UUID, admin: Command, run: Callable[[EventLog, CommandContext], Written[str]]
) -> PropStatusPublic:
    written = run(admin.event_log, admin.context)
    return PropStatusPublic(account_id=account_id, status=written.result, position=written.position)


@router.post("/{account_id}/freeze", operation_id="admin_prop_freeze")
def freeze(account_id: UUID, body: PropControlCreate, admin: AdminCommand) -> PropStatusPublic:
    """Stop trading: every action is rejected (`account-frozen`) until unfrozen."""
    return _control(
        account_id, admin, partial(prop_trading.freeze, account_id=account_id, reason=body.reason)
    )


@router.post("/{account_id}/unfreeze", operation_id="admin_prop_unfreeze")
def unfreeze(account_id: UUID, body: PropControlCreate, admin: AdminCommand) -> PropStatusPublic:
    return _control(
        account_id, admin, partial(prop_trading.unfreeze, account_id=account_id, reason=body.reason)
    )


@router.post("/{account_id}/flatten", operation_id="admin_prop_flatten")
def flatten(
    account_id: UUID, body: PropControlCreate, admin: AdminCommand, prices: PricesDep
) -> PropStatusPublic:
    """Close every position at the latest mark, with slippage and fee; no gates apply."""
    return _control(
        account_id,
        admin,
        partial(prop_trading.flatten, prices=prices, account_id=account_id, reason=body.reason),
    )


@router.post("/{account_id}/close", operation_id="admin_prop_close")
def close(
    account_id: UUID, body: PropControlCreate, admin: AdminCommand, prices: PricesDep
) -> PropStatusPublic:
    """Flatten whatever is open, then close the account for good."""
    return _control(
        account_id,
        admin,
        partial(prop_trading.close, prices=prices, account_id=account_id, reason=body.reason),
    )
