"""A race between arena members, and the tickets spectators buy on it.

    scheduled --open--> open --close sales--> closed --start--> running --finish--> finished
    finished --(objection window; admins may amend)--> official --settle--> settled
    settled --payout posted--> paid;  settled --payout rejected--> official (settle again)
    any state before paid --void--> void (every ticket refunded, takeout included)

The rule set (sales window, start, duration, pool terms, stake limits, prop rules) is
pinned when the race is scheduled. `SalesClosed`'s log position defines the pool: a ticket
counts only if it was recorded after `SalesOpened` and before `SalesClosed` in the log, so
a ticket racing the close is either counted or refunded, never lost. Tickets are their own
aggregates: buying one reads the race but never writes it, so the race is no hot spot.

The result ranks entrants by final equity in integer minor units read at the end time;
equal equity is a dead heat; an entrant that breached a rule (or an admin disqualified)
is placed after every clean one and cannot win; an entrant that never started is
scratched (its tickets are refunded). Every transition is an event with its actor and a
reason; the aggregate never reads the clock: times arrive as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate
from aggregates.entitlements import ReasonRequiredError
from aggregates.errors import ConflictError, InvalidCommandError, NotFoundError
from aggregates.ledger import USDC_DECIMALS
from aggregates.parimutuel import STAKE_UNIT_MINOR, PoolRules, RaceOutcome, Stake, settle


class RaceStatus(StrEnum):
    SCHEDULED = "scheduled"
    OPEN = "open"
    CLOSED = "closed"
    RUNNING = "running"
    FINISHED = "finished"
    OFFICIAL = "official"
    SETTLED = "settled"
    PAID = "paid"
    VOID = "void"


TERMINAL = (RaceStatus.PAID, RaceStatus.VOID)


def race_escrow(race_id: UUID) -> str:
    """The ledger account holding a race's stakes until settlement (not an aggregate)."""
    return f"race:{race_id}:escrow"


class RaceNotFoundError(NotFoundError):
    code = "not-found"


class RaceStateError(ConflictError):
    code = "race-state"


class RaceAlreadySettledError(ConflictError):
    code = "race-already-settled"


class RaceNotOpenError(ConflictError):
    code = "race-not-open"


class UnknownEntrantError(InvalidCommandError):
    code = "unknown-entrant"


class InvalidStakeError(InvalidCommandError):
    code = "invalid-stake"


class InvalidRaceRulesError(InvalidCommandError):
    code = "invalid-race-rules"


@dataclass(frozen=True)
class RaceRules:
    """What a race pins when scheduled; times are absolute, limits in micro-USDC."""

    sales_open_at: datetime
    starts_at: datetime
    """Sales close when the race starts."""
    ends_at: datetime
    objection_seconds: int
    """After finishing, how long admins may amend the result before it is official."""
    starting_equity: Decimal
    prop_rule_set: str
    prop_rule_set_version: int
    takeout_bps: int
    break_unit_minor: int
    min_price_minor: int
    min_stake_minor: int
    max_stake_minor: int
    pool_type: str = "win"

    def __post_init__(self) -> None:
        if not self.sales_open_at < self.starts_at < self.ends_at:
            raise InvalidRaceRulesError("sales open before the start, which is before the end")
        if not 0 <= self.takeout_bps <= 10_000:
            raise InvalidRaceRulesError("takeout is 0 to 10,000 basis points")
        if self.break_unit_minor <= 0 or 10**USDC_DECIMALS % self.break_unit_minor:
            raise InvalidRaceRulesError("the break unit divides one USDC (e.g. 10,000 = 1 cent)")
        if self.min_price_minor < 10**USDC_DECIMALS:
            raise InvalidRaceRulesError("the minimum price returns at least the stake")
        if not STAKE_UNIT_MINOR <= self.min_stake_minor <= self.max_stake_minor:
            raise InvalidRaceRulesError("0.01 USDC <= minimum stake <= maximum stake")
        if self.objection_seconds < 0:
            raise InvalidRaceRulesError("the objection window is not negative")

    @property
    def official_after(self) -> timedelta:
        return timedelta(seconds=self.objection_seconds)

    @property
    def pool(self) -> PoolRules:
        return PoolRules(
            takeout_bps=self.takeout_bps,
            break_unit_minor=self.break_unit_minor,
            min_price_minor=self.min_price_minor,
            pool_type=self.pool_type,
        )

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RaceRules:
        return cls(**state)

    def check_stake(self, amount_minor: int) -> None:
        if amount_minor % STAKE_UNIT_MINOR:
            raise InvalidStakeError("a stake is a whole number of cents")
        if not self.min_stake_minor <= amount_minor <= self.max_stake_minor:
            raise InvalidStakeError(
                f"a stake is {self.min_stake_minor} to {self.max_stake_minor} micro-USDC"
            )


