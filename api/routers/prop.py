"""Prop accounts: the AI engine submits actions (service token, `prop:write`); the account's
owner, admins and services with `prop:read` read its summary, positions, fills, equity
curve and audit log. Anyone else is answered as if the account did not exist."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal, TypeVar
from uuid import UUID

from fastapi import Depends
from pydantic import BaseModel, Field, PlainSerializer

from aggregates.decisions import decisions_id
from aggregates.errors import NotFoundError
from aggregates.ports import PriceSource
from aggregates.prop_accounts import (
    MAX_AMOUNT,
    MAX_LEVERAGE,
    ActionRequest,
    Position,
)
from api.auth import Principal, PrincipalDep, owned_or_404, require_service
from api.commands import items_of
from api.deps import (
    ClockDep,
    EventLogDep,
    ServicesDep,
    SettingsDep,
    command_context,
    found,
    wait_for,
)
from api.pagination import PageDep
from api.routers.audit import AuditEntriesPublic, AuditEntryPublic
from api.routing import APIRouter
from ingest.prices import PostgresPriceSource
from projections import audit_log, prop_accounts, prop_equity, prop_fills
from projections.paging import Page
from projections.reads import ProjectionReads
from services import prop_trading
from services.bootstrap import Services

router = APIRouter(prefix="/v1/prop/accounts", tags=["prop"])

R = TypeVar("R")

READ_SCOPE = "prop:read"
WRITE_SCOPE = "prop:write"


def plain(value: Decimal) -> str:
    """Decimals leave as plain strings: "0", "100", "67012.5", never "0E-8" or "1E+2"."""
    return format(value.normalize() + 0, "f")


Amount = Annotated[Decimal, PlainSerializer(plain, return_type=str)]
OrderAmount = Annotated[
    Decimal, Field(gt=0, le=MAX_AMOUNT, max_digits=21, decimal_places=8, examples=["0.015"])
]


def get_prices(services: ServicesDep) -> PriceSource:
    return PostgresPriceSource(services.projections.datastore)


PricesDep = Annotated[PriceSource, Depends(get_prices)]


class ActionCreate(BaseModel):
    client_action_id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    asset: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9@:._/-]+$")
    side: Literal["buy", "sell"]
    size: OrderAmount | None = Field(default=None, description="in units of the asset")
    notional: OrderAmount | None = Field(default=None, description="in USD at the mark")
    reduce_only: bool = False
    leverage: Annotated[Decimal, Field(ge=1, le=MAX_LEVERAGE, max_digits=12, decimal_places=8)] = (
        Decimal("1")
    )


class FillPublic(BaseModel):
    number: int
    asset: str
    side: str
    size: Amount
    price: Amount
    mark_price: Amount
    mark_source: str
    mark_observed_at: datetime
    slippage_bps: Amount
    slippage: Amount
    fee_bps: Amount
    fee: Amount
    realized_pnl: Amount
    position_size: Amount
    filled_at: datetime


class PositionPublic(BaseModel):
    asset: str
    size: Amount
    average_entry_price: Amount | None
    leverage: Amount
    mark_price: Amount | None
    notional: Amount | None
    unrealized_pnl: Amount | None
    margin: Amount | None
    mark_source: str | None
    mark_observed_at: datetime | None


class ActionPublic(BaseModel):
    status: Literal["filled", "rejected"]
    reason: str | None = Field(description="the gate's reason code when rejected")
    detail: str | None
    fill: FillPublic | None
    position: PositionPublic = Field(description="the account's position in the asset after")
    log_position: int = Field(description="the log position to read this write at")


class RulesPublic(BaseModel):
    name: str
    version: int
    allowed_assets: list[str]
    max_leverage: Amount
    max_order_notional: Amount
    max_position_notional: Amount
    max_gross_exposure: Amount
    min_action_interval: int
    daily_loss_limit: Amount
    max_drawdown: Amount
    fee_bps: Amount
    slippage_bps: Amount
    breach_action: str


class AccountPublic(BaseModel):
    account_id: UUID
    owner_id: UUID
    clone_id: UUID
    clone_version_hash: str
    purpose: str
    rules: RulesPublic
    status: str
    status_reason: str | None
    breach: str | None
    starting_equity: Amount
    balance: Amount
    realized_pnl: Amount
    fees_paid: Amount
    unrealized_pnl: Amount
    equity: Amount
    margin_used: Amount
    gross_exposure: Amount
    peak_equity: Amount
    day: str | None
    day_start_equity: Amount
    day_start_balance: Amount
    fills: int
    rejections: int
    opened_at: datetime
    last_marked_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime


class PositionsPublic(BaseModel):
    items: list[PositionPublic]


class FillsPublic(BaseModel):
    items: list[FillPublic]
    next_cursor: str | None


class EquitySnapshotPublic(BaseModel):
    taken_at: datetime
    equity: Amount
    balance: Amount
    unrealized_pnl: Amount
    realized_pnl: Amount
    fees_paid: Amount
    margin_used: Amount
    gross_exposure: Amount


class EquitySnapshotsPublic(BaseModel):
    items: list[EquitySnapshotPublic]
    next_cursor: str | None


async def readable_account(
    services: Services, account_id: UUID, reader: Principal
) -> prop_accounts.PropAccountRow:
    """The account's summary row, if this reader may see it: its owner, an admin, or a
    service with `prop:read`; what was just opened is found (see `found`). Anyone else
    gets the answer a missing account gets."""
    row = await found(
        services,
        "prop_accounts",
        lambda: prop_accounts.account_by_id(services.reads, account_id),
    )
    what = f"prop account {account_id}"
    if reader.is_admin or READ_SCOPE in reader.scopes:
        if row is None:
            raise NotFoundError(f"{what} not found")
        return row
    owned_or_404(row.owner_id if row else None, reader, what)
    assert row is not None  # owned_or_404 refused a missing row
    return row


async def account_page(
    services: Services,
    account_id: UUID,
    reader: Principal,
    page: Page,
    read: Callable[[ProjectionReads, UUID, Page], Awaitable[Sequence[R]]],
    key: str,
) -> tuple[list[R], str | None]:
    """A page of one of the account's lists (`read`, in `key` order), for a reader who may
    see the account; the next cursor continues after the page's last `key`."""
    await readable_account(services, account_id, reader)
    return page.cut(await read(services.reads, account_id, page), key)


