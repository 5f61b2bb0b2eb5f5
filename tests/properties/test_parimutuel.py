"""Win-pool settlement under random pools, takeouts, break units, dead heats and scratches.

Every micro-USDC staked (and every one the house adds) leaves the escrow exactly once, as
a refund, takeout, payout or breakage; each ticket meets the fate its entrant's result
gives it, judged here independently of the module; prices are the published rule
(broken down, never up, lifted to the minimum); and the order of the tickets changes
nothing.
"""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates.parimutuel import (
    MICRO_PER_USDC,
    PRICE_TICK_MINOR,
    STAKE_UNIT_MINOR,
    PoolRules,
    RaceOutcome,
    RefundReason,
    Settlement,
    Stake,
    settle,
)

U = MICRO_PER_USDC
ENTRANTS = [UUID(int=0xE0 + n) for n in range(6)]
USERS = [UUID(int=0x50 + n) for n in range(3)]

Race = tuple[PoolRules, list[Stake], RaceOutcome]

rules = st.builds(
    PoolRules,
    takeout_bps=st.one_of(st.integers(0, 3_000), st.integers(0, 10_000)),
    break_unit_minor=st.one_of(
        st.sampled_from([100, 10_000, 100_000, U]),
        st.integers(1, 20_000).map(lambda n: n * PRICE_TICK_MINOR),
    ),
    min_price_minor=st.one_of(
        st.sampled_from([U, 1_050_000, 1_100_000]),
        st.integers(0, 10_000).map(lambda n: U + n * PRICE_TICK_MINOR),
    ),
)
# Mostly small stakes, some whales: a whale on the favourite makes a minus pool.
units = st.one_of(st.integers(1, 500), st.integers(1, 10_000_000))


@st.composite
def races(draw: st.DrawFn) -> Race:
    backed = ENTRANTS[: draw(st.integers(1, len(ENTRANTS)))]
    tickets = draw(
        st.lists(
            st.tuples(
                st.uuids(),
                st.sampled_from(USERS),
                st.sampled_from(backed),
                units,
                st.one_of(st.just(True), st.booleans()),
            ),
            max_size=25,
            unique_by=lambda t: t[0],
        )
    )
    stakes = [
        Stake(ticket, user, entrant, n * STAKE_UNIT_MINOR, counted)
        for ticket, user, entrant, n, counted in tickets
    ]
    if draw(st.sampled_from(range(10))) == 0:
        return draw(rules), stakes, RaceOutcome(void=True)
    # Mostly backed winners (one, or a dead heat); sometimes from the whole field, so some
    # hold no stakes, or no one finishes first at all.
    winners = draw(
        st.one_of(
            st.sets(st.sampled_from(backed), min_size=1, max_size=3),
            st.sets(st.sampled_from(ENTRANTS), max_size=3),
        )
    )
    runners = [e for e in ENTRANTS if e not in winners]
    scratched = draw(st.sets(st.sampled_from(runners), max_size=2)) if runners else set()
    outcome = RaceOutcome(winners=frozenset(winners), scratched=frozenset(scratched))
    return draw(rules), stakes, outcome


def expected_refunds(stakes: list[Stake], outcome: RaceOutcome) -> dict[UUID, RefundReason]:
    """Which tickets get their stake back, and why, from the rules as stated."""
    reasons: dict[UUID, RefundReason] = {}
    pool = []
    for stake in stakes:
        if not stake.counted:
            reasons[stake.ticket_id] = RefundReason.NOT_COUNTED
        elif outcome.void:
            reasons[stake.ticket_id] = RefundReason.VOID
        elif stake.entrant_id in outcome.scratched:
            reasons[stake.ticket_id] = RefundReason.SCRATCHED
        else:
            pool.append(stake)
    if not any(stake.entrant_id in outcome.winners for stake in pool):
        for stake in pool:
            reasons[stake.ticket_id] = RefundReason.NO_WINNING_TICKETS
    return reasons


