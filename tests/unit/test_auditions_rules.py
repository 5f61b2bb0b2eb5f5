"""The audition rules on their own, and the figures the prop account keeps for them."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from aggregates.audition_rules import AccountFigures, AuditionRules, judge
from aggregates.prop_rules import RuleSet, rule_set
from tests.unit.test_auditions import RULES
from tests.unit.test_prop_accounts import NOON, act, mark, minutes, new_account, replayed

D = Decimal
# Every rule met with room to spare: +6%, 2% drawdown, 1% daily loss, 3 fills on 2 days
# (against the `audition@1` limits RULES takes: 5% a day, 10% from the peak).
GOOD = AccountFigures(
    starting_equity=D("10000"),
    equity=D("10600"),
    worst_drawdown=D("200"),
    worst_daily_loss=D("100"),
    trades=3,
    active_days=2,
)


@pytest.mark.parametrize(
    "prop_rules",
    [
        rule_set("audition", 1),
        rule_set("race", 1),
        replace(rule_set("audition", 1), daily_loss_limit=D("0.02"), max_drawdown=D("0.07")),
    ],
)
def test_the_loss_limits_are_the_prop_rule_sets_own(prop_rules: RuleSet) -> None:
    rules = AuditionRules.on(
        prop_rules,
        duration_seconds=3600,
        starting_equity=D("10000"),
        profit_target=D("0.05"),
        min_trades=1,
        min_active_days=1,
        free_retries=0,
        retry_window_seconds=0,
    )

    assert (rules.daily_loss_limit, rules.max_drawdown) == (
        prop_rules.daily_loss_limit,
        prop_rules.max_drawdown,
    )
    assert (rules.prop_rule_set, rules.prop_rule_set_version) == (
        prop_rules.name,
        prop_rules.version,
    )
    assert AuditionRules.from_state(rules.to_state()) == rules


def test_an_attempt_meeting_every_rule_passes_with_its_metrics() -> None:
    verdict = judge(RULES, GOOD, due=True)

    assert verdict is not None and verdict.passed and verdict.failed_rules == []
    assert verdict.metrics == {
        "equity": D("10600"),
        "total_return": D("0.06"),
        "max_drawdown": D("0.02"),
        "worst_daily_loss": D("0.01"),
        "trades": 3,
        "active_days": 2,
        "breach": None,
    }


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"equity": D("10499.99")}, "profit-target"),
        ({"worst_daily_loss": D("500.01")}, "daily-loss-limit"),
        ({"worst_drawdown": D("1000.01")}, "max-drawdown"),
        ({"trades": 1}, "min-trades"),
        ({"active_days": 1}, "min-active-days"),
    ],
)
def test_each_rule_missed_is_named(change: dict[str, object], rule: str) -> None:
    verdict = judge(RULES, replace(GOOD, **change), due=True)  # type: ignore[arg-type]

    assert verdict is not None and not verdict.passed
    assert verdict.failed_rules == [rule]


def test_a_rule_met_exactly_is_met() -> None:
    edge = replace(GOOD, equity=D("10500"), worst_drawdown=D("1000"), worst_daily_loss=D("500"))

    verdict = judge(RULES, edge, due=True)

    assert verdict is not None and verdict.passed


def test_a_breach_before_the_due_time_fails_on_the_breached_rule_alone() -> None:
    verdict = judge(RULES, replace(GOOD, trades=0, breach="daily-loss-limit"), due=False)

    assert verdict is not None and not verdict.passed
    assert verdict.failed_rules == ["daily-loss-limit"]


def test_a_breach_fails_at_the_due_time_whatever_the_figures() -> None:
    verdict = judge(RULES, replace(GOOD, breach="max-drawdown"), due=True)

    assert verdict is not None and verdict.failed_rules == ["max-drawdown"]


def test_nothing_is_judged_before_the_due_time_without_a_breach() -> None:
    assert judge(RULES, GOOD, due=False) is None


# --- the figures the prop account keeps (no fees, no slippage in these rules) --------------


def test_the_account_keeps_its_worst_drawdown_from_the_peak() -> None:
    account = new_account()
    act(account, "buy", "40")  # 4000 of BTC at 100
    mark(account, minutes(1), BTC="110")  # the peak: 10400
    mark(account, minutes(2), BTC="105")  # 10200
    mark(account, minutes(3), BTC="108")  # 10320

    assert (account.peak_equity, account.worst_drawdown) == (D("10400"), D("200"))


def test_the_account_keeps_its_worst_fall_below_the_days_reference() -> None:
    account = new_account()
    act(account, "buy", "40")
    mark(account, minutes(1), BTC="98")  # 9920 against the day's 10000

    assert account.worst_daily_loss == D("80")


def test_the_account_counts_the_utc_days_with_a_fill() -> None:
    account = new_account()
    act(account, "buy", "1")
    act(account, "buy", "1", asset="ETH", at=minutes(60))
    act(account, "sell", "1", at=NOON + timedelta(days=1))

    assert account.active_days == ("2026-11-25", "2026-11-26")


def test_the_figures_replay_from_the_events() -> None:
    account = new_account()
    act(account, "buy", "40")
    mark(account, minutes(1), BTC="95")

    again = replayed(account)

    assert (again.worst_drawdown, again.worst_daily_loss, again.active_days) == (
        D("200"),
        D("200"),
        ("2026-11-25",),
    )


# --- mutation gaps --------------------------------------------------------------------------
# `fraction`'s `rounding=ROUND_HALF_EVEN` dropped (or None) survives: it is equivalent, the
# default decimal context already rounds half-even, and nothing here changes the context.


def test_the_minimum_number_of_trades_is_enough() -> None:
    exactly = replace(GOOD, trades=RULES.min_trades)
    fewer = replace(GOOD, trades=RULES.min_trades - 1)

    assert judge(RULES, exactly, due=True) is not None
    assert judge(RULES, exactly, due=True).passed is True  # type: ignore[union-attr]
    assert judge(RULES, fewer, due=True).failed_rules == ["min-trades"]  # type: ignore[union-attr]


def test_a_breach_of_another_rule_is_listed_with_the_rules_failed_at_due_time() -> None:
    breached = replace(GOOD, breach="max-position")

    verdict = judge(RULES, breached, due=True)

    assert verdict is not None and verdict.failed_rules == ["max-position"]


def test_a_breach_before_due_time_fails_on_it_alone_with_the_metrics() -> None:
    breached = replace(GOOD, breach="daily-loss-limit")

    verdict = judge(RULES, breached, due=False)

    assert verdict is not None
    assert verdict.passed is False and verdict.failed_rules == ["daily-loss-limit"]
    assert verdict.metrics == judge(RULES, breached, due=True).metrics  # type: ignore[union-attr]
    assert verdict.metrics["breach"] == "daily-loss-limit"
    assert judge(RULES, GOOD, due=False) is None


def test_the_terms_given_are_the_terms_kept() -> None:
    prop_rules = rule_set("audition", 1)

    rules = AuditionRules.on(
        prop_rules,
        duration_seconds=7200,
        starting_equity=D("5000"),
        profit_target=D("0.07"),
        min_trades=4,
        min_active_days=3,
        free_retries=2,
        retry_window_seconds=600,
    )

    assert rules == AuditionRules(
        duration_seconds=7200,
        starting_equity=D("5000"),
        profit_target=D("0.07"),
        daily_loss_limit=prop_rules.daily_loss_limit,
        max_drawdown=prop_rules.max_drawdown,
        min_trades=4,
        min_active_days=3,
        free_retries=2,
        retry_window_seconds=600,
        prop_rule_set=prop_rules.name,
        prop_rule_set_version=prop_rules.version,
    )
