"""Race settlement: the parimutuel win pool, as one pure function over integer micro-USDC.

Spectators' stakes on a race's entrants form a pool; the house keeps a takeout; the rest
(the net pool) goes to the tickets on the winner at one published price per 1 USDC,
broken down to a break unit (domain-facts §6, "One algorithm in integer micro-USDC"):

1. R = stakes on scratched entrants (all stakes if the race is void) and stakes recorded
   after sales closed (never in the pool); G = the other stakes.
2. Winners = entrants tied first that hold stakes in G; none: every stake is refunded,
   takeout included.
3. takeout = G x bps // 10,000; N = G - takeout.
4. profit = N - sum W_j (W_j = the pool's stakes on winner j); a dead heat of k winners
   splits it equally (Ohio): share = profit // k, the remainder to breakage.
5. P_j = U + (share x U // (W_j x b)) x b, lifted to the minimum price; profit <= 0: the
   minimum price.
6. Each winning ticket pays stake x P_j // U.
7. subsidy = max(0, sum pay - N) (the house pays a minus pool); breakage = N + subsidy -
   sum pay.
8. Invariant: G + subsidy = takeout + sum pay + breakage, and the race escrow ends at 0.

Why integers and a stake unit: every figure is an exact integer, so conservation is an
equation, not a tolerance. Stakes are whole cents (`STAKE_UNIT_MINOR`) and prices move on
multiples of `PRICE_TICK_MINOR`, so stake x price is always a whole number of micro-USDC:
no ticket loses a hidden remainder, and breakage is exactly what the published price and
the dead-heat split leave behind. One price per winner (never remainders spread across
tickets) is what a reader can check against their own ticket.

The function reads no clock and no settings: the race pins its `PoolRules` when sales
open, and replaying its events settles the same pool to the same micro-USDC, whatever the
order the tickets are given in. The ledger postings follow the figures: stakes user ->
race escrow; refunds and payouts escrow -> user; takeout -> `treasury:takeout`; breakage
-> `treasury:breakage`; subsidy `treasury:minus_pool` -> escrow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from aggregates.errors import DomainError, InvalidCommandError

MICRO_PER_USDC = 1_000_000
"""U: micro-USDC in one USDC; prices are micro-USDC paid per 1 USDC staked."""
STAKE_UNIT_MINOR = 10_000
"""Stakes are whole multiples of one cent, so that payouts are exact (see the module)."""
PRICE_TICK_MINOR = MICRO_PER_USDC // STAKE_UNIT_MINOR
"""Break units and minimum prices are multiples of this (100 micro-USDC per 1 USDC): then
stake x price // U never drops a remainder."""
BPS = 10_000
WIN = "win"
POOL_TYPES = (WIN,)
"""Pool types settled here. Place and show pools are data for later: rules naming them are
refused rather than settled as a win pool."""


class InvalidPoolRulesError(InvalidCommandError):
    code = "invalid-pool-rules"


class UnsupportedPoolTypeError(InvalidPoolRulesError):
    code = "unsupported-pool-type"


class InvalidStakeError(InvalidCommandError):
    code = "invalid-stake"


class DuplicateTicketError(InvalidStakeError):
    """One ticket given twice would be paid twice."""

    code = "duplicate-ticket"


class InvalidRaceOutcomeError(InvalidCommandError):
    code = "invalid-race-outcome"


class SettlementNotConservedError(DomainError):
    """A settlement that creates or loses micro-USDC: a defect, never posted."""

    code = "settlement-not-conserved"


class RefundReason(StrEnum):
    """Why a ticket's stake goes back to its holder, most fundamental first."""

    NOT_COUNTED = "not-counted"  # recorded after sales closed: never in the pool
    VOID = "void"  # no race: everything back, takeout included
    SCRATCHED = "scratched"  # its entrant never started
    NO_WINNING_TICKETS = "no-winning-tickets"  # no one backed a winner: the pool goes back


def _is_int(value: object) -> bool:
    """An int that is not a bool: `True` is not an amount."""
    return type(value) is int