@settings(max_examples=300, deadline=None)
@given(race=races())
def test_every_micro_usdc_leaves_the_escrow_exactly_once(race: Race) -> None:
    rules, stakes, outcome = race

    settled = settle(rules, stakes, outcome)

    settled.check_conservation()
    staked = sum(s.amount_minor for s in stakes)
    paid = sum(p.amount_minor for p in settled.payouts)
    refunded = sum(r.amount_minor for r in settled.refunds)
    assert settled.staked_minor == staked
    assert staked + settled.subsidy_minor == (
        refunded + settled.takeout_minor + paid + settled.breakage_minor
    )
    assert settled.gross_minor + settled.subsidy_minor == (
        settled.takeout_minor + paid + settled.breakage_minor
    )
    assert settled.escrow_balance_minor == 0
    assert settled.takeout_minor == settled.gross_minor * rules.takeout_bps // 10_000
    assert min(settled.subsidy_minor, settled.breakage_minor) == 0  # never both
    rows = [p.ticket_id for p in settled.payouts] + [r.ticket_id for r in settled.refunds]
    assert len(rows) == len(set(rows))


@settings(max_examples=300, deadline=None)
@given(race=races())
def test_each_ticket_meets_the_fate_its_entrant_gives_it(race: Race) -> None:
    rules, stakes, outcome = race
    refunds = expected_refunds(stakes, outcome)

    settled = settle(rules, stakes, outcome)

    stake_of = {s.ticket_id: s for s in stakes}
    assert {r.ticket_id: r.reason for r in settled.refunds} == refunds
    for refund in settled.refunds:
        assert refund.amount_minor == stake_of[refund.ticket_id].amount_minor
        assert refund.user_id == stake_of[refund.ticket_id].user_id
    winning = {
        s.ticket_id
        for s in stakes
        if s.ticket_id not in refunds and s.entrant_id in outcome.winners
    }
    # Every winning ticket is paid, and only those: a losing, scratched or late one never.
    assert {p.ticket_id for p in settled.payouts} == winning
    for payout in settled.payouts:
        stake = stake_of[payout.ticket_id]
        price = settled.price_of(stake.entrant_id)
        assert price is not None
        assert payout.user_id == stake.user_id
        assert stake.amount_minor * price % U == 0  # exact: no hidden remainder
        assert payout.amount_minor == stake.amount_minor * price // U
        assert payout.amount_minor >= stake.amount_minor * rules.min_price_minor // U
        assert payout.amount_minor >= stake.amount_minor


@settings(max_examples=300, deadline=None)
@given(race=races())
def test_prices_break_down_to_the_unit_and_never_up(race: Race) -> None:
    rules, stakes, outcome = race
    b, floor = rules.break_unit_minor, rules.min_price_minor

    settled = settle(rules, stakes, outcome)

    pool: dict[UUID, int] = defaultdict(int)
    for stake in stakes:
        if stake.counted and not outcome.void and stake.entrant_id not in outcome.scratched:
            pool[stake.entrant_id] += stake.amount_minor
    backed = sorted((w for w in outcome.winners if pool[w]), key=lambda w: w.int)
    assert [(p.entrant_id, p.pool_minor) for p in settled.prices] == [(w, pool[w]) for w in backed]
    if not backed:
        return
    profit = settled.net_minor - sum(pool[w] for w in backed)
    assert settled.profit_minor == profit
    share = profit // len(backed)
    for price in settled.prices:
        assert price.price_minor >= floor
        if profit <= 0:
            assert price.price_minor == floor
        elif price.price_minor > floor:
            # The largest price on the grid whose profit fits in this winner's share.
            above = price.price_minor - U
            assert above % b == 0
            assert price.pool_minor * above <= share * U < price.pool_minor * (above + b)
    if profit <= 0:
        assert settled.breakage_minor == 0  # a minus pool (or an even one) keeps nothing
    else:
        # Breakage is only the split's remainder and what breaking each price down left:
        # each winner's payout falls short of stakes + share by less than W_j x b / U.
        limit = (profit - share * len(backed)) * U + sum(p.pool_minor * b for p in settled.prices)
        assert settled.breakage_minor * U < limit


def table(settled: Settlement) -> tuple[object, ...]:
    return (settled, settled.payout_table_digest())


@settings(max_examples=200, deadline=None)
@given(race=races(), data=st.data())
def test_the_order_of_the_tickets_changes_nothing(race: Race, data: st.DataObject) -> None:
    rules, stakes, outcome = race
    reordered = data.draw(st.permutations(stakes))

    assert table(settle(rules, reordered, outcome)) == table(settle(rules, stakes, outcome))
