"""Races (public reads) and tickets (signed-in users; owner routes for one's own tickets)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from aggregates.errors import NotFoundError
from aggregates.races import RaceStatus, implied_prices
from api.auth import CurrentUser, owned_or_404
from api.commands import UserCommand, items_of
from api.deps import ReadsDep, ServicesDep, found, wait_for
from api.pagination import PageDep
from api.routing import APIRouter
from api.schemas import RequiredIdempotencyKey, usdc_text
from projections import races
from projections.paging import Page
from services import races as racing
from services.economy import usdc_minor_units

router = APIRouter(tags=["races"])

STATUS_PATTERN = "^(" + "|".join(s.value for s in RaceStatus) + ")$"

Stake = Annotated[
    Decimal,
    Field(gt=0, le=Decimal("1e9"), decimal_places=2, description="USDC, in whole cents"),
]


class RaceSummaryPublic(BaseModel):
    race_id: UUID
    name: str
    status: str
    sales_open_at: datetime
    starts_at: datetime
    ends_at: datetime


class RacesPublic(BaseModel):
    items: list[RaceSummaryPublic]
    next_cursor: str | None


class TermsPublic(BaseModel):
    takeout_bps: int
    break_unit_minor: int
    min_price_minor: int
    min_stake_minor: int
    max_stake_minor: int
    objection_seconds: int
    starting_equity: str
    prop_rule_set: str


class EntrantPublic(BaseModel):
    clone_id: UUID
    number: int
    display_name: str
    prop_account_id: UUID | None
    pool_minor: str
    tickets: int
    implied_price_minor: str | None = Field(
        description="micro-USDC 1 USDC on this entrant returns if it won alone now"
    )
    place: int | None
    final_equity_minor: str | None
    breach: str | None
    scratched: str | None = Field(description="why the entrant did not start")


class SettlementPublic(BaseModel):
    gross_minor: str
    takeout_minor: str
    net_minor: str
    subsidy_minor: str
    breakage_minor: str
    paid_minor: str
    refunded_minor: str
    prices: list[dict[str, str]]
    payout_table_sha256: str
    payout_id: UUID = Field(description="the payout awaiting (or given) authorization")


class RacePublic(RaceSummaryPublic):
    terms: TermsPublic
    pool_minor: str = Field(description="counted stakes so far (the pool)")
    entrants: list[EntrantPublic]
    finished_at: datetime | None
    status_reason: str | None
    settlement: SettlementPublic | None


class TicketCreate(BaseModel):
    clone_id: UUID
    amount: Stake


class TicketPublic(BaseModel):
    ticket_id: UUID
    race_id: UUID
    clone_id: UUID
    amount_minor: str
    amount: str
    counted: bool = Field(description="in the pool (bought while sales were open)")
    bought_at: datetime
    outcome: str = Field(description="pending, won, lost or refunded")
    returned_minor: str


class TicketWrittenPublic(BaseModel):
    ticket_id: UUID
    race_id: UUID
    clone_id: UUID
    amount_minor: str
    position: int


class TicketsPublic(BaseModel):
    items: list[TicketPublic]
    next_cursor: str | None


def race_detail(race: races.RaceRow, entrants: list[races.EntrantRow]) -> RacePublic:
    rules = race.terms
    pools = {e.clone_id: e.pool_minor for e in entrants}
    prices = implied_prices(rules.pool, pools) if race.status == RaceStatus.OPEN else {}
    standings = {UUID(str(s["clone_id"])): s for s in race.standings or []}
    scratched = {UUID(k): v for k, v in (race.scratched or {}).items()}
    summary = race.summary
    return RacePublic(
        **RaceSummaryPublic.model_validate(race, from_attributes=True).model_dump(),
        terms=TermsPublic(
            takeout_bps=rules.takeout_bps,
            break_unit_minor=rules.break_unit_minor,
            min_price_minor=rules.min_price_minor,
            min_stake_minor=rules.min_stake_minor,
            max_stake_minor=rules.max_stake_minor,
            objection_seconds=rules.objection_seconds,
            starting_equity=str(rules.starting_equity),
            prop_rule_set=f"{rules.prop_rule_set}@{rules.prop_rule_set_version}",
        ),
        pool_minor=str(sum(pools.values())),
        entrants=[
            EntrantPublic(
                clone_id=e.clone_id,
                number=e.number,
                display_name=e.display_name,
                prop_account_id=e.prop_account_id,
                pool_minor=str(e.pool_minor),
                tickets=e.tickets,
                implied_price_minor=str(prices[e.clone_id]) if e.clone_id in prices else None,
                place=standings[e.clone_id]["place"] if e.clone_id in standings else None,
                final_equity_minor=str(standings[e.clone_id]["equity_minor"])
                if e.clone_id in standings
                else None,
                breach=standings[e.clone_id]["breach"] if e.clone_id in standings else None,
                scratched=scratched.get(e.clone_id),
            )
            for e in entrants
        ],
        finished_at=race.finished_at,
        status_reason=race.status_reason,
        settlement=None if summary is None else settlement_public(summary),
    )


def settlement_public(summary: dict[str, Any]) -> SettlementPublic:
    return SettlementPublic(
        **{
            key: str(summary[key])
            for key in (
                "gross_minor",
                "takeout_minor",
                "net_minor",
                "subsidy_minor",
                "breakage_minor",
                "paid_minor",
                "refunded_minor",
            )
        },
        prices=[{key: str(value) for key, value in price.items()} for price in summary["prices"]],
        payout_table_sha256=summary["payout_table_sha256"],
        payout_id=summary["payout_id"],
    )


def ticket_public(row: races.UserTicketRow) -> TicketPublic:
    outcome = races.outcome_of(row)
    return TicketPublic(
        ticket_id=row.ticket_id,
        race_id=row.race_id,
        clone_id=row.clone_id,
        amount_minor=str(row.amount_minor),
        amount=usdc_text(row.amount_minor),
        counted=row.counted,
        bought_at=row.bought_at,
        outcome=outcome.status,
        returned_minor=str(outcome.returned_minor),
    )


def page_of_races(rows: list[races.RaceRow], page: Page) -> RacesPublic:
    items, next_cursor = page.cut(rows, "position")
    return RacesPublic(items=items_of(RaceSummaryPublic, items), next_cursor=next_cursor)


@router.get("/v1/races", operation_id="races_list", dependencies=[Depends(wait_for("races"))])
async def list_races(
    reads: ReadsDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
) -> RacesPublic:
    """Anyone: races in the order they were scheduled, narrowed by status."""
    return page_of_races(await races.races(reads, status, page), page)


@router.get(
    "/v1/races/{race_id}", operation_id="race_get", dependencies=[Depends(wait_for("races"))]
)
async def get_race(race_id: UUID, services: ServicesDep) -> RacePublic:
    """Anyone: a race's terms, entrants with their live pools and implied prices while
    sales are open, the result and the settlement."""
    race = await found(services, "races", lambda: races.race_by_id(services.reads, race_id))
    if race is None:
        raise NotFoundError(f"race {race_id} not found")
    return race_detail(race, await races.entrants_of(services.reads, race_id))


@router.post("/v1/races/{race_id}/tickets", status_code=201, operation_id="ticket_buy")
def buy_ticket(
    race_id: UUID,
    body: TicketCreate,
    user: UserCommand,
    key: RequiredIdempotencyKey,
) -> TicketWrittenPublic:
    """Stake on an entrant while sales are open; the stake leaves your available balance
    for the race's escrow. Retrying with the same key returns the first ticket."""
    written = racing.buy_ticket(
        user.event_log,
        user.context,
        race_id=race_id,
        user_id=user.user_id,
        clone_id=body.clone_id,
        amount_minor=usdc_minor_units(body.amount),
        key=key,
    )
    ticket = written.result
    return TicketWrittenPublic(
        ticket_id=ticket.ticket_id,
        race_id=ticket.race_id,
        clone_id=ticket.clone_id,
        amount_minor=str(ticket.amount_minor),
        position=written.position,
    )


@router.get("/v1/tickets", operation_id="tickets_list", dependencies=[Depends(wait_for("races"))])
async def list_tickets(user: CurrentUser, reads: ReadsDep, page: PageDep) -> TicketsPublic:
    """Your tickets, oldest first, each with what it came to."""
    rows = await races.tickets_of_user(reads, user.user_id, page)
    items, next_cursor = page.cut(rows, "position")
    return TicketsPublic(items=[ticket_public(row) for row in items], next_cursor=next_cursor)


@router.get(
    "/v1/tickets/{ticket_id}",
    operation_id="ticket_get",
    dependencies=[Depends(wait_for("races"))],
)
async def get_ticket(ticket_id: UUID, user: CurrentUser, services: ServicesDep) -> TicketPublic:
    row = await found(services, "races", lambda: races.ticket_by_id(services.reads, ticket_id))
    owned_or_404(row.user_id if row else None, user, f"ticket {ticket_id}")
    assert row is not None
    return ticket_public(row)