@dataclass(frozen=True)
class PoolRules:
    """A race's pool terms, pinned when sales open (a later change of settings never
    re-prices a race already selling)."""

    takeout_bps: int
    """The house's share of the pool, in basis points (1,800 = 18%)."""
    break_unit_minor: int
    """b: prices are broken down to multiples of this, per 1 USDC (10,000 = 1 cent,
    100,000 = a dime, the Florida and WV figure)."""
    min_price_minor: int
    """P_min: the least a winning ticket returns per 1 USDC (1,050,000 = $1.05); at least
    the stake itself, so a winning ticket never loses money; the house pays any shortfall."""
    pool_type: str = WIN

    def __post_init__(self) -> None:
        if self.pool_type not in POOL_TYPES:
            raise UnsupportedPoolTypeError(
                f"pool type {self.pool_type!r} is not settled; known: {', '.join(POOL_TYPES)}"
            )
        if not _is_int(self.takeout_bps) or not 0 <= self.takeout_bps <= BPS:
            raise InvalidPoolRulesError("takeout_bps is an integer from 0 to 10000")
        if (
            not _is_int(self.break_unit_minor)
            or self.break_unit_minor <= 0
            or self.break_unit_minor % PRICE_TICK_MINOR
        ):
            raise InvalidPoolRulesError(
                f"break_unit_minor is a positive multiple of {PRICE_TICK_MINOR} micro-USDC"
            )
        if (
            not _is_int(self.min_price_minor)
            or self.min_price_minor < MICRO_PER_USDC
            or self.min_price_minor % PRICE_TICK_MINOR
        ):
            raise InvalidPoolRulesError(
                f"min_price_minor is at least {MICRO_PER_USDC} and a multiple of "
                f"{PRICE_TICK_MINOR} micro-USDC"
            )

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PoolRules:
        return cls(**state)


@dataclass(frozen=True, slots=True)
class Stake:
    """One ticket's stake on one entrant, as the race's escrow holds it."""

    ticket_id: UUID
    user_id: UUID
    entrant_id: UUID
    amount_minor: int
    counted: bool
    """False for a ticket recorded after `SalesClosed`: it is refunded, never in the pool.
    No default: a forgotten flag must not put a late ticket into the pool."""

    def __post_init__(self) -> None:
        if not (
            isinstance(self.ticket_id, UUID)
            and isinstance(self.user_id, UUID)
            and isinstance(self.entrant_id, UUID)
        ):
            raise InvalidStakeError("ticket_id, user_id and entrant_id are UUIDs")
        amount = self.amount_minor
        if type(amount) is not int or amount <= 0 or amount % STAKE_UNIT_MINOR:
            raise InvalidStakeError(
                f"a stake is a positive multiple of {STAKE_UNIT_MINOR} micro-USDC (one cent)"
            )
        if type(self.counted) is not bool:
            raise InvalidStakeError("counted is True or False")


@dataclass(frozen=True)
class RaceOutcome:
    """The official result, as far as a win pool needs it."""

    winners: frozenset[UUID] = frozenset()
    """Entrants tied first: one, or several in a dead heat. Whether they hold stakes does
    not matter here; settlement drops the ones that hold none."""
    scratched: frozenset[UUID] = frozenset()
    """Entrants that never started: their tickets are refunded."""
    void: bool = False
    """No race: every ticket is refunded, takeout included."""

    def __post_init__(self) -> None:
        # Accept any collection of ids, keep a frozenset: the outcome is a value.
        try:
            object.__setattr__(self, "winners", frozenset(self.winners))
            object.__setattr__(self, "scratched", frozenset(self.scratched))
        except TypeError:
            raise InvalidRaceOutcomeError("winners and scratched are sets of entrant ids") from None
        if not all(isinstance(e, UUID) for e in self.winners | self.scratched):
            raise InvalidRaceOutcomeError("winners and scratched are entrant ids (UUIDs)")
        if type(self.void) is not bool:
            raise InvalidRaceOutcomeError("void is True or False")
        if self.void and self.winners:
            raise InvalidRaceOutcomeError("a void race has no winners")
        if self.winners & self.scratched:
            raise InvalidRaceOutcomeError("a scratched entrant cannot finish first")


@dataclass(frozen=True, slots=True)
class WinnerPrice:
    entrant_id: UUID
    pool_minor: int
    """W_j: the pool's stakes on this winner."""
    price_minor: int
    """P_j: micro-USDC paid per 1 USDC staked, stake included."""


@dataclass(frozen=True, slots=True)
class Payout:
    ticket_id: UUID
    user_id: UUID
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Refund:
    ticket_id: UUID
    user_id: UUID
    amount_minor: int
    reason: RefundReason


