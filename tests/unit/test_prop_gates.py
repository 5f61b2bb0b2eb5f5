"""Each safety gate at its boundary: just inside is filled, just past is rejected with the
gate's own reason code. Limits come from `RULES` (10,000 starting equity): orders up to
5,000, a position up to 8,000, gross exposure up to 12,000, leverage up to 5, 60 s between
fills on one asset, 5% daily loss, 10% drawdown; marks may be 60 s old."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from aggregates.base import acting
from aggregates.ports import Mark
from aggregates.prop_accounts import PropAccount
from aggregates.prop_rules import GATES
from tests.unit.test_prop_accounts import (
    NOON,
    RULES,
    act,
    engine_at,
    mark,
    marks,
    minutes,
    new_account,
)

D = Decimal
TINY = D("0.00000001")


def outcome(status: str, reason: str | None) -> tuple[str, str | None]:
    return status, reason


FILLED = outcome("filled", None)


def test_every_gate_has_its_own_reason_code() -> None:
    codes = [gate.code for gate in GATES]

    assert len(codes) == len(set(codes)) == 15


@pytest.mark.parametrize(
    ("frozen", "expected"), [(False, FILLED), (True, ("rejected", "account-frozen"))]
)
def test_account_frozen(frozen: bool, expected: tuple[str, str | None]) -> None:
    account = new_account()
    if frozen:
        with acting(engine_at(NOON)):
            account.freeze("RETRO-CLOCK review")

    result = act(account, "buy", "1")

    assert (result.status, result.reason) == expected


def race_account() -> PropAccount:
    """An account whose trading ends an hour after noon, as a race's does."""
    with acting(engine_at(NOON)):
        return PropAccount.open(
            uuid4(),
            owner_id=uuid4(),
            clone_id=uuid4(),
            clone_version_hash="sha256:RETRO-CLOCK",
            purpose="race",
            starting_equity=D("10000"),
            rules=RULES,
            request_fingerprint="race-1",
            trading_ends_at=NOON + timedelta(hours=1),
        )


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(-1, FILLED), (0, ("rejected", "trading-ended")), (60, ("rejected", "trading-ended"))],
)
def test_trading_ended(offset: int, expected: tuple[str, str | None]) -> None:
    """A race account fills up to its end time, never at or after it."""
    result = act(race_account(), "buy", "1", at=NOON + timedelta(hours=1, seconds=offset))

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(("offset", "marked"), [(-1, True), (0, False), (600, False)])
def test_time_after_the_end_does_not_move_a_race_account(offset: int, marked: bool) -> None:
    account = race_account()
    act(account, "buy", "1")
    at = NOON + timedelta(hours=1, seconds=offset)

    with acting(engine_at(at)):
        valuation = account.mark_to_market(marks(at, BTC="150"), at)

    assert (valuation is not None) == marked


def test_account_closed() -> None:
    account = new_account()
    with acting(engine_at(NOON)):
        account.close("done", {}, NOON)

    result = act(account, "buy", "1")

    assert (result.status, result.reason) == ("rejected", "account-closed")


@pytest.mark.parametrize(
    ("asset", "expected"), [("ETH", FILLED), ("DOGE", ("rejected", "asset-not-allowed"))]
)
def test_asset_allowed(asset: str, expected: tuple[str, str | None]) -> None:
    result = act(new_account(), "buy", "1", asset=asset, prices=marks(ETH="10", DOGE="0.1"))

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(seconds=60), FILLED),
        (timedelta(seconds=60, microseconds=1), ("rejected", "mark-stale")),
    ],
)
def test_mark_fresh(age: timedelta, expected: tuple[str, str | None]) -> None:
    observed = NOON - age

    result = act(new_account(), "buy", "1", prices={"BTC": Mark("BTC", D("100"), observed, "t")})

    assert (result.status, result.reason) == expected


def test_mark_unavailable() -> None:
    result = act(new_account(), "buy", "1", prices={"BTC": None})

    assert (result.status, result.reason) == ("rejected", "mark-unavailable")