def position_public(row: prop_accounts.PositionRow) -> PositionPublic:
    position = Position(row.size, row.cost, row.leverage)
    price = row.mark_price
    return PositionPublic(
        asset=row.asset,
        size=position.size,
        average_entry_price=position.average_entry,
        leverage=position.leverage,
        mark_price=price,
        notional=position.notional(price),
        unrealized_pnl=position.unrealized(price),
        margin=position.margin(price),
        mark_source=row.mark_source,
        mark_observed_at=row.mark_observed_at,
    )


@router.post("/{account_id}/actions", operation_id="prop_submit_action")
def submit_action(
    account_id: UUID,
    body: ActionCreate,
    engine: Annotated[Principal, Depends(require_service(WRITE_SCOPE))],
    event_log: EventLogDep,
    prices: PricesDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> ActionPublic:
    """Gate and paper-fill one action. A rejection is recorded too, with its reason code;
    the same `client_action_id` with the same body returns the first result."""
    written = prop_trading.submit_action(
        event_log,
        command_context(engine.actor, clock),
        prices,
        account_id,
        ActionRequest(**body.model_dump()),
        max_mark_age=timedelta(seconds=settings.prop_max_mark_age),
    )
    result = written.result
    return ActionPublic(
        status=result.status,  # type: ignore[arg-type]
        reason=result.reason,
        detail=result.detail,
        fill=None if result.fill is None else FillPublic.model_validate(result.fill),
        position=PositionPublic.model_validate(result.position),
        log_position=written.position,
    )


@router.get(
    "/{account_id}",
    operation_id="prop_account_get",
    dependencies=[Depends(wait_for("prop_accounts"))],
)
async def get_account(
    account_id: UUID, reader: PrincipalDep, services: ServicesDep
) -> AccountPublic:
    row = await readable_account(services, account_id, reader)
    return AccountPublic.model_validate({**asdict(row), "day": row.day and row.day.isoformat()})


@router.get(
    "/{account_id}/positions",
    operation_id="prop_account_positions",
    dependencies=[Depends(wait_for("prop_accounts"))],
)
async def get_positions(
    account_id: UUID, reader: PrincipalDep, services: ServicesDep
) -> PositionsPublic:
    await readable_account(services, account_id, reader)
    rows = await prop_accounts.positions_of(services.reads, account_id)
    return PositionsPublic(items=[position_public(row) for row in rows])


@router.get(
    "/{account_id}/fills",
    operation_id="prop_account_fills",
    dependencies=[Depends(wait_for("prop_accounts")), Depends(wait_for("prop_fills"))],
)
async def get_fills(
    account_id: UUID, reader: PrincipalDep, services: ServicesDep, page: PageDep
) -> FillsPublic:
    rows, next_cursor = await account_page(
        services, account_id, reader, page, prop_fills.fills_of, "number"
    )
    return FillsPublic(
        items=items_of(FillPublic, rows),
        next_cursor=next_cursor,
    )


@router.get(
    "/{account_id}/snapshots",
    operation_id="prop_account_snapshots",
    dependencies=[Depends(wait_for("prop_accounts")), Depends(wait_for("prop_equity_curve"))],
)
async def get_snapshots(
    account_id: UUID, reader: PrincipalDep, services: ServicesDep, page: PageDep
) -> EquitySnapshotsPublic:
    """The equity curve, oldest first: one point where the account opened and one after
    each event that changed its valuation (a fill, a revaluation at moved marks, a
    flatten). An account whose equity does not move gets no new points."""
    rows, next_cursor = await account_page(
        services, account_id, reader, page, prop_equity.equity_curve_of, "position"
    )
    return EquitySnapshotsPublic(
        items=items_of(EquitySnapshotPublic, rows),
        next_cursor=next_cursor,
    )


@router.get(
    "/{account_id}/audit",
    operation_id="prop_account_audit",
    dependencies=[Depends(wait_for("prop_accounts")), Depends(wait_for("audit_log"))],
)
async def get_audit(
    account_id: UUID, reader: PrincipalDep, services: ServicesDep, page: PageDep
) -> AuditEntriesPublic:
    """The account's own events from the audit log, with the cadence driver's decisions on
    it (`TradingDecisions.Decided`): who did what, and when."""

    async def account_and_decisions(
        reads: ProjectionReads, account: UUID, page: Page
    ) -> list[audit_log.AuditEntryRow]:
        return await audit_log.events_of_all(reads, [account, decisions_id(account)], page)

    rows, next_cursor = await account_page(
        services, account_id, reader, page, account_and_decisions, "position"
    )
    return AuditEntriesPublic(
        items=items_of(AuditEntryPublic, rows),
        next_cursor=next_cursor,
    )
