"""What a prop account records and answers, field by field: the opened account, the state
of requests, results and valuations, the position a reader sees, rejections, fill numbers,
flattening, breaches, and the edges of a position's arithmetic.

Equivalent mutants that survive by design (`make mutate`):
- `Position.fill`: `quantity >= 0` for `quantity > 0` (twice) only differs for a fill of
  zero, which the order-size gate never lets through; `self.size >= 0` for `self.size > 0`
  only differs at size zero, which `self.size == 0 or` has already decided.
- `within`: `quantize(QUANTUM)` without the wide context only differs beyond 28 digits, and
  `within` quantizes only amounts already checked to be at most 1e12.
- `_flatten`: the fill's `leverage=None` is never read (a flatten closes the whole position,
  and a full close keeps the position's own leverage); `prices` (or `None`) is never read
  either, since the valuation after a flatten holds no position.
- `_flatten`: `side="sell" if position.size >= 0` only differs at size zero, and a position
  of size zero is never held.
- `revalue`: `status == CLOSED and not positions` for `or`: a flat account holds no asset,
  so no mark is newer for it and nothing is recorded either way.
- `_apply_fill`: `positions.pop(asset)` without a default: a fill that leaves size zero
  always closes a position the account holds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from aggregates.base import acting
from aggregates.prop_accounts import (
    MAX_AMOUNT,
    ActionRequest,
    ActionResult,
    InvalidPropAccountError,
    InvalidPropActionError,
    Position,
    PropAccount,
    to_quantum,
    utc_day,
    value,
)
from aggregates.prop_rules import BreachAction
from tests.unit.test_prop_accounts import (
    NOON,
    RULES,
    START,
    act,
    engine_at,
    mark,
    marks,
    minutes,
    new_account,
)

D = Decimal


def events(account: PropAccount) -> list[Any]:
    return list(account.collect_events())


def test_an_account_keeps_what_it_was_opened_with() -> None:
    ids = {"owner_id": uuid4(), "clone_id": uuid4()}
    account_id = uuid4()
    with acting(engine_at(NOON)):
        account = PropAccount.open(
            account_id,
            clone_version_hash="sha256:abc",
            purpose="audition",
            starting_equity=MAX_AMOUNT,  # the largest allowed
            rules=RULES,
            request_fingerprint="fp-1",
            **ids,
        )

    assert (account.id, account.owner_id, account.clone_id) == (
        account_id,
        ids["owner_id"],
        ids["clone_id"],
    )
    assert (account.clone_version_hash, account.purpose) == ("sha256:abc", "audition")
    assert (account.request_fingerprint, account.starting_equity) == ("fp-1", MAX_AMOUNT)


def test_a_request_of_the_largest_size_is_allowed_and_its_state_names_every_field() -> None:
    request = ActionRequest("a-1", "BTC", "buy", size=MAX_AMOUNT, reduce_only=True, leverage=D(2))

    assert request.to_state() == {
        "client_action_id": "a-1",
        "asset": "BTC",
        "side": "buy",
        "size": MAX_AMOUNT,
        "notional": None,
        "reduce_only": True,
        "leverage": D(2),
    }


def test_a_valuation_is_exact_money_in_every_field() -> None:
    held = value(D("100"), {"BTC": Position(D("2"), D("150"), D("2"))}, {"BTC": D("100")})
    flat = value(D("100"), {}, {})

    assert held.to_state() == {
        "balance": D("100"),
        "unrealized": D("50"),
        "equity": D("150"),
        "margin_used": D("100"),
        "gross_exposure": D("200"),
    }
    assert all(isinstance(v, Decimal) for v in flat.to_state().values())


def test_to_quantum_has_room_for_big_intermediate_values() -> None:
    # 34 digits: past the default context's 28, where quantize would refuse.
    assert to_quantum(D("3333333333333333333333333.333333335")) == D(
        "3333333333333333333333333.33333334"
    )


@pytest.fixture
def far_east() -> Iterator[None]:
    """The process's local time zone 14 hours ahead of UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("far_east")
def test_a_day_is_the_utc_day_whatever_the_local_time_zone() -> None:
    assert utc_day(datetime(2026, 11, 25, 12, tzinfo=UTC)) == "2026-11-25"


