"""Each gate's rejection explains itself: the detail recorded in the `Rejected` event (and
answered to the engine) carries the numbers that failed. Also the edges of the reduce-only
rule and of the growing-position limits, and which rule-set version is picked.

Equivalent mutants that survive by design (`make mutate`):
- `check_reduce_only`: `(after >= 0) == (before > 0)` for `(after > 0) == ...` only differs
  at `after == 0`, which the `after == 0 or` before it already decides; `(before >= 0)` for
  `(before > 0)` only differs at `before == 0`, where `abs(after) < abs(before)` is false.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from aggregates.prop_rules import (
    CATALOGUE,
    GateRejection,
    UnknownRuleSetError,
    check_account_open,
    check_asset_allowed,
    check_cadence,
    check_daily_loss,
    check_drawdown,
    check_gross_exposure,
    check_leverage,
    check_mark_fresh,
    check_order_notional,
    check_order_size,
    check_position_notional,
    check_reduce_only,
    rule_set,
)
from tests.unit.test_prop_accounts import NOON, RULES

D = Decimal


@pytest.mark.parametrize(
    ("check", "code", "detail"),
    [
        (lambda: check_account_open("closed"), "account-closed", "the account is closed"),
        (lambda: check_account_open("frozen"), "account-frozen", "the account is frozen"),
        (
            lambda: check_asset_allowed(RULES, "DOGE"),
            "asset-not-allowed",
            f"DOGE is not traded here; allowed: {', '.join(RULES.allowed_assets)}",
        ),
        (
            lambda: check_mark_fresh(None, NOON, timedelta(seconds=60)),
            "mark-unavailable",
            "no mark price has been observed for the asset",
        ),
        (
            lambda: check_mark_fresh(NOON - timedelta(seconds=90), NOON, timedelta(seconds=60)),
            "mark-stale",
            "the mark is 90s old; at most 60s",
        ),
        (
            lambda: check_leverage(RULES, D("6")),
            "leverage-too-high",
            f"leverage 6 is above {RULES.max_leverage}",
        ),
        (
            lambda: check_order_size(D("0")),
            "order-too-small",
            "the notional buys less than 1e-8 of the asset",
        ),
        (
            lambda: check_reduce_only(True, D("1"), D("2")),
            "reduce-only-would-grow",
            "the position would go from 1 to 2",
        ),
        (
            lambda: check_cadence(RULES, NOON - timedelta(seconds=15), NOON),
            "cadence-too-fast",
            f"15s since the last fill on this asset; at least {RULES.min_action_interval}s",
        ),
        (
            lambda: check_order_notional(RULES, D("10000"), D("6000")),
            "order-notional-too-large",
            f"order notional 6000 > {RULES.max_order_notional * D('10000')}",
        ),
        (
            lambda: check_position_notional(RULES, D("10000"), D("0"), D("9000")),
            "position-notional-too-large",
            f"position notional 9000 > {RULES.max_position_notional * D('10000')}",
        ),
        (
            lambda: check_gross_exposure(RULES, D("10000"), D("0"), D("13000")),
            "gross-exposure-too-large",
            f"gross exposure 13000 > {RULES.max_gross_exposure * D('10000')}",
        ),
        (
            lambda: check_daily_loss(D("9000"), D("9500")),
            "daily-loss-limit",
            "equity 9000 would be below 9500",
        ),
        (
            lambda: check_drawdown(D("9000"), D("9500")),
            "max-drawdown",
            "equity 9000 would be below 9500",
        ),
    ],
)
def test_a_rejection_names_its_gate_and_the_numbers_that_failed(
    check: Callable[[], None], code: str, detail: str
) -> None:
    with pytest.raises(GateRejection) as rejected:
        check()

    assert (rejected.value.gate.code, rejected.value.detail) == (code, detail)
    assert str(rejected.value) == f"{code}: {detail}"


@pytest.mark.parametrize(
    ("before", "after", "allowed"),
    [
        ("5", "0.5", True),  # a long reduced to below one unit
        ("0.5", "0.25", True),  # a long of less than one unit, reduced
        ("-0.5", "-0.25", True),
        ("0.5", "0", True),
        ("0", "0", False),  # nothing to reduce: not a reduction
        ("0.5", "-0.25", False),  # crossing zero is a new position
        ("-0.5", "0.25", False),
        ("0.5", "0.75", False),
    ],
)
def test_reduce_only_allows_only_a_move_toward_zero(before: str, after: str, allowed: bool) -> None:
    try:
        check_reduce_only(True, D(before), D(after))
    except GateRejection:
        assert not allowed
    else:
        assert allowed
    check_reduce_only(False, D(before), D(after))  # without the flag, any move is allowed


@pytest.mark.parametrize("check", [check_position_notional, check_gross_exposure])
def test_an_unchanged_notional_above_the_limit_is_not_growing(
    check: Callable[..., None],
) -> None:
    # Above every limit already (marks moved), and not growing: allowed.
    check(RULES, D("10000"), D("20000"), D("20000"))
    with pytest.raises(GateRejection):
        check(RULES, D("10000"), D("20000"), D("20000.00000001"))


def test_a_named_version_is_that_version_and_none_names_the_latest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = replace(RULES, name="two-versions", version=1)
    second = replace(RULES, name="two-versions", version=2)
    monkeypatch.setitem(CATALOGUE, "two-versions", {1: first, 2: second})

    assert rule_set("two-versions", 1) is first
    assert rule_set("two-versions", 2) is second
    assert rule_set("two-versions") is second


def test_an_unknown_rule_set_names_what_was_wanted_and_what_is_known() -> None:
    known = ", ".join(f"{n}@{v}" for n, vs in CATALOGUE.items() for v in vs)

    with pytest.raises(UnknownRuleSetError) as by_version:
        rule_set("audition", 99)
    with pytest.raises(UnknownRuleSetError) as by_name:
        rule_set("nope")

    assert str(by_version.value) == f"no rule set 'audition@99'; known: {known}"
    assert str(by_name.value) == f"no rule set 'nope'; known: {known}"
    assert "audition@1" in known and ", " in known
