"""Race commands: schedule from arena members, the lifecycle (open, close, start, finish,
amend, official, settle, void), tickets, and the calendar job that moves races on time.

Each step is one unit of work. Starting opens a race prop account per entrant (or
scratches it) with the race's end time pinned, so the prop engine refuses fills from
then on; finishing closes every account at the marks recorded at the end time and ranks
the entrants. Settlement is the pure `parimutuel.settle` over the race's tickets: which
ones count is decided by log position (after `SalesOpened`, before `SalesClosed`), and
every micro-USDC leaves the race escrow in the same transaction that records it: refunds
and payouts to users, takeout and breakage to the treasury, a minus pool's subsidy in.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from aggregates.arena import ArenaMembership, MembershipStatus, membership_id_for
from aggregates.base import CommandContext, fingerprint
from aggregates.clones import Clone
from aggregates.errors import ConflictError, DomainError
from aggregates.ledger import user_account
from aggregates.parimutuel import Payout, RaceOutcome, Refund, Settlement, Stake, settle
from aggregates.payouts import RacePayout, payout_id_for
from aggregates.ports import PriceSource
from aggregates.prop_accounts import CLOSED, PropAccount
from aggregates.prop_rules import rule_set
from aggregates.races import (
    TERMINAL,
    Race,
    RaceNotFoundError,
    RaceRules,
    RaceStatus,
    Ticket,
    equity_minor,
    race_escrow,
    winners_of,
)
from projections.races import tickets_of_race
from projections.state import Projections
from runtime.clock import Clock
from runtime.leases import lease
from services.eventlog import EventLog, UnitOfWork, Written
from services.jobs import job_context
from services.ledger import post_transfer, reserve_transfer, void_pending
from services.prop_trading import open_account_in

if TYPE_CHECKING:
    from runtime.settings import Settings

log = logging.getLogger(__name__)

CALENDAR_JOB = "race_calendar"
CALENDAR_LEASE = f"job:{CALENDAR_JOB}"

TAKEOUT = "treasury:takeout"
BREAKAGE = "treasury:breakage"
MINUS_POOL = "treasury:minus_pool"


class NotEnoughEntrantsError(ConflictError):
    code = "not-enough-entrants"


class TicketsNotProjectedError(ConflictError):
    """Settling reads the race's tickets from their read model, which has not yet reached
    the race's last event: try again in a moment."""

    code = "tickets-not-projected"


@dataclass(frozen=True)
class RaceState:
    race_id: UUID
    status: str


@dataclass(frozen=True)
class TicketState:
    ticket_id: UUID
    race_id: UUID
    clone_id: UUID
    amount_minor: int


class RecordedTicket(Protocol):
    """A ticket as its read model has it, with the log position it was recorded at."""

    @property
    def ticket_id(self) -> UUID: ...
    @property
    def user_id(self) -> UUID: ...
    @property
    def clone_id(self) -> UUID: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def position(self) -> int: ...


@dataclass(frozen=True)
class RaceTickets:
    """Every ticket of a race, and how far their read model had read the log (at least)."""

    tickets: Sequence[RecordedTicket]
    projected_to: int


def race_tickets(projections: Projections, race_id: UUID) -> RaceTickets:
    """A race's tickets from their read model, and (read first, so a lower bound) how far
    that read model had read the log."""
    projected_to = projections.position("races")
    return RaceTickets(tickets_of_race(projections.datastore, race_id), projected_to)