@dataclass(frozen=True)
class Standing:
    """One entrant's line in a result."""

    clone_id: UUID
    equity_minor: int
    breach: str | None
    place: int

    def to_state(self) -> dict[str, Any]:
        return asdict(self)


def equity_minor(equity: Decimal) -> int:
    """Equity in whole micro-USDC, floored: ranking compares integers, never floats."""
    return int((equity * 10**USDC_DECIMALS).to_integral_value(ROUND_FLOOR))


def rank(finals: Mapping[UUID, tuple[int, str | None]]) -> list[Standing]:
    """Places from final equity (minor units) and any breach: clean entrants first by
    equity, equal equity sharing a place (a dead heat); breached ones after them all."""
    order = sorted(finals.items(), key=lambda item: (item[1][1] is not None, -item[1][0]))
    standings: list[Standing] = []
    for index, (clone_id, (equity, breach)) in enumerate(order):
        previous = standings[-1] if standings else None
        tied = (
            previous is not None
            and previous.equity_minor == equity
            and (previous.breach is None) == (breach is None)
        )
        place = previous.place if tied and previous is not None else index + 1
        standings.append(Standing(clone_id, equity, breach, place))
    return standings


def winners_of(standings: Sequence[Standing]) -> frozenset[UUID]:
    """The clean entrants in first place (several in a dead heat; none if all breached)."""
    return frozenset(s.clone_id for s in standings if s.place == 1 and s.breach is None)


def implied_prices(rules: PoolRules, pools: Mapping[UUID, int]) -> dict[UUID, int]:
    """What 1 USDC on each entrant would return (micro-USDC, stake included) if it won
    alone with the pools as they stand: the settlement's own price, on the pools so far."""
    stakes = [
        Stake(
            ticket_id=clone_id,
            user_id=clone_id,
            entrant_id=clone_id,
            amount_minor=pool,
            counted=True,
        )
        for clone_id, pool in pools.items()
        if pool > 0
    ]
    prices: dict[UUID, int] = {}
    for stake in stakes:
        settled = settle(rules, stakes, RaceOutcome(winners=frozenset({stake.entrant_id})))
        prices[stake.entrant_id] = settled.prices[0].price_minor
    return prices


def require_reason(reason: str, what: str) -> str:
    if not reason.strip():
        raise ReasonRequiredError(f"{what} needs a reason")
    return reason


