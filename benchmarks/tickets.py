"""(f) Tickets: a burst of purchases on one race, and settling a race of 100,000 tickets.

**The burst.** 50 client threads, released together, buy 2,000 tickets on one open race
(40 each) through the in-process command path, `services.races.buy_ticket`: each purchase
reads the race (never writes it), creates its `Ticket` and posts the stake from the
buyer's balance to the race escrow (a `Transfer`, and a debit on the buyer's
`UserAccount`) in one transaction. Each client is its own user, funded beforehand from
the treasury with `services.ledger.post_transfer`. The baseline, in the same run with the
same 50 clients and the same event log: 2,000 single-event commands on disjoint
aggregates, each loading its own `BenchAccount` (opened beforehand, one per command) and
appending one event (*load+increment*, the judged baseline: a command that reads, then
writes, as a purchase does); and 2,000 commands that each open a new account (*create*:
one event, no read), shown beside it. A burst's rate is 2,000 over the time from the
release to the last client done. Rounds rotate the three bursts' order; each ticket round
has a race of its own; figures are medians of the rounds.

After the rounds, the `races` and `ledger` read models are brought to the head and every
race is checked: each of its 2,000 tickets recorded exactly once (the ids the keys name,
no other), all counted; each entrant's pool and the race's pool equal the sum of the
stakes bought on it; the race escrow holds that sum in 2,000 entries; every buyer's
balance (read model and aggregate) is its funding less its stakes.

**Settlement.** `aggregates.parimutuel.settle` over 100,000 synthetic stakes (8 entrants,
one scratched, 1% bought after the close, whole-cent stakes from 1 to 100 USDC, 20,000
buyers, one winner), timed with `time.process_time` (CPU of this process), median of 5
rounds; the payout table's SHA-256 (what approvals will bind to) is timed apart.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple
from uuid import UUID, uuid4

import psycopg

from aggregates.base import CommandContext, derive_id
from aggregates.ledger import TREASURY, UserAccount, user_account, user_account_id
from aggregates.parimutuel import (
    STAKE_UNIT_MINOR,
    PoolRules,
    RaceOutcome,
    Settlement,
    Stake,
    settle,
)
from aggregates.races import Race, Ticket, race_escrow
from benchmarks.aggregates import BenchAccount
from benchmarks.appends import new_account, open_accounts
from benchmarks.harness import CONTEXT, Figure, Throughput, run_burst
from projections.runner import ProjectionRunner
from services.bootstrap import Services
from services.eventlog import EventLog, UnitOfWork
from services.ledger import post_transfer
from services.races import buy_ticket, open_sales, race_rules

SECTION = "(f) tickets"
THROUGHPUT_TARGET = 0.5  # x the disjoint single-event commands
SETTLE_TARGET_MS = 1000.0  # of CPU
FUNDING_MINOR = 1_000 * 1_000_000  # each buyer's balance before its burst (40 stakes < 120)
USDC = 1_000_000

Operation = tuple[Callable[[int], None], Callable[[], None]]
KINDS = ("increment", "create", "tickets", "spread")


@dataclass(frozen=True)
class TicketPlan:
    tickets: int = 2000
    clients: int = 50
    rounds: int = 3
    entrants: int = 3
    settle_tickets: int = 100_000
    settle_entrants: int = 8
    settle_buyers: int = 20_000
    settle_rounds: int = 5

    @property
    def per_client(self) -> int:
        return self.tickets // self.clients


QUICK_TICKETS = TicketPlan(
    tickets=200, rounds=1, settle_tickets=10_000, settle_buyers=2000, settle_rounds=3
)


@dataclass(frozen=True)
class BurstCheck:
    """What the read models and the buyers' accounts show of one race's burst."""

    race_id: UUID
    bought: int
    """Tickets the clients bought on it."""
    recorded: int
    exact: bool
    """The recorded tickets are exactly the ones the purchases' keys name, each once."""
    counted: int
    staked_minor: int
    """Sum of the stakes the clients bought (known to the bench)."""
    pool_minor: int
    """The race's pool in the `races` read model (sum of its entrants' pools)."""
    pools_match: bool
    """Every entrant's pool equals the stakes bought on it."""
    escrow_minor: int
    escrow_entries: int

    @property
    def ok(self) -> bool:
        return (
            self.exact
            and self.recorded == self.counted == self.escrow_entries == self.bought
            and self.staked_minor == self.pool_minor == self.escrow_minor
            and self.pools_match
        )