def race_rules(
    settings: Settings,
    *,
    sales_open_at: datetime,
    starts_at: datetime | None = None,
    duration_seconds: int | None = None,
    takeout_bps: int | None = None,
) -> RaceRules:
    """The terms a race pins: times from the request (or the settings' defaults), the
    pool and stake terms from settings, the prop rule set in force."""
    starts_at = starts_at or sales_open_at + timedelta(seconds=settings.race_sales_seconds)
    duration = timedelta(seconds=duration_seconds or settings.race_duration_seconds)
    prop = rule_set("race")
    return RaceRules(
        sales_open_at=sales_open_at,
        starts_at=starts_at,
        ends_at=starts_at + duration,
        objection_seconds=settings.race_objection_seconds,
        starting_equity=settings.race_starting_equity,
        prop_rule_set=prop.name,
        prop_rule_set_version=prop.version,
        takeout_bps=settings.race_takeout_bps if takeout_bps is None else takeout_bps,
        break_unit_minor=settings.race_break_unit_minor,
        min_price_minor=settings.race_min_price_minor,
        min_stake_minor=settings.race_min_stake_minor,
        max_stake_minor=settings.race_max_stake_minor,
    )


def _entrant(unit: UnitOfWork, clone_id: UUID) -> dict[str, Any] | None:
    """An arena member that may race: admitted (not suspended), its clone neither banned
    nor archived, with a published version to run."""
    membership = unit.find(ArenaMembership, membership_id_for(clone_id))
    if membership is None or membership.status != MembershipStatus.ADMITTED:
        return None
    clone = unit.get(Clone, clone_id)
    version = clone.latest_version
    if clone.banned or clone.archived or version is None:
        return None
    return {"clone_id": clone_id, "owner_id": clone.owner_id, "version_hash": version}


def schedule_race(
    event_log: EventLog,
    context: CommandContext,
    *,
    key: str,
    name: str,
    rules: RaceRules,
    candidates: Sequence[UUID],
    entrants: int,
    reason: str,
) -> Written[RaceState]:
    """Schedule a race of the first `entrants` candidates that may race (checked on the
    store, in order). Once per key."""
    request = fingerprint({"name": name, "entrants": entrants, **rules.to_state()})

    def decide(unit: UnitOfWork) -> RaceState:
        def create(race_id: UUID) -> Race:
            picked: list[dict[str, Any]] = []
            for clone_id in candidates:
                if len(picked) == entrants:
                    break
                if (entrant := _entrant(unit, clone_id)) is not None:
                    picked.append(entrant)
            if len(picked) < entrants:
                raise NotEnoughEntrantsError(
                    f"{len(picked)} arena members may race; the race needs {entrants}"
                )
            return Race.schedule(
                race_id,
                name=name,
                rules=rules,
                entrants=picked,
                request_fingerprint=request,
                reason=reason,
            )

        race = unit.create_once(Race, f"schedule:{key}", request, create)
        return RaceState(race.id, race.status)

    return event_log.execute(context, decide)


def _on_race(
    event_log: EventLog,
    context: CommandContext,
    race_id: UUID,
    change: Callable[[UnitOfWork, Race], None],
) -> Written[RaceState]:
    def decide(unit: UnitOfWork) -> RaceState:
        race = unit.get(Race, race_id)
        change(unit, race)
        return RaceState(race.id, race.status)

    return event_log.execute(context, decide)


def open_sales(
    event_log: EventLog, context: CommandContext, race_id: UUID, reason: str
) -> Written[RaceState]:
    return _on_race(event_log, context, race_id, lambda _, race: race.open_sales(reason))


def close_sales(
    event_log: EventLog, context: CommandContext, race_id: UUID, reason: str
) -> Written[RaceState]:
    """The `SalesClosed` event's log position is the pool's end."""
    return _on_race(event_log, context, race_id, lambda _, race: race.close_sales(reason))


