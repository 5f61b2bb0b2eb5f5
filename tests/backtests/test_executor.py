"""The executor on fixed and generated candles, no database: a hand-computed SMA cross,
next-bar-open fills, the stop-loss, funding, and proof that no later candle changes an
earlier decision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates.backtests import Costs, report, simulate
from aggregates.prop_rules import rule_set
from aggregates.strategy_executor import (
    Bars,
    GraphNotExecutableError,
    Holding,
    MarketFrame,
    compile_strategy,
    decide_latest,
    evaluate,
    frame_from_json,
    policy_step,
)
from aggregates.strategy_graph import GraphRules, check_graph

HOUR = 3_600_000
START = 1_764_000_000_000  # ms; bars are hourly from here
AUDITION = rule_set("audition", 1)  # fee 5 bps, slippage 2 bps
RULES = GraphRules(
    max_nodes=64,
    max_edges=128,
    max_depth=16,
    channels=frozenset({"hyperliquid.BTC.close", "hyperliquid.BTC.return_4h"}),
    assets=frozenset({"BTC"}),
)


def sma_cross(direction: str = "long_only", **risk: Any) -> dict[str, Any]:
    """Long while the 2-bar SMA of the close is above the 4-bar SMA (the offline model
    answers d/(1+|d|) of fast - slow: its sign is the cross)."""
    nodes: list[dict[str, Any]] = [
        {"id": "px", "kind": "data_source", "channel": "hyperliquid.BTC.close"},
        {"id": "fast", "kind": "feature_transform", "transform": "sma", "window": 2},
        {"id": "slow", "kind": "feature_transform", "transform": "sma", "window": 4},
        {
            "id": "cross",
            "kind": "model",
            "provider": "local",
            "model": "offline",
            "prompt": {
                "template": "Fast SMA {{fast}} against slow SMA {{slow}}: -1 to 1?",
                "variables": ["fast", "slow"],
            },
        },
        {"id": "sig", "kind": "signal", "long_above": "0", "short_below": "0"},
        {
            "id": "act",
            "kind": "action",
            "asset": "BTC",
            "direction": direction,
            "size_fraction": "1",
        },
    ]
    edges = [
        {"from": "px", "to": "fast"},
        {"from": "px", "to": "slow"},
        {"from": "fast", "to": "cross", "port": "fast"},
        {"from": "slow", "to": "cross", "port": "slow"},
        {"from": "cross", "to": "sig"},
    ]
    if risk:
        nodes.append({"id": "risk", "kind": "risk_rule", "asset": "BTC", **risk})
        edges += [{"from": "sig", "to": "risk"}, {"from": "risk", "to": "act"}]
    else:
        edges.append({"from": "sig", "to": "act"})
    graph = {"nodes": nodes, "edges": edges}
    check_graph(graph, RULES)  # a graph the guardrails pass, as a published one did
    return graph


def frame_of(
    opens: Sequence[float], closes: Sequence[float], funding: Sequence[float] | None = None
) -> MarketFrame:
    n = len(closes)
    open_time = START + HOUR * np.arange(n, dtype=np.int64)
    o, c = np.array(opens, dtype=float), np.array(closes, dtype=float)
    bars = Bars(o, np.maximum(o, c), np.minimum(o, c), c, np.ones(n))
    return MarketFrame(
        asset="BTC",
        interval="1h",
        open_time=open_time,
        close_time=open_time + HOUR - 1,
        candles={"BTC": bars},
        funding=None if funding is None else np.array(funding, dtype=float),
    )


# Closes rise from 10 to 20, then fall; each open differs from the previous close, so a
# fill at the decision bar's close could not pass for one at the next bar's open.
OPENS = [10, 10, 10, 10, 11, 12.5, 15, 17, 19, 20, 18, 14]
CLOSES = [10, 10, 10, 10, 12, 14, 16, 18, 20, 19, 15, 12]


def test_an_sma_cross_by_hand_fills_at_the_next_open_with_fees_and_slippage() -> None:
    strategy = compile_strategy(sma_cross())
    simulation = simulate(strategy, frame_of(OPENS, CLOSES), Costs.of(AUDITION), 10_000.0)

    # sma2/sma4 at bars 3..11: 10/10 (flat), 11/10.5, 13/11.5, 15/13, 17/15, 19/17,
    # 19.5/18.25 (long), 17/18 (bar 10: the cross down, flat: long only), 13.5/16.5.
    assert simulation.evaluation.warmup == 3  # the 4-bar SMA's first value is at bar 3
    assert list(simulation.target) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    buy, sell = simulation.fills
    # Bar 4 decides long; it fills at bar 5's open, 12.5, plus 2 bps: 12.5025. Equity at
    # bar 4's close is 10,000, so 10,000 / 12.5 = 800 units; fee 5 bps of 800 x 12.5025.
    assert (buy.decided_at, buy.bar, buy.units) == (4, 5, 800)
    assert buy.price == pytest.approx(12.5025, abs=1e-12)
    assert buy.fee == pytest.approx(800 * 12.5025 * 0.0005, abs=1e-9)  # 5.001
    assert buy.slippage == pytest.approx(800 * 0.0025, abs=1e-9)  # 2.0
    # Bar 10 decides flat; it fills at bar 11's open, 14, less 2 bps: 13.9972.
    assert (sell.decided_at, sell.bar, sell.units) == (10, 11, -800)
    assert sell.price == pytest.approx(13.9972, abs=1e-12)
    assert sell.fee == pytest.approx(800 * 13.9972 * 0.0005, abs=1e-9)  # 5.59888
    assert sell.slippage == pytest.approx(800 * 0.0028, abs=1e-9)  # 2.24
    (trade,) = simulation.trades
    pnl = 800 * (13.9972 - 12.5025) - 5.001 - 5.59888  # 1,185.16012
    assert (trade.opened_bar, trade.closed_bar, trade.direction) == (5, 11, 1)
    assert trade.pnl == pytest.approx(pnl, abs=1e-9)
    # Equity at each close: cash (10,000 - 800 x 12.5025 - 5.001 = -7.001) + 800 x close.
    held = [-7.001 + 800 * close for close in CLOSES[5:11]]
    assert simulation.equity == pytest.approx([10_000] * 5 + held + [10_000 + pnl], abs=1e-9)

    summary = report(simulation, AUDITION.key, "offline")
    assert summary.final_equity == "11185.16012"
    assert summary.total_return == "0.11851601"
    assert (summary.fills, summary.trades, summary.closed_trades, summary.win_rate) == (
        2,
        1,
        1,
        "1",
    )
    assert (summary.fees_paid, summary.slippage_paid, summary.funding_paid) == (
        "10.59988",
        "4.24",
        "0",
    )
    peak, trough = -7.001 + 800 * 20, 10_000 + pnl
    assert float(summary.max_drawdown) == pytest.approx(1 - trough / peak, abs=1e-8)
    assert summary.warmup_bars == 3 and summary.periods_per_year == 365 * 24
    assert summary.graph_hash == strategy.version and len(summary.data_hash) == 64
    assert summary.sharpe is not None and float(summary.sharpe) > 0


def test_the_last_bars_decision_is_pending_never_filled() -> None:
    closes = [*CLOSES[:10], 19, 21]  # bar 11: 20/19.5 -> long again, with no bar after it
    opens = [*OPENS[:11], 19]
    strategy = compile_strategy(sma_cross("long_short"))

    simulation = simulate(strategy, frame_of(opens, closes), Costs.of(AUDITION), 10_000.0)

    assert simulation.fills[-1].bar <= 11
    assert simulation.pending is not None and simulation.pending[0] == 11


def test_a_reversal_closes_one_trade_and_opens_the_next_in_one_fill() -> None:
    strategy = compile_strategy(sma_cross("long_short"))

    simulation = simulate(strategy, frame_of(OPENS, CLOSES), Costs.of(AUDITION), 10_000.0)

    assert [f.bar for f in simulation.fills] == [5, 11]
    long, short = simulation.trades
    assert (long.direction, long.closed_bar, short.direction, short.closed_bar) == (1, 11, -1, None)
    # Bar 10: equity -7.001 + 800 x 15 = 11,992.999, all of it short at 14 units-wise.
    assert simulation.fills[1].units == pytest.approx(-800 - 11_992.999 / 14, abs=1e-9)
    assert simulation.units[-1] == pytest.approx(-11_992.999 / 14, abs=1e-9)
    fee = simulation.fills[1].fee
    assert long.fees + short.fees == pytest.approx(5.001 + fee, abs=1e-9)


def test_a_stop_loss_exits_at_the_next_open_and_stays_out_until_the_signal_turns() -> None:
    graph = sma_cross(max_position_fraction="1", stop_loss_fraction="0.1")
    strategy = compile_strategy(graph)
    # Long from bar 4 (it fills at bar 5's open: 12.5 + 2 bps = 12.5025); bar 6 closes at
    # 11, more than 10% below the entry, while the 2-bar SMA is still above the 4-bar one.
    opens = [10, 10, 10, 10, 11, 12.5, 19, 12, 22, 12, 11, 29]
    closes = [10, 10, 10, 10, 13, 20, 11, 23, 12, 10, 30, 31]

    simulation = simulate(strategy, frame_of(opens, closes), Costs.of(AUDITION), 10_000.0)

    assert 11 <= 12.5025 * 0.9
    fills = [(f.decided_at, f.bar) for f in simulation.fills]
    assert fills[:2] == [(4, 5), (6, 7)]  # stopped at bar 6's close, out at bar 7's open
    assert list(simulation.target[6:9]) == [0, 0, 0]
    assert list(simulation.stopped[6:9]) == [1, 1, 1]  # the signal stays long: still out
    # Bar 9: the fast SMA falls below the slow one, the signal leaves long, the stop lifts;
    # bar 10 crosses up again: long, filled at bar 11's open.
    assert simulation.stopped[9] == 0
    assert fills[2:] == [(10, 11)]


def test_funding_is_paid_by_the_position_held_during_the_bar() -> None:
    rates = [0.0] * 12
    rates[6] = 0.001  # a positive rate: longs pay
    strategy = compile_strategy(sma_cross())

    simulation = simulate(strategy, frame_of(OPENS, CLOSES, rates), Costs.of(AUDITION), 10_000.0)

    assert simulation.funding[6] == pytest.approx(800 * OPENS[6] * 0.001)  # 12.0
    assert simulation.trades[0].funding == pytest.approx(12.0)
    free = simulate(strategy, frame_of(OPENS, CLOSES), Costs.of(AUDITION), 10_000.0)
    assert simulation.equity[-1] == pytest.approx(free.equity[-1] - 12.0)


def test_a_risk_rule_on_another_asset_is_refused() -> None:
    graph = sma_cross(max_position_fraction="0.5", stop_loss_fraction="0.1")
    graph["nodes"][-1]["asset"] = "ETH"

    with pytest.raises(GraphNotExecutableError):
        compile_strategy(graph)


# --- generated candles ---------------------------------------------------------------------

EVERYTHING: dict[str, Any] = {
    "nodes": [
        {"id": "px", "kind": "data_source", "channel": "hyperliquid.BTC.close"},
        {"id": "ret", "kind": "data_source", "channel": "hyperliquid.BTC.return_4h"},
        {"id": "sma", "kind": "feature_transform", "transform": "sma", "window": 5},
        {"id": "ema", "kind": "feature_transform", "transform": "ema", "window": 7},
        {"id": "z", "kind": "feature_transform", "transform": "zscore", "window": 6},
        {"id": "sd", "kind": "feature_transform", "transform": "rolling_std", "window": 4},
        {"id": "lo", "kind": "feature_transform", "transform": "rolling_min", "window": 3},
        {"id": "hi", "kind": "feature_transform", "transform": "rolling_max", "window": 3},
        {"id": "d", "kind": "feature_transform", "transform": "diff", "window": 2},
        {"id": "pc", "kind": "feature_transform", "transform": "pct_change", "window": 3},
        {
            "id": "m",
            "kind": "model",
            "provider": "local",
            "model": "offline",
            "prompt": {
                "template": "{{ema}} {{sma}} {{sd}} {{lo}} {{hi}} {{pc}}",
                "variables": ["ema", "sma", "sd", "lo", "hi", "pc"],
            },
        },
        {"id": "s1", "kind": "signal", "long_above": "0.05", "short_below": "-0.05"},
        {"id": "s2", "kind": "signal", "rule": "sign"},
        {"id": "s3", "kind": "signal", "long_above": "0.5", "short_below": "-0.5"},
        {
            "id": "risk",
            "kind": "risk_rule",
            "asset": "BTC",
            "max_position_fraction": "0.8",
            "stop_loss_fraction": "0.03",
        },
        {"id": "act", "kind": "action", "asset": "BTC", "size_fraction": "1"},
    ],
    "edges": [
        {"from": "px", "to": "sma"},
        {"from": "px", "to": "ema"},
        {"from": "px", "to": "sd"},
        {"from": "px", "to": "lo"},
        {"from": "px", "to": "hi"},
        {"from": "px", "to": "pc"},
        {"from": "px", "to": "z"},
        {"from": "ret", "to": "d"},
        {"from": "sma", "to": "m", "port": "sma"},
        {"from": "ema", "to": "m", "port": "ema"},
        {"from": "sd", "to": "m", "port": "sd"},
        {"from": "lo", "to": "m", "port": "lo"},
        {"from": "hi", "to": "m", "port": "hi"},
        {"from": "pc", "to": "m", "port": "pc"},
        {"from": "m", "to": "s1"},
        {"from": "d", "to": "s2"},
        {"from": "z", "to": "s3"},
        {"from": "s1", "to": "risk"},
        {"from": "risk", "to": "act"},
        {"from": "s2", "to": "act"},
        {"from": "s3", "to": "act"},
    ],
}


def walk(steps: list[float], gaps: list[float]) -> tuple[list[float], list[float]]:
    """Closes from multiplicative steps; each open a small gap from the previous close."""
    closes, price = [], 100.0
    for step in steps:
        price *= math.exp(step)
        closes.append(price)
    opens = [100.0] + [c * math.exp(g) for c, g in zip(closes[:-1], gaps[1:], strict=True)]
    return opens, closes


steps = st.lists(st.floats(-0.04, 0.04, allow_nan=False), min_size=40, max_size=120)


def same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), moves=steps)
def test_no_later_candle_changes_an_earlier_decision(
    data: st.DataObject, moves: list[float]
) -> None:
    gaps = data.draw(st.lists(st.floats(-0.005, 0.005), min_size=len(moves), max_size=len(moves)))
    cut = data.draw(st.integers(1, len(moves) - 1))
    opens, closes = walk(moves, gaps)
    # Everything from the cut on is another market, and it runs on for longer.
    later = data.draw(st.lists(st.floats(-0.08, 0.08), min_size=1, max_size=30))
    other_opens, other_closes = walk(moves[:cut] + later, gaps[:cut] + [0.001] * len(later))
    strategy = compile_strategy(EVERYTHING)
    costs = Costs.of(AUDITION)

    one = simulate(strategy, frame_of(opens, closes), costs, 10_000.0)
    two = simulate(strategy, frame_of(other_opens, other_closes), costs, 10_000.0)

    for node_id in strategy.order:  # every node's value, bit for bit
        assert same(one.evaluation.outputs[node_id][:cut], two.evaluation.outputs[node_id][:cut])
    assert same(one.target[:cut], two.target[:cut])
    assert same(one.stopped[:cut], two.stopped[:cut])
    # A decision at bar i fills at bar i+1's open: fills before the cut are the same.
    before = [(f.bar, f.units, f.price, f.fee) for f in one.fills if f.bar < cut]
    assert before == [(f.bar, f.units, f.price, f.fee) for f in two.fills if f.bar < cut]
    assert same(one.equity[:cut], two.equity[:cut])


@settings(max_examples=30, deadline=None)
@given(moves=steps)
def test_the_latest_bar_alone_decides_what_the_whole_history_does(moves: list[float]) -> None:
    opens, closes = walk(moves, [0.0] * len(moves))
    frame = frame_of(opens, closes)
    strategy = compile_strategy(EVERYTHING)
    whole = evaluate(strategy, frame)
    lookback = strategy.lookback("1h")

    for i in range(len(frame)):
        decision = decide_latest(strategy, frame.head(i + 1), Holding())
        assert same(np.array([decision.raw_target]), whole.target[i : i + 1]), i
    assert whole.warmup == lookback - 1  # the 7-bar EMA, and return_4h (5 bars) + diff 2


def naive(
    strategy: Any, frame: MarketFrame, costs: Costs, equity0: float
) -> list[tuple[int, float]]:
    """The same rules, bar by bar, with no skipping: every bar asks `policy_step`."""
    raw = evaluate(strategy, frame).target
    o, c = frame.bars.open, frame.bars.close
    units, entry, cash, target, stopped = 0.0, math.nan, equity0, 0.0, 0
    fee, slip = costs.fee_bps / 10_000, costs.slippage_bps / 10_000
    fills = []
    for k in range(len(frame) - 1):
        new, stopped = policy_step(strategy.limits, Holding(units, entry, stopped), raw[k], c[k])
        if new == target:
            continue
        target = new
        wanted = float(target * (cash + units * c[k]) / o[k + 1])
        q = wanted - units
        if q == 0:
            continue
        price = o[k + 1] * (1 + (1 if q > 0 else -1) * slip)
        cash -= q * price + abs(q) * price * fee
        after = units + q
        if after == 0:
            entry = math.nan
        elif units == 0 or (after > 0) != (units > 0):
            entry = price
        elif abs(after) > abs(units):
            entry = (units * entry + q * price) / after
        units = after
        fills.append((k + 1, q))
    return fills


@settings(max_examples=60, deadline=None)
@given(moves=steps)
def test_skipping_quiet_bars_changes_nothing(moves: list[float]) -> None:
    opens, closes = walk(moves, [0.001] * len(moves))
    frame = frame_of(opens, closes)
    strategy = compile_strategy(EVERYTHING)
    costs = Costs.of(AUDITION)

    fast = [(f.bar, f.units) for f in simulate(strategy, frame, costs, 10_000.0).fills]

    expected = naive(strategy, frame, costs, 10_000.0)
    assert [b for b, _ in fast] == [b for b, _ in expected]
    assert [u for _, u in fast] == pytest.approx([u for _, u in expected], rel=1e-12)


def test_a_frame_sent_as_json_comes_back_bit_for_bit() -> None:
    frame = frame_of(OPENS, CLOSES, [0.0001] * 12)
    frame = replace(frame, channels={"x": np.array([math.nan] * 11 + [0.5])})

    again = frame_from_json(orjson.loads(orjson.dumps(frame.to_json())))

    assert again.digest() == frame.digest()
    assert frame.head(11).digest() != frame.digest()