@dataclass
class TicketResult:
    plan: TicketPlan
    tickets: list[Throughput] = field(default_factory=list)
    increments: list[Throughput] = field(default_factory=list)
    creates: list[Throughput] = field(default_factory=list)
    spread: list[Throughput] = field(default_factory=list)
    checks: list[BurstCheck] = field(default_factory=list)
    balances_ok: bool = False
    settle_cpu: list[float] = field(default_factory=list)
    digest_cpu: list[float] = field(default_factory=list)
    settlement: Settlement | None = None

    @staticmethod
    def rate(bursts: list[Throughput]) -> float:
        return statistics.median(b.rate for b in bursts)

    def ratios(self, baseline: list[Throughput]) -> list[float]:
        """Each round's one-race ticket rate over the baseline's rate in that round."""
        return [t.rate / b.rate for t, b in zip(self.tickets, baseline, strict=True) if b.rate]

    def ratio(self, baseline: list[Throughput]) -> float:
        return statistics.median(self.ratios(baseline))


def stake_of(client: int, number: int) -> int:
    """A whole-cent stake from 1.00 to 2.99 USDC, different from one purchase to the next."""
    return USDC + (client * 31 + number * 17) % 200 * STAKE_UNIT_MINOR


class BenchRace(NamedTuple):
    """A race of the bench: its entrants, the round it was bought in (-1: the warm-up),
    the clients that bought on it (client number -> its buyer) and how many tickets each."""

    race_id: UUID
    entrants: list[UUID]
    round_: int
    clients: dict[int, UUID]
    per_client: int

    @property
    def bought(self) -> int:
        return len(self.clients) * self.per_client