@dataclass(frozen=True)
class Settlement:
    """Every figure of a settled pool, and every ticket's money, in micro-USDC.

    Payouts and refunds are ordered by ticket id (so the payout table hashes the same
    however the tickets were given); a losing ticket has neither. A ticket has at most one
    row in the two together.
    """

    staked_minor: int
    """Every ticket's stake, all of it paid into the race escrow."""
    refunded_minor: int
    """R: stakes returned (scratched, void, not counted, or no winning tickets)."""
    gross_minor: int
    """G: the pool, stakes less refunds."""
    takeout_minor: int
    net_minor: int
    """N = G - takeout."""
    profit_minor: int
    """N - sum W_j; negative in a minus pool."""
    subsidy_minor: int
    """What the house adds to the escrow so that a minus pool pays the minimum price."""
    breakage_minor: int
    """What the broken-down prices (and a dead heat's split) leave of N + subsidy."""
    paid_minor: int
    """Sum of the payouts."""
    prices: tuple[WinnerPrice, ...]
    """One published price per winner that holds stakes, ordered by entrant id."""
    payouts: tuple[Payout, ...]
    refunds: tuple[Refund, ...]

    @property
    def escrow_balance_minor(self) -> int:
        """What would be left in the race escrow after every posting: exactly 0."""
        return (
            self.staked_minor
            + self.subsidy_minor
            - self.refunded_minor
            - self.takeout_minor
            - self.paid_minor
            - self.breakage_minor
        )

    def price_of(self, entrant_id: UUID) -> int | None:
        """The winner's price per 1 USDC; None for an entrant that is not a paid winner."""
        for price in self.prices:
            if price.entrant_id == entrant_id:
                return price.price_minor
        return None

    def check_conservation(self) -> None:
        """Raise `SettlementNotConservedError` unless every micro-USDC is accounted for:
        the rows add up to the totals, G + subsidy = takeout + payouts + breakage, and the
        escrow (stakes + subsidy in; refunds, takeout, payouts, breakage out) ends at 0.

        Recomputed from the rows, so it also vouches for a settlement read back from the
        log (reconciliation), not just for the arithmetic that made it."""
        problems = []
        figures = (
            self.staked_minor,
            self.refunded_minor,
            self.gross_minor,
            self.takeout_minor,
            self.net_minor,
            self.subsidy_minor,
            self.breakage_minor,
            self.paid_minor,
        )
        if any(not _is_int(f) or f < 0 for f in figures):
            problems.append("a figure is negative or not an integer")
        paid = [p.amount_minor for p in self.payouts]
        refunded = [r.amount_minor for r in self.refunds]
        if min(paid, default=1) <= 0 or min(refunded, default=1) <= 0:
            problems.append("a payout or refund is not positive")
        if sum(paid) != self.paid_minor:
            problems.append("the payouts do not add up to paid_minor")
        if sum(refunded) != self.refunded_minor:
            problems.append("the refunds do not add up to refunded_minor")
        if self.staked_minor - self.refunded_minor != self.gross_minor:
            problems.append("gross is not stakes less refunds")
        if self.gross_minor - self.takeout_minor != self.net_minor:
            problems.append("net is not gross less takeout")
        if self.subsidy_minor != max(0, self.paid_minor - self.net_minor):
            problems.append("the subsidy is not the minus pool's shortfall")
        if (
            self.gross_minor + self.subsidy_minor
            != self.takeout_minor + self.paid_minor + self.breakage_minor
        ):
            problems.append("G + subsidy != takeout + payouts + breakage")
        if self.escrow_balance_minor != 0:
            problems.append(f"the escrow ends at {self.escrow_balance_minor}, not 0")
        paid_to = [p.ticket_id.int for p in self.payouts]
        refunded_to = [r.ticket_id.int for r in self.refunds]
        if len(set(paid_to).union(refunded_to)) != len(paid_to) + len(refunded_to):
            problems.append("a ticket is paid or refunded twice")
        if paid_to != sorted(paid_to) or refunded_to != sorted(refunded_to):
            problems.append("rows are not ordered by ticket id")
        if problems:
            raise SettlementNotConservedError("; ".join(problems))

    def payout_table_digest(self) -> str:
        """SHA-256 (hex) of the payout table, which payout approvals bind to.

        The table is the UTF-8 text `payout-table@1\\n` followed by one line per payout in
        ticket-id order: `<ticket_id>:<user_id>:<amount_minor>\\n` (UUIDs in canonical
        lower-case form, amounts in decimal). Anyone holding the rows can recompute it;
        changing any amount, recipient or ticket changes it."""
        digest = hashlib.sha256(b"payout-table@1\n")
        digest.update(
            "".join(f"{p.ticket_id}:{p.user_id}:{p.amount_minor}\n" for p in self.payouts).encode()
        )
        return digest.hexdigest()