def start_race(
    event_log: EventLog, context: CommandContext, race_id: UUID, reason: str
) -> Written[RaceState]:
    """Open each entrant's race account (equal starting equity, the pinned prop rules, no
    fill from the end time on), or scratch an entrant that may no longer race."""

    def start(unit: UnitOfWork, race: Race) -> None:
        rules = race.rule_set
        accounts: dict[UUID, UUID] = {}
        scratched: dict[UUID, str] = {}
        for entrant in race.entrants:
            clone_id = entrant["clone_id"]
            if _entrant(unit, clone_id) is None:
                scratched[clone_id] = "no longer an arena member that may race"
                continue
            account = open_account_in(
                unit,
                key=f"race:{race.id}:{clone_id}",
                owner_id=entrant["owner_id"],
                clone_id=clone_id,
                clone_version_hash=entrant["version_hash"],
                purpose="race",
                starting_equity=rules.starting_equity,
                rule_set_name=rules.prop_rule_set,
                rule_set_version=rules.prop_rule_set_version,
                trading_ends_at=rules.ends_at,
            )
            accounts[clone_id] = account.id
        race.start(accounts, scratched, reason)

    return _on_race(event_log, context, race_id, start)


def _close_accounts(
    unit: UnitOfWork, race: Race, prices: PriceSource, now: datetime, reason: str
) -> dict[UUID, tuple[int, str | None]]:
    """Close every race account at the marks recorded at the end time: each entrant's
    final equity (minor units) and breach."""
    ends_at = race.rule_set.ends_at
    finals: dict[UUID, tuple[int, str | None]] = {}
    for clone_id, account_id in race.accounts.items():
        account = unit.get(PropAccount, account_id)
        if account.status != CLOSED:
            marks = {asset: prices.mark_at(asset, ends_at) for asset in account.positions}
            account.close(reason, marks, now)
        finals[UUID(clone_id)] = (equity_minor(account.equity), account.breach)
    return finals


def finish_race(
    event_log: EventLog,
    context: CommandContext,
    prices: PriceSource,
    race_id: UUID,
    reason: str,
) -> Written[RaceState]:
    """Rank the started entrants by final equity at the end time (not before it)."""
    now = context.occurred_at

    def finish(unit: UnitOfWork, race: Race) -> None:
        if race.status == RaceStatus.RUNNING and now < race.rule_set.ends_at:
            raise RaceNotOverError(f"the race runs until {race.rule_set.ends_at}")
        finals = _close_accounts(unit, race, prices, now, "race finished")
        race.finish(finals, now, reason)

    return _on_race(event_log, context, race_id, finish)


class RaceNotOverError(ConflictError):
    code = "race-not-over"


def amend_result(
    event_log: EventLog,
    context: CommandContext,
    race_id: UUID,
    disqualified: Sequence[UUID],
    reason: str,
) -> Written[RaceState]:
    return _on_race(event_log, context, race_id, lambda _, race: race.amend(disqualified, reason))


def make_official(
    event_log: EventLog, context: CommandContext, race_id: UUID, reason: str
) -> Written[RaceState]:
    """Only once the objection window has passed: amendments stop here."""
    now = context.occurred_at

    def official(_: UnitOfWork, race: Race) -> None:
        if race.status == RaceStatus.FINISHED and not race.official_due(now):
            raise ObjectionWindowOpenError("the objection window has not passed yet")
        race.make_official(reason)

    return _on_race(event_log, context, race_id, official)


class ObjectionWindowOpenError(ConflictError):
    code = "objection-window-open"


def _stakes(race: Race, tickets: RaceTickets, sales: tuple[int, int] | None) -> list[Stake]:
    """The race's tickets; one counts if it was recorded inside the sales window's
    positions (after `SalesOpened`, before `SalesClosed`)."""
    opened, closed = sales if sales is not None else (0, 0)
    return [
        Stake(
            ticket_id=t.ticket_id,
            user_id=t.user_id,
            entrant_id=t.clone_id,
            amount_minor=t.amount_minor,
            counted=opened < t.position < closed,
        )
        for t in tickets.tickets
    ]


@dataclass(frozen=True)
class PayoutPolicy:
    """The settings a payout request pins: two approvers from this total, and how long an
    approval stands."""

    dual_approval_minor: int
    approval_ttl: timedelta


def payout_policy(settings: Settings) -> PayoutPolicy:
    return PayoutPolicy(
        settings.payout_dual_approval_minor, timedelta(seconds=settings.payout_approval_ttl)
    )