class TicketBurst:
    """The buyers, the disjoint accounts, and one race per ticket round."""

    def __init__(self, services: Services, plan: TicketPlan) -> None:
        self.services = services
        self.event_log: EventLog = services.event_log
        self.plan = plan
        self.spent: dict[UUID, int] = defaultdict(int)
        # One account per baseline command of a round: no two commands share an aggregate.
        self.accounts = open_accounts(self.event_log, plan.tickets)
        self.races: list[BenchRace] = []

    def fund(self) -> list[UUID]:
        """A buyer per client, new for each round (so every round starts alike), each
        credited from the treasury as a verified deposit is."""
        buyers = [uuid4() for _ in range(self.plan.clients)]

        def fund(unit: UnitOfWork) -> None:
            for buyer in buyers:
                post_transfer(
                    unit, f"bench-funding:{buyer}", TREASURY, user_account(buyer), FUNDING_MINOR
                )

        self.event_log.execute(CONTEXT, fund)
        return buyers

    def open_race(self) -> tuple[UUID, list[UUID]]:
        """A race of `entrants` made-up clones, scheduled and open for tickets."""
        entrants = [uuid4() for _ in range(self.plan.entrants)]
        rules = race_rules(
            self.services.settings,
            sales_open_at=CONTEXT.occurred_at - timedelta(minutes=5),
            starts_at=CONTEXT.occurred_at + timedelta(hours=1),
        )

        def schedule(unit: UnitOfWork) -> UUID:
            race = Race.schedule(
                uuid4(),
                name="Bench sprint",
                rules=rules,
                entrants=[
                    {"clone_id": e, "owner_id": uuid4(), "version_hash": "bench"} for e in entrants
                ],
                request_fingerprint="bench",
                reason="bench",
            )
            return unit.add(race).id

        race_id = self.event_log.execute(CONTEXT, schedule).result
        open_sales(self.event_log, CONTEXT, race_id, "bench")
        return race_id, entrants

    # The operations -----------------------------------------------------------------------

    def buy(self, race: BenchRace, client: int) -> Operation:
        race_id, entrants, round_ = race.race_id, race.entrants, race.round_
        buyer = race.clients[client]
        context = CommandContext(
            actor=f"user:{buyer}", occurred_at=CONTEXT.occurred_at, correlation_id="bench"
        )

        def operation(number: int) -> None:
            buy_ticket(
                self.event_log,
                context,
                race_id=race_id,
                user_id=buyer,
                clone_id=entrants[(client + number) % len(entrants)],
                amount_minor=stake_of(client, number),
                key=f"bench:{round_}:{number}",
            )

        return operation, lambda: None

    def increment(self, client: int) -> Operation:
        mine = self.accounts[client * self.plan.per_client : (client + 1) * self.plan.per_client]

        def bump(unit: UnitOfWork, account_id: UUID) -> None:
            unit.get(BenchAccount, account_id).increment(by=1)

        def operation(number: int) -> None:
            account_id = mine[number]
            self.event_log.execute(CONTEXT, lambda unit: bump(unit, account_id))

        return operation, lambda: None

    def create(self, _: int) -> Operation:
        def operation(_: int) -> None:
            self.event_log.execute(CONTEXT, lambda unit: unit.add(new_account("bench")))

        return operation, lambda: None

    # Bursts -------------------------------------------------------------------------------

    def burst(self, kind: str, round_: int, per_client: int | None = None) -> Throughput:
        clients, per_client = self.plan.clients, per_client or self.plan.per_client
        if kind in ("tickets", "spread"):
            buyers = dict(enumerate(self.fund()))
            if kind == "tickets":  # every client on one race
                one = BenchRace(*self.open_race(), round_, buyers, per_client)
                races = dict.fromkeys(buyers, one)
                self.races.append(one)
            else:  # each client on a race of its own
                races = {
                    c: BenchRace(*self.open_race(), round_, {c: buyer}, per_client)
                    for c, buyer in buyers.items()
                }
                self.races.extend(races.values())
            result = run_burst(clients, per_client, lambda c: self.buy(races[c], c))
            for client, buyer in buyers.items():
                self.spent[buyer] += sum(stake_of(client, n) for n in range(per_client))
            return result
        if kind == "increment":
            return run_burst(clients, per_client, self.increment)
        return run_burst(clients, per_client, self.create)

    def warm_up(self) -> None:
        """A few of each, so that connections, prepared statements and imports are made
        before anything is timed (the warm-up race is checked like the others)."""
        for kind in KINDS:
            self.burst(kind, round_=-1, per_client=1)

    # Checks -------------------------------------------------------------------------------

    def check(self) -> tuple[list[BurstCheck], bool]:
        ProjectionRunner(
            self.services.projections, ["races", "ledger"], self.services.url
        ).catch_up()
        with psycopg.connect(self.services.url) as conn:
            checks = [self._check_race(conn, race) for race in self.races]
            balances_ok = self._check_balances(conn)
        return checks, balances_ok

    def _check_race(self, conn: psycopg.Connection, race: BenchRace) -> BurstCheck:
        race_id, entrants, round_ = race.race_id, race.entrants, race.round_
        wanted: set[UUID] = set()
        by_entrant: dict[UUID, int] = defaultdict(int)
        for client, buyer in race.clients.items():
            for number in range(race.per_client):
                wanted.add(derive_id(Ticket.__name__, f"{buyer}:bench:{round_}:{number}"))
                by_entrant[entrants[(client + number) % len(entrants)]] += stake_of(client, number)
        recorded = [
            row[0]
            for row in conn.execute(
                "SELECT ticket_id FROM race_tickets WHERE race_id = %s", (race_id,)
            )
        ]
        counted = _one(
            conn, "SELECT count(*) FROM race_tickets WHERE race_id = %s AND counted", race_id
        )
        pools: dict[UUID, int] = dict(
            conn.execute(
                "SELECT clone_id, pool_minor FROM race_entrants WHERE race_id = %s", (race_id,)
            ).fetchall()
        )
        escrow = race_escrow(race_id)
        escrow_minor = _one(
            conn,
            "SELECT coalesce(sum(balance_minor), 0) FROM ledger_balances WHERE account = %s",
            escrow,
        )
        entries = _one(conn, "SELECT count(*) FROM ledger_entries WHERE account = %s", escrow)
        return BurstCheck(
            race_id=race_id,
            bought=race.bought,
            recorded=len(recorded),
            exact=len(recorded) == len(set(recorded)) and set(recorded) == wanted,
            counted=counted,
            staked_minor=sum(by_entrant.values()),
            pool_minor=sum(pools.values()),
            pools_match=pools == {e: by_entrant.get(e, 0) for e in entrants},
            escrow_minor=escrow_minor,
            escrow_entries=entries,
        )

    def _check_balances(self, conn: psycopg.Connection) -> bool:
        """Every buyer's balance, in the read model and on its aggregate, is its funding
        less what it staked."""
        for buyer in self.spent:
            expected = FUNDING_MINOR - self.spent[buyer]
            shown = _one(
                conn,
                "SELECT balance_minor FROM ledger_balances WHERE account = %s",
                user_account(buyer),
            )
            held: object = self.event_log.repository.get(user_account_id(buyer))
            if not isinstance(held, UserAccount):
                return False
            if (shown, held.balance_minor) != (expected, expected):
                return False
        return True