@pytest.mark.parametrize(
    ("leverage", "expected"),
    [(D("5"), FILLED), (D("5") + TINY, ("rejected", "leverage-too-high"))],
)
def test_max_leverage(leverage: Decimal, expected: tuple[str, str | None]) -> None:
    result = act(new_account(), "buy", "1", leverage=leverage)

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(
    ("notional", "expected"),
    [(D("0.000001"), FILLED), (D("0.00000099"), ("rejected", "order-too-small"))],
)
def test_order_size_after_rounding(notional: Decimal, expected: tuple[str, str | None]) -> None:
    result = act(new_account(), "buy", notional=notional)

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [("50", FILLED), ("50.00000001", ("rejected", "order-notional-too-large"))],
)
def test_max_order_notional(size: str, expected: tuple[str, str | None]) -> None:
    result = act(new_account(), "buy", size)

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [("30", FILLED), ("30.00000001", ("rejected", "position-notional-too-large"))],
)
def test_max_position_notional(size: str, expected: tuple[str, str | None]) -> None:
    account = new_account()
    act(account, "buy", "50")

    result = act(account, "buy", size, at=minutes(1))

    assert (result.status, result.reason) == expected


def test_reducing_a_position_above_its_limit_is_allowed() -> None:
    account = new_account()
    act(account, "buy", "50")
    act(account, "buy", "30", at=minutes(1))
    mark(account, minutes(2), BTC="120")

    result = act(account, "sell", "1", at=minutes(3), prices=marks(minutes(3), BTC="120"))

    assert result.status == "filled"


@pytest.mark.parametrize(
    ("size", "expected"),
    [("400", FILLED), ("400.00000001", ("rejected", "gross-exposure-too-large"))],
)
def test_max_gross_exposure(size: str, expected: tuple[str, str | None]) -> None:
    account = new_account()
    act(account, "buy", "50")
    act(account, "buy", "30", at=minutes(1))

    result = act(account, "sell", size, asset="ETH", at=minutes(1))

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        (timedelta(seconds=60), FILLED),
        (timedelta(seconds=60) - timedelta(microseconds=1), ("rejected", "cadence-too-fast")),
    ],
)
def test_per_asset_cadence(wait: timedelta, expected: tuple[str, str | None]) -> None:
    account = new_account()
    act(account, "buy", "1")

    result = act(account, "buy", "1", at=NOON + wait)

    assert (result.status, result.reason) == expected


def test_cadence_is_per_asset() -> None:
    account = new_account()
    act(account, "buy", "1")

    result = act(account, "buy", "1", asset="ETH")

    assert result.status == "filled"


@pytest.mark.parametrize(
    ("size", "expected"),
    [("50", FILLED), ("50.00000001", ("rejected", "reduce-only-would-grow"))],
)
def test_reduce_only_cannot_flip(size: str, expected: tuple[str, str | None]) -> None:
    account = new_account()
    act(account, "buy", "50")

    result = act(account, "sell", size, at=minutes(1), reduce_only=True)

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_reduce_only_cannot_open_or_add(side: str) -> None:
    account = new_account()
    if side == "buy":
        act(account, "buy", "1")

    result = act(account, side, "1", at=minutes(1), reduce_only=True)

    assert (result.status, result.reason) == ("rejected", "reduce-only-would-grow")


@pytest.mark.parametrize(
    ("btc", "expected"),
    [("90", FILLED), ("89.99999999", ("rejected", "daily-loss-limit"))],
)
def test_daily_loss_limit(btc: str, expected: tuple[str, str | None]) -> None:
    account = new_account()
    act(account, "buy", "50")

    result = act(
        account, "buy", "1", asset="ETH", at=minutes(1), prices=marks(minutes(1), BTC=btc, ETH="10")
    )

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [("50", FILLED), ("50.0001", ("rejected", "daily-loss-limit"))],
)
def test_daily_loss_counts_the_fee_of_the_order_itself(
    size: str, expected: tuple[str, str | None]
) -> None:
    account = new_account(replace(RULES, fee_bps=D("10")))
    act(account, "buy", "50")  # fee 5: equity 9,995
    prices = marks(minutes(1), BTC="90.11", ETH="10")  # equity 9,995 - 494.5 = 9,500.5

    result = act(account, "sell", size, asset="ETH", at=minutes(1), prices=prices)

    assert (result.status, result.reason) == expected


@pytest.mark.parametrize(
    ("btc", "expected"),
    [("120", FILLED), ("119.99999999", ("rejected", "max-drawdown"))],
)
def test_max_drawdown(btc: str, expected: tuple[str, str | None]) -> None:
    account = new_account()
    act(account, "buy", "50")
    mark(account, minutes(1), BTC="140")  # peak equity 12,000: the floor is 11,000

    result = act(
        account, "buy", "1", asset="ETH", at=minutes(2), prices=marks(minutes(2), BTC=btc, ETH="10")
    )

    assert (result.status, result.reason) == expected