def _per_user(rows: Sequence[Refund] | Sequence[Payout]) -> dict[UUID, int]:
    owed: dict[UUID, int] = defaultdict(int)
    for row in rows:
        owed[row.user_id] += row.amount_minor
    return owed


def _refund(unit: UnitOfWork, race: Race, kind: str, owed: dict[UUID, int]) -> None:
    escrow = race_escrow(race.id)
    for user_id, amount in sorted(owed.items(), key=lambda item: str(item[0])):
        if amount > 0:
            post_transfer(
                unit, f"race:{race.id}:{kind}:{user_id}", escrow, user_account(user_id), amount
            )


def _hold_payout(
    unit: UnitOfWork, race: Race, settlement: Settlement, maker: str, policy: PayoutPolicy
) -> RacePayout:
    """Refunds post at once; the payouts, takeout and breakage (and a minus pool's
    subsidy in) are held in pending transfers until the payout is authorized."""
    _refund(unit, race, "refund", _per_user(settlement.refunds))
    number = race.settlements + 1
    escrow, cause = race_escrow(race.id), f"race:{race.id}:s{number}"
    held: list[UUID] = []
    if settlement.subsidy_minor:
        held.append(
            reserve_transfer(unit, f"{cause}:subsidy", MINUS_POOL, escrow, settlement.subsidy_minor)
        )
    for user_id, amount in sorted(_per_user(settlement.payouts).items(), key=lambda i: str(i[0])):
        held.append(
            reserve_transfer(
                unit, f"{cause}:payout:{user_id}", escrow, user_account(user_id), amount
            )
        )
    for account, amount in (
        (TAKEOUT, settlement.takeout_minor),
        (BREAKAGE, settlement.breakage_minor),
    ):
        if amount:
            held.append(reserve_transfer(unit, f"{cause}:{account}", escrow, account, amount))
    return unit.add(
        RacePayout.request(
            race_id=race.id,
            settlement=number,
            maker=maker,
            table_digest=settlement.payout_table_digest(),
            total_minor=settlement.paid_minor,
            transfers=held,
            dual_approval_minor=policy.dual_approval_minor,
            approval_ttl=policy.approval_ttl,
        )
    )


def summary_of(settlement: Settlement) -> dict[str, Any]:
    """What the `Settled` event keeps: the totals, each winner's price, and the digest of
    the payout table (the table itself is recomputed from the tickets by anyone)."""
    return {
        "staked_minor": settlement.staked_minor,
        "refunded_minor": settlement.refunded_minor,
        "gross_minor": settlement.gross_minor,
        "takeout_minor": settlement.takeout_minor,
        "net_minor": settlement.net_minor,
        "subsidy_minor": settlement.subsidy_minor,
        "breakage_minor": settlement.breakage_minor,
        "paid_minor": settlement.paid_minor,
        "prices": [
            {"clone_id": p.entrant_id, "pool_minor": p.pool_minor, "price_minor": p.price_minor}
            for p in settlement.prices
        ],
        "tickets": len(settlement.payouts) + len(settlement.refunds),
        "payout_table_sha256": settlement.payout_table_digest(),
    }


def _settlement_of(race: Race, stakes: list[Stake]) -> Settlement:
    outcome = RaceOutcome(winners=winners_of(race.result), scratched=race.scratched_ids)
    return settle(race.rule_set.pool, stakes, outcome)


def _check_projected(event_log: EventLog, race: Race, tickets: RaceTickets) -> None:
    """The tickets' read model has read past the race's result (or, for a race voided
    before finishing, its latest event): no ticket of the race is missing from it."""
    if race.finished_version is not None:
        (through,) = event_log.positions_at(race.id, [race.finished_version])
    else:
        through = event_log.position_of([race.id])
    if tickets.projected_to < through:
        raise TicketsNotProjectedError("the race's tickets are still being projected")