def _one(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def run_burst_rounds(services: Services, plan: TicketPlan) -> TicketResult:
    bench = TicketBurst(services, plan)
    bench.warm_up()
    result = TicketResult(plan)
    lists = {
        "increment": result.increments,
        "create": result.creates,
        "tickets": result.tickets,
        "spread": result.spread,
    }
    for round_ in range(plan.rounds):
        turn = round_ % len(KINDS)
        for kind in KINDS[turn:] + KINDS[:turn]:  # rotate who goes first
            lists[kind].append(bench.burst(kind, round_))
    result.checks, result.balances_ok = bench.check()
    return result


# Settlement ---------------------------------------------------------------------------


def synthetic_race(plan: TicketPlan, seed: int = 2026) -> tuple[list[Stake], RaceOutcome]:
    """`settle_tickets` stakes on `settle_entrants` entrants, from `settle_buyers` buyers:
    entrant 0 wins, the last is scratched, 1% of the tickets came after the close."""
    rng = random.Random(seed)

    def an_id() -> UUID:
        return UUID(int=rng.getrandbits(128), version=4)

    entrants = [an_id() for _ in range(plan.settle_entrants)]
    buyers = [an_id() for _ in range(plan.settle_buyers)]
    stakes = [
        Stake(
            ticket_id=an_id(),
            user_id=rng.choice(buyers),
            entrant_id=rng.choice(entrants),
            amount_minor=rng.randint(100, 10_000) * STAKE_UNIT_MINOR,
            counted=rng.random() >= 0.01,
        )
        for _ in range(plan.settle_tickets)
    ]
    return stakes, RaceOutcome(
        winners=frozenset({entrants[0]}), scratched=frozenset({entrants[-1]})
    )


def time_settlement(services: Services, plan: TicketPlan, result: TicketResult) -> None:
    rules: PoolRules = race_rules(
        services.settings,
        sales_open_at=CONTEXT.occurred_at,
        starts_at=CONTEXT.occurred_at + timedelta(hours=1),
    ).pool
    stakes, outcome = synthetic_race(plan)
    settle(rules, stakes[:1000], outcome)  # warm-up
    for _ in range(plan.settle_rounds):
        started = time.process_time()
        settlement = settle(rules, stakes, outcome)
        settled = time.process_time()
        settlement.payout_table_digest()
        result.settle_cpu.append(settled - started)
        result.digest_cpu.append(time.process_time() - settled)
        result.settlement = settlement


def run_tickets(services: Services, plan: TicketPlan) -> TicketResult:
    result = run_burst_rounds(services, plan)
    time_settlement(services, plan, result)
    return result


# Figures ------------------------------------------------------------------------------


def ticket_figures(services: Services, plan: TicketPlan) -> list[Figure]:
    result = run_tickets(services, plan)
    clients = f"{plan.clients} clients"
    ratio, ratios = result.ratio(result.increments), result.ratios(result.increments)
    ticket_rate, spread_rate = result.rate(result.tickets), result.rate(result.spread)
    spread_ratios = result.ratios(result.spread)
    checks = result.checks
    every = all(c.ok for c in checks)  # the warm-up races' too
    whole = [c for c in checks if c.bought == plan.tickets]
    spread = [c for c in checks if c.bought == plan.per_client]
    settlement = result.settlement
    assert settlement is not None
    settle_ms = statistics.median(result.settle_cpu) * 1000
    digest_ms = statistics.median(result.digest_cpu) * 1000
    return [
        Figure(
            section=SECTION,
            measure=f"{plan.tickets:,} purchases on one race, {clients}",
            value=ratio,
            unit="x disjoint",
            detail=(
                f"{ticket_rate:,.0f} tickets/s; {plan.tickets:,} single-event commands on"
                f" disjoint aggregates (load+increment) {result.rate(result.increments):,.0f}/s;"
                f" rounds {min(ratios):.2f}-{max(ratios):.2f}x; against create"
                f" ({result.rate(result.creates):,.0f}/s) {result.ratio(result.creates):.2f}x"
            ),
            target=f">= {THROUGHPUT_TARGET}x disjoint",
            passed=ratio >= THROUGHPUT_TARGET,
        ),
        Figure(
            section=SECTION,
            measure=f"the same on one race / spread over {plan.clients} races",
            value=statistics.median(spread_ratios),
            unit="x spread",
            detail=(
                f"{ticket_rate:,.0f} vs {spread_rate:,.0f} tickets/s (each client on a race of"
                f" its own); rounds {min(spread_ratios):.2f}-{max(spread_ratios):.2f}x:"
                " about 1x means the race is no hot spot"
            ),
        ),
        Figure(
            section=SECTION,
            measure="every ticket once, pool = sum of stakes",
            value=float(sum(c.recorded for c in whole)),
            unit="tickets",
            detail=(
                f"{len(whole)} races of {plan.tickets:,} (and {len(spread)} of"
                f" {plan.per_client}): each ticket recorded once and counted; pools"
                f" {' / '.join(f'{c.pool_minor / USDC:,.2f}' for c in whole)} USDC = the"
                " stakes = the escrow; buyers' balances = funding - stakes"
                f" ({'yes' if result.balances_ok else 'NO'})"
            ),
            target="exact",
            passed=every and result.balances_ok,
        ),
        Figure(
            section=SECTION,
            measure=f"settle a race of {plan.settle_tickets:,} tickets",
            value=settle_ms,
            unit="ms CPU",
            detail=(
                f"parimutuel.settle, process_time, median of {plan.settle_rounds}"
                f" (rounds {min(result.settle_cpu) * 1000:,.0f}-"
                f"{max(result.settle_cpu) * 1000:,.0f} ms); {len(settlement.payouts):,} payouts,"
                f" {len(settlement.refunds):,} refunds; payout-table SHA-256 {digest_ms:,.0f} ms"
            ),
            target=f"< {SETTLE_TARGET_MS:,.0f} ms CPU",
            passed=settle_ms < SETTLE_TARGET_MS,
        ),
    ]
