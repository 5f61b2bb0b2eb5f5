"""The prop account on its own: fills, positions, PnL, mark-to-market, breaches, controls.

Given an account, when a command, then its events, state or error. No database.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from aggregates.base import CommandContext, acting
from aggregates.ports import Mark
from aggregates.prop_accounts import (
    ActionRequest,
    ActionResult,
    InvalidPropAccountError,
    InvalidPropActionError,
    Position,
    PropAccount,
    PropAccountClosedError,
    PropAccountFrozenError,
    PropAccountNotFrozenError,
)
from aggregates.prop_rules import BreachAction, RuleSet, UnknownRuleSetError, rule_set

D = Decimal
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MAX_MARK_AGE = timedelta(seconds=60)
START = D("10000")

# Round numbers so every figure below can be checked by hand: no fees, no slippage, and
# limits of 50% (order), 80% (position), 120% (gross), 5% daily loss, 10% drawdown.
RULES = RuleSet(
    name="RETRO-CLOCK",
    version=1,
    allowed_assets=("BTC", "ETH"),
    max_leverage=D("5"),
    max_order_notional=D("0.5"),
    max_position_notional=D("0.8"),
    max_gross_exposure=D("1.2"),
    min_action_interval=60,
    daily_loss_limit=D("0.05"),
    max_drawdown=D("0.10"),
    fee_bps=D("0"),
    slippage_bps=D("0"),
    breach_action=BreachAction.FREEZE,
)


def engine_at(at: datetime) -> CommandContext:
    return CommandContext(actor="service:engine", occurred_at=at, correlation_id="req-prop")


def new_account(rules: RuleSet = RULES, start: Decimal = START) -> PropAccount:
    with acting(engine_at(NOON)):
        return PropAccount.open(
            uuid4(),
            owner_id=uuid4(),
            clone_id=uuid4(),
            clone_version_hash="sha256:RETRO-CLOCK",
            purpose="audition",
            starting_equity=start,
            rules=rules,
            request_fingerprint="open-1",
        )


def marks(at: datetime = NOON, **prices: str) -> dict[str, Mark | None]:
    return {asset: Mark(asset, D(price), at, "test-feed") for asset, price in prices.items()}


def act(
    account: PropAccount,
    side: str,
    size: str | None = None,
    *,
    asset: str = "BTC",
    at: datetime = NOON,
    prices: dict[str, Mark | None] | None = None,
    **request: Any,
) -> ActionResult:
    """One action at `at`, with every mark observed at `at` (BTC 100, ETH 10 by default)."""
    given = prices if prices is not None else marks(at, BTC="100", ETH="10")
    with acting(engine_at(at)):
        return account.submit(
            ActionRequest(
                uuid4().hex, asset, side, size=None if size is None else D(size), **request
            ),
            given,
            at,
            MAX_MARK_AGE,
        )


def mark(account: PropAccount, at: datetime, **prices: str) -> None:
    with acting(engine_at(at)):
        account.mark_to_market(marks(at, **prices), at)


def minutes(n: float) -> datetime:
    return NOON + timedelta(minutes=n)


def event_names(account: PropAccount) -> list[str]:
    return [type(e).__name__ for e in account.collect_events()]


def replayed(account: PropAccount) -> PropAccount:
    rebuilt: Any = None
    for event in account.collect_events():
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, PropAccount)
    return rebuilt


# --- opening ---------------------------------------------------------------------------------


def test_an_account_opens_with_its_rule_set_pinned_in_the_event() -> None:
    account = new_account()

    opened = account.collect_events()[0]

    assert isinstance(opened, PropAccount.Opened)
    assert RuleSet.from_state(opened.rules) == RULES
    assert account.status == "open" and account.equity == START


def test_replay_takes_the_rules_from_the_event_not_the_catalogue() -> None:
    account = new_account(rules=replace(RULES, name="not-in-any-catalogue", version=7))

    rebuilt = replayed(account)

    assert rebuilt.rule_set.key == "not-in-any-catalogue@7"


def test_the_version_in_force_is_the_latest_unless_one_is_named() -> None:
    assert rule_set("audition") == rule_set("audition", 1)

    with pytest.raises(UnknownRuleSetError):
        rule_set("audition", 99)


@pytest.mark.parametrize("start", ["0", "-5", "1e13", "0.000000001"])
def test_a_starting_equity_out_of_range_is_refused(start: str) -> None:
    with pytest.raises(InvalidPropAccountError):
        new_account(start=D(start))


# --- requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_fields",
    [
        {"size": None, "notional": None},
        {"size": D("1"), "notional": D("100")},
        {"size": D("0")},
        {"size": D("0.000000001")},
        {"size": D("NaN")},
        {"size": D("1"), "leverage": D("0.5")},
        {"size": D("1"), "side": "hold"},
    ],
)
def test_a_malformed_action_is_refused_before_any_gate(request_fields: dict[str, Any]) -> None:
    fields = {"client_action_id": "a-1", "asset": "BTC", "side": "buy", **request_fields}

    with pytest.raises(InvalidPropActionError):
        ActionRequest(**fields)


def test_equal_requests_have_equal_fingerprints() -> None:
    first = ActionRequest("a-1", "BTC", "buy", size=D("1.0"))
    second = ActionRequest("a-1", "BTC", "buy", size=D("1"))

    assert first.fingerprint == second.fingerprint
    assert first.fingerprint != replace(first, side="sell").fingerprint


# --- positions and PnL -----------------------------------------------------------------------


def test_opening_long_buys_at_the_mark() -> None:
    account = new_account()

    result = act(account, "buy", "10")

    assert result.status == "filled" and result.fill is not None
    assert result.fill["price"] == D("100") and result.fill["realized_pnl"] == 0
    assert account.position("BTC") == Position(D("10"), D("1000"), D("1"))


def test_adding_to_a_position_averages_the_entry() -> None:
    account = new_account()
    act(account, "buy", "10")

    act(account, "buy", "10", at=minutes(1), prices=marks(minutes(1), BTC="110"))

    assert account.position("BTC").average_entry == D("105")
    assert account.realized_pnl == 0


def test_a_partial_close_realizes_pnl_on_the_closed_part() -> None:
    account = new_account()
    act(account, "buy", "10")

    act(account, "sell", "4", at=minutes(1), prices=marks(minutes(1), BTC="120"))

    assert account.realized_pnl == D("80")
    assert account.position("BTC") == Position(D("6"), D("600"), D("1"))
    assert account.valuation().unrealized == D("120")


def test_a_full_close_leaves_no_position_and_all_pnl_realized() -> None:
    account = new_account()
    act(account, "buy", "10")

    act(account, "sell", "10", at=minutes(1), prices=marks(minutes(1), BTC="90"))

    assert "BTC" not in account.positions
    assert account.realized_pnl == D("-100") and account.equity == D("9900")


def test_a_flip_closes_the_long_and_opens_a_short_at_the_fill_price() -> None:
    account = new_account()
    act(account, "buy", "10")

    act(account, "sell", "25", at=minutes(1), prices=marks(minutes(1), BTC="110"))

    assert account.realized_pnl == D("100")
    assert account.position("BTC") == Position(D("-15"), D("-1650"), D("1"))


def test_a_short_gains_when_the_price_falls() -> None:
    account = new_account()
    act(account, "sell", "10")

    act(account, "buy", "10", at=minutes(1), prices=marks(minutes(1), BTC="80"))

    assert account.realized_pnl == D("200")


def test_fees_and_slippage_are_paid_on_every_fill() -> None:
    account = new_account(replace(RULES, fee_bps=D("10"), slippage_bps=D("50")))

    bought = act(account, "buy", "10")
    sold = act(account, "sell", "10", at=minutes(1))

    assert bought.fill is not None and sold.fill is not None
    assert (bought.fill["price"], sold.fill["price"]) == (D("100.5"), D("99.5"))
    assert (bought.fill["slippage"], sold.fill["slippage"]) == (D("5"), D("5"))
    assert (bought.fill["fee"], sold.fill["fee"]) == (D("1.005"), D("0.995"))
    assert account.fees_paid == D("2") and account.realized_pnl == D("-10")
    assert account.equity == START - D("12")


def test_a_notional_order_buys_what_the_notional_buys_at_the_mark() -> None:
    account = new_account()

    result = act(account, "buy", notional=D("1000"), prices=marks(BTC="300"))

    assert result.fill is not None and result.fill["size"] == D("3.33333333")


def test_equity_is_balance_plus_unrealized_and_margin_uses_leverage() -> None:
    account = new_account()
    act(account, "buy", "10", leverage=D("4"))
    act(account, "sell", "100", asset="ETH")

    mark(account, minutes(1), BTC="120", ETH="12")

    valuation = account.valuation()
    assert valuation.unrealized == D("200") - D("200")
    assert valuation.equity == valuation.balance + valuation.unrealized == START
    assert valuation.margin_used == D("1200") / 4 + D("1200")
    assert valuation.gross_exposure == D("2400")


def test_a_fill_records_the_mark_it_used() -> None:
    account = new_account()
    observed = NOON - timedelta(seconds=30)

    act(account, "buy", "1", prices={"BTC": Mark("BTC", D("100"), observed, "hyperliquid")})

    filled = account.collect_events()[-1]
    assert isinstance(filled, PropAccount.Filled)
    assert (filled.fill["mark_price"], filled.fill["mark_source"]) == (D("100"), "hyperliquid")
    assert filled.fill["mark_observed_at"] == observed


def test_a_rejection_is_an_event_with_its_reason_and_changes_no_position() -> None:
    account = new_account()

    result = act(account, "buy", "1", asset="DOGE")

    rejected = account.collect_events()[-1]
    assert isinstance(rejected, PropAccount.ActionRejected)
    assert rejected.reason == result.reason == "asset-not-allowed"
    assert account.positions == {} and account.rejection_count == 1


def test_replaying_the_events_gives_the_same_account() -> None:
    account = new_account(replace(RULES, fee_bps=D("7"), slippage_bps=D("3")))
    act(account, "buy", "10")
    act(account, "sell", "3", at=minutes(1), prices=marks(minutes(1), BTC="101", ETH="10"))
    act(account, "sell", "1", asset="ETH", at=minutes(2))
    mark(account, minutes(3), BTC="97", ETH="11")
    pending = list(account.pending_events)

    rebuilt: Any = None
    for event in pending:
        rebuilt = event.mutate(rebuilt)

    assert vars(rebuilt) | {"_pending_events": []} == vars(account) | {"_pending_events": []}


# --- the trading day -------------------------------------------------------------------------


def test_the_first_command_of_a_utc_day_records_its_starting_equity_and_balance() -> None:
    account = new_account()
    act(account, "buy", "10")
    mark(account, minutes(60), BTC="130")
    tomorrow = datetime(2026, 11, 26, 0, 0, 1, tzinfo=UTC)

    act(account, "buy", "1", asset="ETH", at=tomorrow)

    started = [e for e in account.collect_events() if isinstance(e, PropAccount.DayStarted)]
    assert [(e.day, e.equity, e.balance) for e in started] == [
        ("2026-11-25", START, START),
        ("2026-11-26", D("10300"), START),
    ]


def test_the_daily_floor_is_set_by_the_higher_of_equity_and_balance() -> None:
    account = new_account()
    act(account, "buy", "10")
    mark(account, minutes(60), BTC="80")
    tomorrow = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    act(account, "buy", "1", asset="ETH", at=tomorrow, prices=marks(tomorrow, BTC="80", ETH="10"))

    assert (account.day_start_equity, account.day_start_balance) == (D("9800"), START)
    assert account.daily_floor == START - D("500")


# --- mark-to-market and breaches -------------------------------------------------------------


def test_mark_to_market_records_the_prices_it_used() -> None:
    account = new_account()
    act(account, "buy", "10")

    mark(account, minutes(5), BTC="104")

    marked = account.collect_events()[-1]
    assert isinstance(marked, PropAccount.Marked)
    assert marked.marks["BTC"]["price"] == D("104")
    assert marked.valuation["equity"] == D("10040")


def test_mark_to_market_of_a_flat_account_or_an_old_mark_records_nothing() -> None:
    flat = new_account()
    holding = new_account()
    act(holding, "buy", "10", at=minutes(1), prices=marks(minutes(1), BTC="100"))
    before = len(holding.pending_events)

    mark(flat, minutes(5), BTC="104")
    mark(holding, NOON, BTC="50")

    assert event_names(flat) == ["Opened"]
    assert len(holding.pending_events) == before


def test_a_daily_loss_breach_at_mark_to_market_freezes_the_account() -> None:
    account = new_account()
    act(account, "buy", "50")

    mark(account, minutes(5), BTC="89.99")

    assert event_names(account)[-3:] == ["Marked", "Breached", "Frozen"]
    assert account.status == "frozen" and account.breach == "daily-loss-limit"


def test_equity_on_the_floor_is_not_a_breach() -> None:
    account = new_account()
    act(account, "buy", "50")

    mark(account, minutes(5), BTC="90")

    assert account.equity == D("9500") and account.status == "open"


def test_a_drawdown_from_the_peak_breaches_even_above_the_daily_floor() -> None:
    account = new_account()
    act(account, "buy", "50")
    mark(account, minutes(1), BTC="140")

    mark(account, minutes(2), BTC="119.99")

    assert account.peak_equity == D("12000") and account.breach == "max-drawdown"


def test_a_breach_under_a_flatten_rule_set_closes_positions_then_freezes() -> None:
    account = new_account(replace(RULES, breach_action=BreachAction.FLATTEN))
    act(account, "buy", "50")

    mark(account, minutes(5), BTC="80")

    assert event_names(account)[-4:] == ["Marked", "Breached", "Flattened", "Frozen"]
    assert account.positions == {} and account.realized_pnl == D("-1000")
    assert account.equity == D("9000")


def test_actions_on_a_breached_account_are_rejected() -> None:
    account = new_account()
    act(account, "buy", "50")
    mark(account, minutes(5), BTC="80")

    result = act(account, "sell", "50", at=minutes(6), prices=marks(minutes(6), BTC="80"))

    assert result.status == "rejected" and result.reason == "account-frozen"


# --- admin controls -------------------------------------------------------------------------


def test_freeze_and_unfreeze_are_events_with_reasons() -> None:
    account = new_account()

    with acting(engine_at(NOON)):
        account.freeze("RETRO-CLOCK review")
        account.unfreeze("cleared")

    assert event_names(account)[-2:] == ["Frozen", "Unfrozen"]
    assert account.status == "open"


def test_freezing_twice_or_unfreezing_an_open_account_is_a_conflict() -> None:
    account = new_account()

    with acting(engine_at(NOON)):
        with pytest.raises(PropAccountNotFrozenError):
            account.unfreeze("nothing to do")
        account.freeze("once")
        with pytest.raises(PropAccountFrozenError):
            account.freeze("twice")


def test_flatten_closes_every_position_at_the_latest_mark_without_gates() -> None:
    account = new_account(replace(RULES, fee_bps=D("10")))
    act(account, "buy", "10")
    act(account, "sell", "100", asset="ETH")
    with acting(engine_at(minutes(1))):
        account.freeze("stop")

    with acting(engine_at(minutes(2))):
        account.flatten("desk flatten", marks(minutes(2), BTC="110", ETH="9"), minutes(2))

    flattened = account.collect_events()[-1]
    assert isinstance(flattened, PropAccount.Flattened)
    assert [(f["asset"], f["side"], f["price"]) for f in flattened.fills] == [
        ("BTC", "sell", D("110")),
        ("ETH", "buy", D("9")),
    ]
    assert account.positions == {} and account.realized_pnl == D("200")


def test_close_flattens_first_and_then_nothing_more_is_allowed() -> None:
    account = new_account()
    act(account, "buy", "10")

    with acting(engine_at(minutes(1))):
        account.close("audition over", marks(minutes(1), BTC="100"), minutes(1))
        with pytest.raises(PropAccountClosedError):
            account.freeze("too late")

    assert event_names(account)[-2:] == ["Flattened", "Closed"]
    assert act(account, "buy", "1", at=minutes(2)).reason == "account-closed"


def test_an_old_logs_equity_snapshot_still_replays_and_changes_nothing() -> None:
    # Nothing emits `EquitySnapshotted` any more; an old log holding one must still load.
    account = new_account()
    act(account, "buy", "10")
    mark(account, minutes(1), BTC="103")
    with acting(engine_at(minutes(2))):
        account._equity_snapshotted(
            valuation=account.valuation().to_state(),
            realized_pnl=account.realized_pnl,
            fees_paid=account.fees_paid,
        )

    assert isinstance(account.pending_events[-1], PropAccount.EquitySnapshotted)
    rebuilt = replayed(account)

    assert (rebuilt.equity, rebuilt.positions, rebuilt.status) == (
        D("10030"),
        account.positions,
        "open",
    )


# --- time passing writes nothing ---------------------------------------------------------------


def test_a_newer_mark_at_the_same_price_records_nothing() -> None:
    account = new_account()
    act(account, "buy", "10")
    before = len(account.pending_events)

    mark(account, minutes(10), BTC="100")

    assert len(account.pending_events) == before
    assert account.marks["BTC"]["observed_at"] == NOON


def test_only_the_assets_whose_price_moved_are_marked() -> None:
    account = new_account()
    act(account, "buy", "10")
    act(account, "sell", "100", asset="ETH")

    mark(account, minutes(10), BTC="100", ETH="9")

    marked = account.collect_events()[-1]
    assert isinstance(marked, PropAccount.Marked)
    assert list(marked.marks) == ["ETH"]


def test_mark_to_market_leaves_a_frozen_or_closed_account_alone() -> None:
    frozen, closed = new_account(), new_account()
    for account in (frozen, closed):
        act(account, "buy", "10")
    with acting(engine_at(minutes(1))):
        frozen.freeze("review")
        closed.close("done", marks(minutes(1), BTC="100"), minutes(1))
    before = [len(a.pending_events) for a in (frozen, closed)]

    for account in (frozen, closed):
        with acting(engine_at(minutes(10))):
            assert account.mark_to_market(marks(minutes(10), BTC="90"), minutes(10)) is None

    assert [len(a.pending_events) for a in (frozen, closed)] == before


def test_a_verdicts_revaluation_values_a_frozen_account_without_breaching_it_again() -> None:
    account = new_account()
    act(account, "buy", "50")
    mark(account, minutes(5), BTC="89.99")  # breached and frozen
    before = len(account.pending_events)

    with acting(engine_at(minutes(10))):
        valuation = account.revalue(marks(minutes(10), BTC="85"), minutes(10))

    assert valuation is not None and valuation.equity == D("9250")
    assert event_names(account)[before:] == ["Marked"]
    assert (account.status, account.breach) == ("frozen", "daily-loss-limit")


@pytest.mark.parametrize(
    "amount",
    [
        {"size": D("-1")},
        {"notional": D("-1")},
        {"size": D("-0.00000001")},
        {"notional": D("-1e12")},
    ],
)
def test_a_negative_size_or_notional_is_refused_by_the_domain(amount: dict[str, Any]) -> None:
    # The API schema refuses these too; the domain must not rely on it.
    with pytest.raises(InvalidPropActionError):
        ActionRequest("a-1", "BTC", "buy", **amount)
