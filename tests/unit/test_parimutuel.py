"""Win-pool settlement on the published examples (domain-facts §6), and its refusals.

Amounts are written in USDC through `usdc()` so each figure reads like the source it
comes from; everything the module sees and returns is integer micro-USDC.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from aggregates.errors import DomainError, InvalidCommandError
from aggregates.parimutuel import (
    MICRO_PER_USDC,
    STAKE_UNIT_MINOR,
    DuplicateTicketError,
    InvalidPoolRulesError,
    InvalidRaceOutcomeError,
    InvalidStakeError,
    Payout,
    PoolRules,
    RaceOutcome,
    Refund,
    RefundReason,
    Settlement,
    SettlementNotConservedError,
    Stake,
    UnsupportedPoolTypeError,
    WinnerPrice,
    settle,
)

U = MICRO_PER_USDC
CENT = 10_000
DIME = 100_000

ALICE, BOB, CAROL = (UUID(int=0xA11CE), UUID(int=0xB0B), UUID(int=0xCA401))
RED, BLUE, GREEN, GREY = (UUID(int=0x1), UUID(int=0x2), UUID(int=0x3), UUID(int=0x4))

WV = PoolRules(takeout_bps=1800, break_unit_minor=DIME, min_price_minor=U)
FLORIDA = PoolRules(takeout_bps=1500, break_unit_minor=DIME, min_price_minor=1_050_000)


def usdc(amount: str) -> int:
    """`"6.60"` -> 6_600_000 micro-USDC, exactly."""
    minor = Decimal(amount) * U
    assert minor == minor.to_integral_value()
    return int(minor)


def ticket(
    n: int, entrant: UUID, amount: str, user: UUID = ALICE, *, counted: bool = True
) -> Stake:
    return Stake(
        ticket_id=UUID(int=1000 + n),
        user_id=user,
        entrant_id=entrant,
        amount_minor=usdc(amount),
        counted=counted,
    )


def tid(n: int) -> UUID:
    return UUID(int=1000 + n)


def won(*winners: UUID, scratched: tuple[UUID, ...] = ()) -> RaceOutcome:
    return RaceOutcome(winners=frozenset(winners), scratched=frozenset(scratched))


# --- the published examples --------------------------------------------------------------


def test_the_west_virginia_example_pays_6_60_with_dime_breakage() -> None:
    # WV 178-5C: gross 192,913; 18% takeout 34,724.34; net 158,188.66; bet on the winner
    # 23,872; profit per $ 5.6265357; price 6.6265357 -> $6.60 with dime breakage.
    stakes = [
        ticket(1, RED, "20000", ALICE),
        ticket(2, RED, "3872", BOB),
        ticket(3, BLUE, "169041", CAROL),
    ]

    settled = settle(WV, stakes, won(RED))

    assert settled.gross_minor == usdc("192913")
    assert settled.takeout_minor == usdc("34724.34")
    assert settled.net_minor == usdc("158188.66")
    assert settled.profit_minor == usdc("134316.66")
    # The unbroken price, 6.6265357 to micro-USDC, broken down to the dime:
    assert U + settled.profit_minor * U // usdc("23872") == 6_626_535
    assert settled.prices == (WinnerPrice(RED, usdc("23872"), 6_600_000),)
    assert settled.payouts == (
        Payout(tid(1), ALICE, usdc("132000")),  # 20,000 x 6.60
        Payout(tid(2), BOB, usdc("25555.20")),  # 3,872 x 6.60
    )
    assert settled.paid_minor == usdc("157555.20")
    assert settled.breakage_minor == usdc("633.46")  # net - payouts
    assert settled.subsidy_minor == 0
    assert settled.refunds == ()
    assert settled.escrow_balance_minor == 0


def test_the_same_pool_with_a_cent_break_unit_pays_6_62() -> None:
    cents = replace(WV, break_unit_minor=CENT)
    stakes = [ticket(1, RED, "23872"), ticket(2, BLUE, "169041")]

    settled = settle(cents, stakes, won(RED))

    assert settled.price_of(RED) == 6_620_000
    assert settled.breakage_minor == usdc("158188.66") - usdc("23872") * 662 // 100


def test_florida_lifts_a_dime_price_below_1_10_to_the_1_05_minimum() -> None:
    # Net 850 against 800 on the winner: 6.25 cents profit per $ breaks down to $1.00,
    # under $1.10, so the minimum $1.05 is paid; the net pool still covers it.
    stakes = [ticket(1, RED, "800"), ticket(2, BLUE, "200")]

    settled = settle(FLORIDA, stakes, won(RED))

    assert (settled.takeout_minor, settled.net_minor) == (usdc("150"), usdc("850"))
    assert settled.price_of(RED) == 1_050_000
    assert settled.payouts == (Payout(tid(1), ALICE, usdc("840")),)
    assert (settled.subsidy_minor, settled.breakage_minor) == (0, usdc("10"))


def test_a_minus_pool_pays_the_minimum_and_the_house_makes_up_the_shortfall() -> None:
    # 950 of 1,000 on the favourite: net 850 cannot return the stakes, profit is negative,
    # the minimum $1.05 is paid and the shortfall comes from the house (Illinois, Florida).
    stakes = [ticket(1, RED, "600"), ticket(2, RED, "350", BOB), ticket(3, BLUE, "50")]

    settled = settle(FLORIDA, stakes, won(RED))

    assert settled.profit_minor == usdc("-100")
    assert settled.price_of(RED) == 1_050_000
    assert settled.paid_minor == usdc("997.50")
    assert settled.subsidy_minor == usdc("147.50")
    assert settled.breakage_minor == 0  # no breakage in a minus pool (Montana)
    assert settled.gross_minor + settled.subsidy_minor == (
        settled.takeout_minor + settled.paid_minor + settled.breakage_minor
    )
    assert settled.escrow_balance_minor == 0


def test_a_dead_heat_splits_the_profit_equally_and_divides_each_share_by_its_own_bets() -> None:
    # Ohio 3769-13-16: RED and BLUE tie with GREY, which holds no bets and drops out. Net
    # 800, bets on the tied 300 + 100, profit 400: each of the two entries' share is 200.
    stakes = [
        ticket(1, RED, "300"),
        ticket(2, BLUE, "100", BOB),
        ticket(3, GREEN, "600", CAROL),
    ]
    twenty = replace(WV, takeout_bps=2000, break_unit_minor=CENT)

    settled = settle(twenty, stakes, won(RED, BLUE, GREY))

    assert settled.net_minor == usdc("800")
    assert settled.prices == (
        WinnerPrice(RED, usdc("300"), 1_660_000),  # 1 + 200/300 = 1.666.. -> 1.66
        WinnerPrice(BLUE, usdc("100"), 3_000_000),  # 1 + 200/100 = 3.00
    )
    assert settled.price_of(GREY) is None
    assert settled.payouts == (
        Payout(tid(1), ALICE, usdc("498")),
        Payout(tid(2), BOB, usdc("300")),
    )
    assert settled.breakage_minor == usdc("2")


def test_a_dead_heat_remainder_that_does_not_split_goes_to_breakage() -> None:
    # 1 bp of 300.01 is 30,001 micro-USDC: net 299.979999, profit 99.979999, which does not
    # halve. Each share is 49.989999 on 100 bet: 1.49989999 breaks down to 1.4998.
    stakes = [ticket(1, RED, "100"), ticket(2, BLUE, "100"), ticket(3, GREEN, "100.01")]
    rules = PoolRules(takeout_bps=1, break_unit_minor=100, min_price_minor=U)

    settled = settle(rules, stakes, won(RED, BLUE))

    assert (settled.takeout_minor, settled.profit_minor) == (30_001, 99_979_999)
    assert [p.price_minor for p in settled.prices] == [1_499_800, 1_499_800]
    assert settled.paid_minor == 2 * usdc("149.98")
    # The odd micro-USDC of the split, and 99.99 micro-USDC per winner's break-down.
    assert settled.breakage_minor == 1 + 2 * 9_999


# --- refunds --------------------------------------------------------------------------


def test_tickets_on_a_scratched_entrant_are_refunded_and_stay_out_of_the_pool() -> None:
    stakes = [
        ticket(1, RED, "100"),
        ticket(2, GREEN, "500", BOB),  # scratched: would otherwise sweeten the pool
        ticket(3, BLUE, "300", CAROL),
    ]
    no_takeout = replace(WV, takeout_bps=0)

    settled = settle(no_takeout, stakes, won(RED, scratched=(GREEN,)))

    assert settled.refunds == (Refund(tid(2), BOB, usdc("500"), RefundReason.SCRATCHED),)
    assert (settled.staked_minor, settled.refunded_minor) == (usdc("900"), usdc("500"))
    assert settled.gross_minor == usdc("400")
    assert settled.price_of(RED) == 4_000_000
    assert settled.payouts == (Payout(tid(1), ALICE, usdc("400")),)


def test_a_void_race_refunds_every_ticket_takeout_included() -> None:
    stakes = [
        ticket(1, RED, "100"),
        ticket(2, BLUE, "300", BOB),
        ticket(3, BLUE, "5", CAROL, counted=False),
    ]

    settled = settle(WV, stakes, RaceOutcome(void=True))

    assert settled.refunds == (
        Refund(tid(1), ALICE, usdc("100"), RefundReason.VOID),
        Refund(tid(2), BOB, usdc("300"), RefundReason.VOID),
        Refund(tid(3), CAROL, usdc("5"), RefundReason.NOT_COUNTED),
    )
    assert settled.refunded_minor == settled.staked_minor == usdc("405")
    assert (settled.gross_minor, settled.takeout_minor, settled.breakage_minor) == (0, 0, 0)
    assert (settled.payouts, settled.prices) == ((), ())
    assert settled.escrow_balance_minor == 0


@pytest.mark.parametrize(
    "outcome",
    [won(GREY), won(GREY, BLUE), won()],
    ids=["the winner holds no bets", "no tied winner holds bets", "no winner at all"],
)
def test_no_winning_tickets_refunds_the_whole_pool_takeout_included(
    outcome: RaceOutcome,
) -> None:
    stakes = [ticket(1, RED, "100"), ticket(2, GREEN, "300", BOB)]

    settled = settle(WV, stakes, outcome)

    assert settled.refunds == (
        Refund(tid(1), ALICE, usdc("100"), RefundReason.NO_WINNING_TICKETS),
        Refund(tid(2), BOB, usdc("300"), RefundReason.NO_WINNING_TICKETS),
    )
    assert settled.refunded_minor == settled.staked_minor
    assert (settled.gross_minor, settled.takeout_minor, settled.breakage_minor) == (0, 0, 0)
    assert (settled.payouts, settled.prices) == ((), ())


def test_scratch_refunds_keep_their_reason_when_no_one_backed_the_winner() -> None:
    stakes = [ticket(1, RED, "100"), ticket(2, GREEN, "300", BOB)]

    settled = settle(WV, stakes, won(BLUE, scratched=(RED,)))

    assert [r.reason for r in settled.refunds] == [
        RefundReason.SCRATCHED,
        RefundReason.NO_WINNING_TICKETS,
    ]
    assert settled.refunded_minor == settled.staked_minor


def test_a_ticket_recorded_after_sales_closed_is_refunded_not_paid() -> None:
    stakes = [
        ticket(1, RED, "100"),
        ticket(2, RED, "900", BOB, counted=False),  # on the winner, but too late
        ticket(3, BLUE, "100", CAROL),
    ]
    no_takeout = replace(WV, takeout_bps=0)

    settled = settle(no_takeout, stakes, won(RED))

    assert settled.refunds == (Refund(tid(2), BOB, usdc("900"), RefundReason.NOT_COUNTED),)
    assert settled.prices == (WinnerPrice(RED, usdc("100"), 2_000_000),)
    assert settled.payouts == (Payout(tid(1), ALICE, usdc("200")),)


def test_a_winner_backed_only_after_sales_closed_holds_no_stakes() -> None:
    stakes = [ticket(1, RED, "100", counted=False), ticket(2, BLUE, "100", BOB)]

    settled = settle(WV, stakes, won(RED))

    assert [r.reason for r in settled.refunds] == [
        RefundReason.NOT_COUNTED,
        RefundReason.NO_WINNING_TICKETS,
    ]
    assert settled.payouts == ()


# --- the table, its order and its digest ------------------------------------------------


def test_rows_are_ordered_by_ticket_id_whatever_order_the_stakes_come_in() -> None:
    stakes = [
        ticket(n, (RED, BLUE, GREEN)[n % 3], str(n), (ALICE, BOB)[n % 2]) for n in range(1, 30)
    ]
    outcome = won(RED, scratched=(GREEN,))

    forward = settle(WV, stakes, outcome)
    backward = settle(WV, list(reversed(stakes)), outcome)

    assert forward == backward
    assert [p.ticket_id for p in forward.payouts] == sorted(p.ticket_id for p in forward.payouts)
    assert forward.payout_table_digest() == backward.payout_table_digest()


def test_the_payout_table_digest_is_the_documented_text_hashed() -> None:
    stakes = [ticket(2, RED, "3872", BOB), ticket(1, RED, "20000"), ticket(3, BLUE, "169041")]
    settled = settle(WV, stakes, won(RED))
    text = f"payout-table@1\n{tid(1)}:{ALICE}:132000000000\n{tid(2)}:{BOB}:25555200000\n"

    assert settled.payout_table_digest() == hashlib.sha256(text.encode()).hexdigest()
    changed = replace(
        settled, payouts=(settled.payouts[0], replace(settled.payouts[1], amount_minor=1))
    )
    assert changed.payout_table_digest() != settled.payout_table_digest()


# --- conservation ------------------------------------------------------------------------


def wv_settlement() -> Settlement:
    return settle(WV, [ticket(1, RED, "23872"), ticket(2, BLUE, "169041")], won(RED))


@pytest.mark.parametrize(
    "change",
    [
        {"breakage_minor": 1},
        {"takeout_minor": -1},
        {"subsidy_minor": 1},
        {"paid_minor": 1},
        {"refunded_minor": 1},
        {"gross_minor": 1},
        {"net_minor": 1},
    ],
)
def test_a_settlement_that_creates_or_loses_money_is_refused(change: dict[str, int]) -> None:
    settled = wv_settlement()
    (name, delta), *_ = change.items()
    tampered = replace(settled, **{name: getattr(settled, name) + delta})

    with pytest.raises(SettlementNotConservedError) as raised:
        tampered.check_conservation()
    assert raised.value.code == "settlement-not-conserved"


def test_a_payout_row_that_disagrees_with_the_total_is_refused() -> None:
    settled = wv_settlement()
    (payout,) = settled.payouts
    doubled = replace(settled, payouts=(payout, replace(payout, ticket_id=tid(9))))

    with pytest.raises(SettlementNotConservedError):
        doubled.check_conservation()


def test_a_ticket_both_paid_and_refunded_is_refused() -> None:
    settled = wv_settlement()
    (payout,) = settled.payouts
    refund = Refund(payout.ticket_id, payout.user_id, STAKE_UNIT_MINOR, RefundReason.VOID)
    both = replace(
        settled,
        refunds=(refund,),
        refunded_minor=STAKE_UNIT_MINOR,
        staked_minor=settled.staked_minor + STAKE_UNIT_MINOR,
    )

    with pytest.raises(SettlementNotConservedError, match="twice"):
        both.check_conservation()


# --- rules and their state ----------------------------------------------------------------


def test_pool_rules_round_trip_through_plain_json() -> None:
    state = FLORIDA.to_state()

    assert (
        json.loads(json.dumps(state))
        == state
        == {
            "takeout_bps": 1500,
            "break_unit_minor": 100_000,
            "min_price_minor": 1_050_000,
            "pool_type": "win",
        }
    )
    assert PoolRules.from_state(state) == FLORIDA


@pytest.mark.parametrize("pool_type", ["place", "show", "WIN", ""])
def test_only_the_win_pool_is_settled(pool_type: str) -> None:
    with pytest.raises(UnsupportedPoolTypeError) as raised:
        replace(WV, pool_type=pool_type)
    assert raised.value.code == "unsupported-pool-type"
    assert isinstance(raised.value, InvalidCommandError)


@pytest.mark.parametrize(
    "change",
    [
        {"takeout_bps": -1},
        {"takeout_bps": 10_001},
        {"takeout_bps": 18.0},
        {"takeout_bps": True},
        {"break_unit_minor": 0},
        {"break_unit_minor": -DIME},
        {"break_unit_minor": 150},  # not a multiple of 100: payouts would not be exact
        {"break_unit_minor": "100000"},
        {"min_price_minor": U - 100},
        {"min_price_minor": 1_050_050},
        {"min_price_minor": Decimal("1050000")},
    ],
)
def test_pool_rules_outside_their_ranges_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidPoolRulesError) as raised:
        replace(WV, **change)
    assert raised.value.code == "invalid-pool-rules"


@pytest.mark.parametrize(
    "change",
    [
        {"takeout_bps": 0},
        {"takeout_bps": 10_000},
        {"break_unit_minor": 100},
        {"min_price_minor": U},
    ],
)
def test_the_boundaries_of_the_pool_rules_are_accepted(change: dict[str, Any]) -> None:
    rules = replace(WV, **change)

    assert PoolRules.from_state(rules.to_state()) == rules


# --- stakes and outcomes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"amount_minor": 0},
        {"amount_minor": -STAKE_UNIT_MINOR},
        {"amount_minor": STAKE_UNIT_MINOR + 1},  # not whole cents
        {"amount_minor": 5_000},
        {"amount_minor": float(STAKE_UNIT_MINOR)},
        {"amount_minor": True},
        {"ticket_id": "0000-1"},
        {"user_id": 7},
        {"entrant_id": None},
        {"counted": 1},
    ],
)
def test_a_stake_that_is_not_whole_positive_cents_on_ids_is_refused(
    change: dict[str, Any],
) -> None:
    with pytest.raises(InvalidStakeError) as raised:
        replace(ticket(1, RED, "1"), **change)
    assert raised.value.code == "invalid-stake"


def test_a_ticket_given_twice_is_refused_not_paid_twice() -> None:
    stakes = [ticket(1, RED, "10"), ticket(2, BLUE, "10"), ticket(1, RED, "10", BOB)]

    with pytest.raises(DuplicateTicketError) as raised:
        settle(WV, stakes, won(RED))
    assert raised.value.code == "duplicate-ticket"
    assert isinstance(raised.value, InvalidStakeError)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"winners": {RED}, "void": True}, "void race has no winners"),
        ({"winners": {RED}, "scratched": {RED}}, "scratched entrant"),
        ({"winners": {"red"}}, "UUIDs"),
        ({"void": "yes"}, "void"),
        ({"winners": RED}, "sets of entrant ids"),
    ],
)
def test_an_outcome_that_cannot_have_happened_is_refused(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRaceOutcomeError, match=message) as raised:
        RaceOutcome(**fields)
    assert raised.value.code == "invalid-race-outcome"


def test_an_outcome_keeps_its_entrants_as_frozensets() -> None:
    outcome = RaceOutcome(winners={RED, BLUE}, scratched=[GREEN])  # type: ignore[arg-type]

    assert outcome == won(RED, BLUE, scratched=(GREEN,))
    assert isinstance(outcome.winners, frozenset)


def test_every_error_has_its_own_stable_code() -> None:
    errors = [
        InvalidPoolRulesError,
        UnsupportedPoolTypeError,
        InvalidStakeError,
        DuplicateTicketError,
        InvalidRaceOutcomeError,
        SettlementNotConservedError,
    ]

    assert all(issubclass(e, DomainError) for e in errors)
    assert len({e.code for e in errors}) == len(errors)