def settle_race(
    event_log: EventLog,
    context: CommandContext,
    race_id: UUID,
    tickets: Callable[[], RaceTickets],
    policy: PayoutPolicy,
    reason: str,
) -> Written[RaceState]:
    """Settle an official race: refund scratched and uncounted tickets at once, and hold
    the winners' payouts, the takeout and the breakage in pending transfers under a payout
    awaiting authorization (the settler is its maker). Settling twice is a 409; the
    conservation check runs before anything is written."""

    def settle_it(unit: UnitOfWork, race: Race) -> None:
        race.check_settleable()
        recorded = tickets()
        _check_projected(event_log, race, recorded)
        settlement = _settlement_of(race, _stakes(race, recorded, sales_window(event_log, race)))
        payout = _hold_payout(unit, race, settlement, context.actor, policy)
        race.settle({**summary_of(settlement), "payout_id": payout.id}, reason)

    return _on_race(event_log, context, race_id, settle_it)


def void_race(
    event_log: EventLog,
    context: CommandContext,
    prices: PriceSource,
    race_id: UUID,
    tickets: Callable[[], RaceTickets],
    reason: str,
) -> Written[RaceState]:
    """No race: every ticket back, takeout included (any state before paid). Running
    accounts are closed; a payout awaiting authorization is rejected and its pending
    transfers voided; what an earlier settlement refunded is not refunded twice."""
    now = context.occurred_at

    def void(unit: UnitOfWork, race: Race) -> None:
        recorded = tickets()
        _check_projected(event_log, race, recorded)
        stakes = _stakes(race, recorded, sales_window(event_log, race))
        if race.status == RaceStatus.SETTLED:
            reject_payout_in(unit, race, f"race void: {reason}")
        refunded = _per_user(_settlement_of(race, stakes).refunds) if race.settlements else {}
        race.void(reason)
        for account_id in race.accounts.values():
            account = unit.get(PropAccount, account_id)
            if account.status != CLOSED:
                marks = {a: prices.mark_at(a, now) for a in account.positions}
                account.close(f"race void: {reason}", marks, now)
        voided = settle(race.rule_set.pool, stakes, RaceOutcome(void=True))
        owed = _per_user(voided.refunds)
        _refund(unit, race, "void", {u: owed[u] - refunded.get(u, 0) for u in owed})

    return _on_race(event_log, context, race_id, void)


def settlement_of(event_log: EventLog, race_id: UUID, tickets: RaceTickets) -> Settlement:
    """The race's settlement recomputed from its tickets and result: the payout table an
    approver reviews, whose digest the payout was requested with."""
    race = event_log.read(Race, race_id)
    if race is None:
        raise RaceNotFoundError(f"race {race_id} not found")
    return _settlement_of(race, _stakes(race, tickets, sales_window(event_log, race)))


def reject_payout_in(unit: UnitOfWork, race: Race, reason: str) -> RacePayout:
    """Reject the race's payout awaiting authorization and void its pending transfers."""
    payout = unit.get(RacePayout, payout_id_for(race.id, race.settlements))
    payout.reject(reason)
    for transfer in payout.transfers:
        void_pending(unit, transfer, reason)
    return payout


def sales_window(event_log: EventLog, race: Race) -> tuple[int, int] | None:
    """The log positions of the race's `SalesOpened` and `SalesClosed` (None: never open)."""
    if len(race.sales_versions) != 2:
        return None
    opened, closed = event_log.positions_at(race.id, race.sales_versions)
    return opened, closed