class Race(DomainAggregate):
    snapshot_interval: ClassVar[int | None] = 50
    settlements: int = 0

    class Scheduled(DomainAggregate.Created):
        name: str
        rules: dict[str, Any]
        entrants: list[dict[str, Any]]
        """`{"clone_id", "owner_id", "version_hash"}` per entrant, in the order picked."""
        request_fingerprint: str
        reason: str

    class SalesOpened(DomainAggregate.Event):
        reason: str

    class SalesClosed(DomainAggregate.Event):
        reason: str

    class Started(DomainAggregate.Event):
        accounts: dict[str, UUID]
        """clone id (as text) -> the entrant's race prop account."""
        scratched: dict[str, str]
        """clone id (as text) -> why it could not start."""
        reason: str

    class Finished(DomainAggregate.Event):
        standings: list[dict[str, Any]]
        finished_at: datetime
        reason: str

    class ResultAmended(DomainAggregate.Event):
        standings: list[dict[str, Any]]
        disqualified: list[UUID]
        reason: str

    class MadeOfficial(DomainAggregate.Event):
        reason: str

    class Settled(DomainAggregate.Event):
        summary: dict[str, Any]
        reason: str

    class SettlementRejected(DomainAggregate.Event):
        reason: str

    class Paid(DomainAggregate.Event):
        reason: str

    class Voided(DomainAggregate.Event):
        from_status: str
        reason: str

    @event(Scheduled)
    def __init__(
        self,
        id: UUID,
        name: str,
        rules: dict[str, Any],
        entrants: list[dict[str, Any]],
        request_fingerprint: str,
        reason: str,
    ) -> None:
        self.name = name
        self.rules = rules
        self.entrants = entrants
        self.request_fingerprint = request_fingerprint
        self.status: str = RaceStatus.SCHEDULED.value
        self.accounts: dict[str, UUID] = {}
        self.scratched: dict[str, str] = {}
        self.standings: list[dict[str, Any]] = []
        self.finished_at: datetime | None = None
        self.sales_versions: list[int] = []
        """The race's versions at `SalesOpened` and `SalesClosed`: where their log
        positions are found (the pool is what lies between them)."""
        self.summary: dict[str, Any] | None = None
        self.settlements = 0
        """How many times the race was settled (a rejected payout sends it back)."""
        self.finished_version: int | None = None
        """Where the result was first recorded: settlement reads the tickets once their
        read model has got this far (every ticket, even one bought as sales closed, is
        recorded long before a race finishes)."""

    @classmethod
    def schedule(
        cls,
        id: UUID,
        *,
        name: str,
        rules: RaceRules,
        entrants: Sequence[Mapping[str, Any]],
        request_fingerprint: str,
        reason: str,
    ) -> Race:
        if len(entrants) < 2:
            raise InvalidRaceRulesError("a race needs at least two entrants")
        if len({e["clone_id"] for e in entrants}) != len(entrants):
            raise InvalidRaceRulesError("an entrant is entered once")
        return cls(
            id=id,
            name=name,
            rules=rules.to_state(),
            entrants=[dict(e) for e in entrants],
            request_fingerprint=request_fingerprint,
            reason=require_reason(reason, "scheduling a race"),
        )

    # --- reading the state -----------------------------------------------------------------

    @property
    def rule_set(self) -> RaceRules:
        return RaceRules.from_state(self.rules)

    @property
    def entrant_ids(self) -> list[UUID]:
        return [e["clone_id"] for e in self.entrants]

    def entrant(self, clone_id: UUID) -> dict[str, Any]:
        found = next((e for e in self.entrants if e["clone_id"] == clone_id), None)
        if found is None:
            raise UnknownEntrantError(f"clone {clone_id} is not an entrant of this race")
        return found

    @property
    def result(self) -> list[Standing]:
        return [Standing(**s) for s in self.standings]

    @property
    def scratched_ids(self) -> frozenset[UUID]:
        return frozenset(UUID(clone_id) for clone_id in self.scratched)

    def official_due(self, now: datetime) -> bool:
        return (
            self.status == RaceStatus.FINISHED
            and self.finished_at is not None
            and now >= self.finished_at + self.rule_set.official_after
        )

    # --- commands --------------------------------------------------------------------------

    def check_selling(self, clone_id: UUID, amount_minor: int) -> None:
        """A ticket may be bought: the race is open, the entrant is in it, the stake fits."""
        if self.status != RaceStatus.OPEN:
            raise RaceNotOpenError(f"the race is {self.status}; tickets are sold while open")
        self.entrant(clone_id)
        self.rule_set.check_stake(amount_minor)

    def open_sales(self, reason: str) -> None:
        self._expect(RaceStatus.SCHEDULED, "open sales")
        self._sales_opened(reason=require_reason(reason, "opening sales"))

    def close_sales(self, reason: str) -> None:
        self._expect(RaceStatus.OPEN, "close sales")
        self._sales_closed(reason=require_reason(reason, "closing sales"))

    def start(
        self, accounts: Mapping[UUID, UUID], scratched: Mapping[UUID, str], reason: str
    ) -> None:
        """Every entrant either has its race account or is scratched with why."""
        self._expect(RaceStatus.CLOSED, "start")
        if set(accounts) | set(scratched) != set(self.entrant_ids) or set(accounts) & set(
            scratched
        ):
            raise InvalidRaceRulesError("each entrant starts or is scratched, not both")
        self._started(
            accounts={str(k): v for k, v in accounts.items()},
            scratched={str(k): v for k, v in scratched.items()},
            reason=require_reason(reason, "starting a race"),
        )

    def finish(
        self, finals: Mapping[UUID, tuple[int, str | None]], now: datetime, reason: str
    ) -> None:
        """`finals`: each started entrant's final equity (minor units) and breach."""
        self._expect(RaceStatus.RUNNING, "finish")
        started = {UUID(clone_id) for clone_id in self.accounts}
        if set(finals) != started:
            raise InvalidRaceRulesError("a result ranks exactly the entrants that started")
        self._finished(
            standings=[s.to_state() for s in rank(finals)],
            finished_at=now,
            reason=require_reason(reason, "finishing a race"),
        )

    def amend(self, disqualified: Sequence[UUID], reason: str) -> None:
        """Before the result is official, admins may disqualify entrants: each is placed
        after every clean one (its tickets lose, they are not refunded)."""
        self._expect(RaceStatus.FINISHED, "amend the result of")
        require_reason(reason, "amending a result")
        current = {s.clone_id: s for s in self.result}
        unknown = [clone_id for clone_id in disqualified if clone_id not in current]
        if unknown or not disqualified:
            raise UnknownEntrantError("only entrants in the result can be disqualified")
        finals = {
            s.clone_id: (s.equity_minor, "disqualified" if s.clone_id in disqualified else s.breach)
            for s in current.values()
        }
        self._result_amended(
            standings=[s.to_state() for s in rank(finals)],
            disqualified=list(disqualified),
            reason=reason,
        )

    def make_official(self, reason: str) -> None:
        self._expect(RaceStatus.FINISHED, "make official")
        self._made_official(reason=require_reason(reason, "making a result official"))

    def check_settleable(self) -> None:
        if self.status in (RaceStatus.SETTLED, RaceStatus.PAID):
            raise RaceAlreadySettledError(f"the race is {self.status} already")
        self._expect(RaceStatus.OFFICIAL, "settle")

    def settle(self, summary: dict[str, Any], reason: str) -> None:
        self.check_settleable()
        self._settled(summary=summary, reason=require_reason(reason, "settling a race"))

    def reject_settlement(self, reason: str) -> None:
        """Its payout was rejected: the race is official again, to settle again or void."""
        self._expect(RaceStatus.SETTLED, "reject the settlement of")
        self._settlement_rejected(reason=require_reason(reason, "rejecting a settlement"))

    def mark_paid(self, reason: str) -> None:
        self._expect(RaceStatus.SETTLED, "pay")
        self._paid(reason=reason)

    def void(self, reason: str) -> None:
        require_reason(reason, "voiding a race")
        if self.status == RaceStatus.PAID:
            raise RaceAlreadySettledError("a paid race cannot be voided")
        if self.status == RaceStatus.VOID:
            raise RaceStateError("the race is void already")
        self._voided(from_status=self.status, reason=reason)

    def _expect(self, wanted: RaceStatus, action: str) -> None:
        if self.status != wanted:
            raise RaceStateError(f"cannot {action} a race that is {self.status}")

    # --- applying --------------------------------------------------------------------------

    @event(SalesOpened)
    def _sales_opened(self, reason: str) -> None:
        self.status = RaceStatus.OPEN.value
        self.sales_versions = [self.version + 1]  # applied before the version moves on

    @event(SalesClosed)
    def _sales_closed(self, reason: str) -> None:
        self.status = RaceStatus.CLOSED.value
        self.sales_versions = [*self.sales_versions, self.version + 1]

    @event(Started)
    def _started(self, accounts: dict[str, UUID], scratched: dict[str, str], reason: str) -> None:
        self.status = RaceStatus.RUNNING.value
        self.accounts = accounts
        self.scratched = scratched

    @event(Finished)
    def _finished(
        self, standings: list[dict[str, Any]], finished_at: datetime, reason: str
    ) -> None:
        self.status = RaceStatus.FINISHED.value
        self.standings = standings
        self.finished_at = finished_at
        self.finished_version = self.version + 1

    @event(ResultAmended)
    def _result_amended(
        self, standings: list[dict[str, Any]], disqualified: list[UUID], reason: str
    ) -> None:
        self.standings = standings

    @event(MadeOfficial)
    def _made_official(self, reason: str) -> None:
        self.status = RaceStatus.OFFICIAL.value

    @event(Settled)
    def _settled(self, summary: dict[str, Any], reason: str) -> None:
        self.status = RaceStatus.SETTLED.value
        self.summary = summary
        self.settlements += 1

    @event(SettlementRejected)
    def _settlement_rejected(self, reason: str) -> None:
        self.status = RaceStatus.OFFICIAL.value

    @event(Paid)
    def _paid(self, reason: str) -> None:
        self.status = RaceStatus.PAID.value

    @event(Voided)
    def _voided(self, from_status: str, reason: str) -> None:
        self.status = RaceStatus.VOID.value


class Ticket(DomainAggregate):
    """A spectator's stake on one entrant of one race; its money sits in the race's escrow
    until settlement pays, refunds or keeps it."""

    class Bought(DomainAggregate.Created):
        race_id: UUID
        user_id: UUID
        clone_id: UUID
        amount_minor: int
        request_fingerprint: str

    @event(Bought)
    def __init__(
        self,
        id: UUID,
        race_id: UUID,
        user_id: UUID,
        clone_id: UUID,
        amount_minor: int,
        request_fingerprint: str,
    ) -> None:
        self.race_id = race_id
        self.user_id = user_id
        self.clone_id = clone_id
        self.amount_minor = amount_minor
        self.request_fingerprint = request_fingerprint