# --- results and the position a reader sees --------------------------------------------------


def test_a_fill_answers_the_position_as_a_reader_sees_it_at_the_mark() -> None:
    account = new_account()

    filled = act(account, "buy", "1", leverage=D("2"))
    flat = account.position_view("ETH")

    assert (
        filled.position
        == account.position_view("BTC")
        == {
            "asset": "BTC",
            "size": D("1"),
            "average_entry_price": D("100"),
            "leverage": D("2"),
            "mark_price": D("100"),
            "mark_source": "test-feed",
            "mark_observed_at": NOON,
            "notional": D("100"),
            "unrealized_pnl": D("0"),
            "margin": D("50"),
        }
    )
    assert flat == {
        "asset": "ETH",
        "size": D("0"),
        "average_entry_price": None,
        "leverage": D("1"),
        "mark_price": None,
        "mark_source": None,
        "mark_observed_at": None,
        "notional": None,
        "unrealized_pnl": None,
        "margin": None,
    }
    assert ActionResult.from_state(filled.to_state()) == filled


def test_a_rejection_is_recorded_with_the_request_and_its_detail() -> None:
    account = new_account()
    act(account, "buy", "1")
    events(account)

    rejected = act(account, "buy", "1", asset="DOGE", prices=marks(DOGE="0.1"))
    [recorded] = events(account)

    detail = "DOGE is not traded here; allowed: BTC, ETH"
    assert (rejected.status, rejected.reason, rejected.detail) == (
        "rejected",
        "asset-not-allowed",
        detail,
    )
    assert rejected.position == account.position_view("DOGE")
    assert type(recorded).__name__ == "ActionRejected"
    assert (recorded.reason, recorded.detail) == ("asset-not-allowed", detail)
    assert recorded.request["asset"] == "DOGE" and recorded.request["size"] == D("1")
    assert recorded.client_action_id == recorded.request["client_action_id"]
    assert ActionResult.from_state(rejected.to_state()) == rejected


def test_fills_are_numbered_in_order_and_record_the_fee_and_slippage_rates() -> None:
    rules = replace(RULES, fee_bps=D("10"), slippage_bps=D("5"))
    account = new_account(rules)

    first = act(account, "buy", "1")
    second = act(account, "buy", "1", asset="ETH")

    assert first.fill is not None and second.fill is not None
    assert (first.fill["number"], second.fill["number"]) == (1, 2)
    assert (first.fill["fee_bps"], first.fill["slippage_bps"]) == (D("10"), D("5"))


def test_the_valuation_after_a_fill_counts_a_position_of_one() -> None:
    account = new_account()
    act(account, "buy", "1")

    [filled] = [e for e in events(account) if type(e).__name__ == "Filled"]

    assert filled.valuation["gross_exposure"] == D("100")


def test_the_check_after_a_fill_counts_its_realized_loss_and_fee() -> None:
    account = new_account(replace(RULES, fee_bps=D("10")))
    act(account, "buy", "50")  # fee 5: balance 9,995
    prices = marks(minutes(1), BTC="90.11")  # equity 9,500.5, just above the 9,500 floor

    # Selling realizes -98.9 (equity unchanged) and pays a fee of 0.9011: below the floor.
    result = act(account, "sell", "10", at=minutes(1), prices=prices)

    assert (result.status, result.reason) == ("rejected", "daily-loss-limit")


# --- marks, breaches, freezing, flattening ----------------------------------------------------


def test_a_mark_no_newer_than_the_recorded_one_is_ignored() -> None:
    account = new_account()
    act(account, "buy", "1")
    events(account)

    with acting(engine_at(minutes(1))):
        same_moment = account.mark_to_market(marks(NOON, BTC="90"), minutes(1))

    assert same_moment is None and events(account) == []


def test_a_flat_account_is_never_revalued() -> None:
    account = new_account()
    events(account)

    with acting(engine_at(minutes(1))):
        revalued = account.revalue(marks(minutes(1), BTC="90"), minutes(1))

    assert revalued is None and events(account) == []