def buy_ticket(
    event_log: EventLog,
    context: CommandContext,
    *,
    race_id: UUID,
    user_id: UUID,
    clone_id: UUID,
    amount_minor: int,
    key: str,
) -> Written[TicketState]:
    """Stake on an entrant of an open race: the stake moves from the user's balance to the
    race's escrow in the same transaction as the ticket. The race is read, never written,
    so buyers never conflict on it. Once per (user, key)."""
    request = fingerprint({"race_id": race_id, "clone_id": clone_id, "amount": amount_minor})

    def decide(unit: UnitOfWork) -> TicketState:
        def create(ticket_id: UUID) -> Ticket:
            race = unit.find(Race, race_id)
            if race is None:
                raise RaceNotFoundError(f"race {race_id} not found")
            race.check_selling(clone_id, amount_minor)
            post_transfer(
                unit,
                f"ticket:{ticket_id}",
                user_account(user_id),
                race_escrow(race_id),
                amount_minor,
            )
            return Ticket(
                id=ticket_id,
                race_id=race_id,
                user_id=user_id,
                clone_id=clone_id,
                amount_minor=amount_minor,
                request_fingerprint=request,
            )

        ticket = unit.create_once(Ticket, f"{user_id}:{key}", request, create)
        return TicketState(ticket.id, ticket.race_id, ticket.clone_id, ticket.amount_minor)

    return event_log.execute(context, decide)


# --- the calendar job ----------------------------------------------------------------------

STEPS: dict[RaceStatus, str] = {
    RaceStatus.SCHEDULED: "open sales",
    RaceStatus.OPEN: "close sales",
    RaceStatus.CLOSED: "start",
    RaceStatus.RUNNING: "finish",
    RaceStatus.FINISHED: "make official",
    RaceStatus.OFFICIAL: "settle",
}


def step_due(race: Race, now: datetime) -> bool:
    """Whether the race's next step is due on its pinned times."""
    rules, status = race.rule_set, RaceStatus(race.status)
    due_at = {
        RaceStatus.SCHEDULED: rules.sales_open_at,
        RaceStatus.OPEN: rules.starts_at,
        RaceStatus.CLOSED: rules.starts_at,
        RaceStatus.RUNNING: rules.ends_at,
    }
    if status in due_at:
        return now >= due_at[status]
    if status is RaceStatus.FINISHED:
        return race.official_due(now)
    # Settled once and its payout rejected: admins decide (settle again, or void).
    return status is RaceStatus.OFFICIAL and race.settlements == 0


@dataclass(frozen=True)
class RaceCalendar:
    """One round: every race not yet settled or void takes each step that is due, in
    order (a late round catches up several). One round at a time across processes (the
    `job:race_calendar` lease). Answers how many steps were taken."""

    event_log: EventLog
    prices: PriceSource
    active: Callable[[], list[UUID]]
    tickets: Callable[[UUID], RaceTickets]
    payouts: PayoutPolicy
    clock: Clock
    url: str

    def __call__(self) -> int | None:
        with lease(self.url, CALENDAR_LEASE) as held:
            if not held:
                return None
            now = self.clock()
            return sum(self.advance(race_id, now) for race_id in self.active())

    def advance(self, race_id: UUID, now: datetime) -> int:
        taken = 0
        while True:
            race = self.event_log.read(Race, race_id)
            if race is None or race.status in TERMINAL or not step_due(race, now):
                return taken
            step = STEPS[RaceStatus(race.status)]
            context = job_context(CALENDAR_JOB, lambda: now, f"{race_id}:{step}")
            try:
                self.take(step, race_id, context)
            except DomainError as error:  # one race's refusal never stops the round
                log.warning("%s: %s race %s: %s", CALENDAR_JOB, step, race_id, error)
                return taken
            taken += 1

    def take(self, step: str, race_id: UUID, context: CommandContext) -> None:
        reason = "on schedule"
        log_, prices = self.event_log, self.prices
        if step == "open sales":
            open_sales(log_, context, race_id, reason)
        elif step == "close sales":
            close_sales(log_, context, race_id, reason)
        elif step == "start":
            start_race(log_, context, race_id, reason)
        elif step == "finish":
            finish_race(log_, context, prices, race_id, reason)
        elif step == "make official":
            make_official(log_, context, race_id, "objection window passed")
        else:
            settle_race(log_, context, race_id, lambda: self.tickets(race_id), self.payouts, reason)