def _by_ticket(row: Payout | Refund) -> int:
    return row.ticket_id.int


def settle(rules: PoolRules, stakes: Iterable[Stake], outcome: RaceOutcome) -> Settlement:
    """Settle a win pool: the algorithm of the module docstring, step by step.

    Raises `DuplicateTicketError` when a ticket is given twice, and
    `SettlementNotConservedError` (a defect) rather than return a settlement that does not
    balance. The result does not depend on the order of `stakes`.

    Ids are looked up by their `.int`: `UUID.__hash__` and `__lt__` are Python code, the
    int's are C, and a race of 100,000 tickets settles several times faster for it."""
    void = outcome.void
    scratched = {e.int for e in outcome.scratched}
    not_counted, voided, scratch = (
        RefundReason.NOT_COUNTED,
        RefundReason.VOID,
        RefundReason.SCRATCHED,
    )
    seen: set[int] = set()
    refunds: list[Refund] = []
    pooled: list[Stake] = []
    pool: dict[int, int] = {}
    staked = 0

    # 1. Refunds come out first; everything else is the pool G.
    for stake in stakes:
        ticket = stake.ticket_id
        key = ticket.int
        if key in seen:
            raise DuplicateTicketError(f"ticket {ticket} is given twice")
        seen.add(key)
        amount = stake.amount_minor
        staked += amount
        if not stake.counted:
            refunds.append(Refund(ticket, stake.user_id, amount, not_counted))
        elif void:
            refunds.append(Refund(ticket, stake.user_id, amount, voided))
        else:
            entrant = stake.entrant_id.int
            if entrant in scratched:
                refunds.append(Refund(ticket, stake.user_id, amount, scratch))
            else:
                pool[entrant] = pool.get(entrant, 0) + amount
                pooled.append(stake)

    # 2. Winners that hold stakes, ordered by id so that nothing depends on set order.
    holders = sorted((w for w in outcome.winners if w.int in pool), key=lambda w: w.int)
    payouts: list[Payout] = []
    prices: list[WinnerPrice] = []
    if not holders:
        none_won = RefundReason.NO_WINNING_TICKETS
        refunds.extend(Refund(s.ticket_id, s.user_id, s.amount_minor, none_won) for s in pooled)
        gross = takeout = net = profit = paid = subsidy = breakage = 0
    else:
        # 3. Takeout and the net pool.
        gross = sum(pool.values())
        takeout = gross * rules.takeout_bps // BPS
        net = gross - takeout
        # 4-5. Profit, split equally in a dead heat; one broken-down price per winner.
        profit = net - sum(pool[w.int] for w in holders)
        floor = rules.min_price_minor
        unit = rules.break_unit_minor
        price_of: dict[int, int] = {}
        if profit <= 0:
            for w in holders:
                price_of[w.int] = floor
        else:
            share = profit // len(holders)
            for w in holders:
                per_unit = share * MICRO_PER_USDC // (pool[w.int] * unit)
                price_of[w.int] = max(MICRO_PER_USDC + per_unit * unit, floor)
        prices = [WinnerPrice(w, pool[w.int], price_of[w.int]) for w in holders]
        # 6. Each winning ticket at its winner's price.
        paid = 0
        for stake in pooled:
            price = price_of.get(stake.entrant_id.int)
            if price is not None:
                pay = stake.amount_minor * price // MICRO_PER_USDC
                paid += pay
                payouts.append(Payout(stake.ticket_id, stake.user_id, pay))
        # 7. The house covers a minus pool; what the prices leave is breakage.
        subsidy = max(0, paid - net)
        breakage = net + subsidy - paid

    payouts.sort(key=_by_ticket)
    refunds.sort(key=_by_ticket)
    settlement = Settlement(
        staked_minor=staked,
        refunded_minor=staked - gross,
        gross_minor=gross,
        takeout_minor=takeout,
        net_minor=net,
        profit_minor=profit,
        subsidy_minor=subsidy,
        breakage_minor=breakage,
        paid_minor=paid,
        prices=tuple(prices),
        payouts=tuple(payouts),
        refunds=tuple(refunds),
    )
    # 8. Never hand back a settlement that does not balance.
    settlement.check_conservation()
    return settlement