@pytest.mark.parametrize("action", [BreachAction.FREEZE, BreachAction.FLATTEN])
def test_a_breach_records_the_equity_the_floor_and_why(action: BreachAction) -> None:
    account = new_account(replace(RULES, breach_action=action))
    act(account, "buy", "50")
    events(account)

    mark(account, minutes(1), BTC="89")  # equity 9,450 under the 9,500 daily floor
    recorded = {type(e).__name__: e for e in events(account)}

    breached = recorded["Breached"]
    assert (breached.rule, breached.equity, breached.floor) == (
        "daily-loss-limit",
        D("9450"),
        D("9500"),
    )
    assert recorded["Frozen"].reason == "breach: daily-loss-limit"
    if action is BreachAction.FLATTEN:
        assert recorded["Flattened"].reason == "breach: daily-loss-limit"


def test_freezing_unfreezing_and_closing_record_their_reasons() -> None:
    account = new_account()
    with acting(engine_at(NOON)):
        account.freeze("review")
        account.unfreeze("cleared")
        account.close("done", {}, NOON)

    reasons = [(type(e).__name__, e.reason) for e in events(account) if hasattr(e, "reason")]

    assert reasons == [("Frozen", "review"), ("Unfrozen", "cleared"), ("Closed", "done")]


@pytest.mark.parametrize("closing", [False, True])
def test_flattening_closes_each_position_in_turn_and_books_pnl_and_fees(closing: bool) -> None:
    account = new_account(replace(RULES, fee_bps=D("10")))
    act(account, "buy", "0.5", leverage=D("2"))  # fee 0.05
    act(account, "sell", "20", asset="ETH")  # fee 0.2
    events(account)

    later = marks(minutes(2), BTC="110", ETH="9")
    with acting(engine_at(minutes(2))):
        if closing:
            account.close("wind down", later, minutes(2))
        else:
            account.flatten("wind down", later, minutes(2))
    flattened = next(e for e in events(account) if type(e).__name__ == "Flattened")

    btc, eth = flattened.fills
    assert (btc["number"], btc["asset"], btc["side"]) == (3, "BTC", "sell")
    assert (eth["number"], eth["asset"], eth["side"]) == (4, "ETH", "buy")
    assert (btc["realized_pnl"], eth["realized_pnl"]) == (D("5"), D("20"))
    assert (btc["fee"], eth["fee"]) == (D("0.055"), D("0.18"))
    balance = START - D("0.05") - D("0.2") + D("5") + D("20") - D("0.055") - D("0.18")
    assert flattened.reason == "wind down"
    assert flattened.valuation["balance"] == balance == account.balance
    assert account.positions == {}


# --- a position's arithmetic at its edges ------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "fill", "after", "realized"),
    [
        # A long of exactly one, half closed above its entry.
        (
            Position(D("1"), D("100")),
            (D("-0.5"), D("120"), D("1")),
            Position(D("0.5"), D("50")),
            D("10"),
        ),
        # Closing part of a position keeps the position's own leverage.
        (
            Position(D("2"), D("200"), D("3")),
            (D("-1"), D("100"), D("1")),
            Position(D("1"), D("100"), D("3")),
            D("0"),
        ),
        # Through zero: the rest opens the other side at the fill's leverage.
        (
            Position(D("1"), D("100"), D("1")),
            (D("-3"), D("100"), D("2")),
            Position(D("-2"), D("-200"), D("2")),
            D("0"),
        ),
    ],
)
def test_a_fill_moves_the_position_and_realizes_pnl(
    before: Position, fill: tuple[Decimal, Decimal, Decimal], after: Position, realized: Decimal
) -> None:
    assert before.fill(*fill) == (after, realized)


def test_an_amount_or_starting_equity_out_of_range_says_what_is_allowed() -> None:
    with pytest.raises(InvalidPropActionError) as request:
        ActionRequest("a-1", "BTC", "buy", size=MAX_AMOUNT + 1)
    with pytest.raises(InvalidPropAccountError) as account:
        new_account(start=D("-1"))

    assert str(request.value) == (
        "size and notional are positive, at most 1000000000000, to 8 decimal places"
    )
    assert str(account.value) == (
        "starting equity is positive, at most 1000000000000, to 8 decimal places"
    )
