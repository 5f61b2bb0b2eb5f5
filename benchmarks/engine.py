"""(g) The strategy executor: backtests of a 12-node graph over 5,000 candles x 10 assets.

Pure CPU, no database: each asset gets a seeded random walk of 5-minute candles and the
same 12-node graph bound to it (two candle channels, five transforms, a model node through
the model router with the offline provider, as backtest jobs run it, two signals, a risk
rule with a stop, an action). A round backtests all ten (`aggregates.backtests.backtest`:
evaluate every node, fill the decisions at the next opens, the report with its data hash);
the figure is candles per second of the median round. Beside it, what the cadence driver
pays per account and asset each bar: `decide_latest` on one asset's latest `lookback` bars,
its model node one routed call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from aggregates.backtests import backtest
from aggregates.prop_rules import rule_set
from aggregates.strategy_executor import (
    Bars,
    Holding,
    MarketFrame,
    Strategy,
    compile_strategy,
    decide_latest,
)
from aggregates.strategy_graph import GraphRules, check_graph
from benchmarks.harness import Figure
from ingest.providers.model_nodes import RoutedModel, offline_router

TARGET = 100_000  # candles per second
FIVE_MINUTES = 300_000  # ms


@dataclass(frozen=True)
class EnginePlan:
    candles: int = 5_000
    assets: int = 10
    rounds: int = 7
    latest_calls: int = 2_000


QUICK_ENGINE = EnginePlan(candles=1_000, assets=10, rounds=2, latest_calls=200)


def graph_for(asset: str) -> dict[str, Any]:
    """12 nodes, 13 edges: trend (fast SMA against slow EMA, less volatility, through the
    model) and the change of the return's z-score, each a signal, into one action."""
    return {
        "nodes": [
            {"id": "px", "kind": "data_source", "channel": f"hyperliquid.{asset}.close"},
            {"id": "ret", "kind": "data_source", "channel": f"hyperliquid.{asset}.return_1h"},
            {"id": "fast", "kind": "feature_transform", "transform": "sma", "window": 12},
            {"id": "slow", "kind": "feature_transform", "transform": "ema", "window": 48},
            {"id": "vol", "kind": "feature_transform", "transform": "rolling_std", "window": 24},
            {"id": "z", "kind": "feature_transform", "transform": "zscore", "window": 24},
            {"id": "dz", "kind": "feature_transform", "transform": "diff", "window": 3},
            {
                "id": "m",
                "kind": "model",
                "provider": "local",
                "model": "offline",
                "prompt": {
                    "template": "Fast {{fast}}, slow {{slow}}, volatility {{vol}}. -1 to 1?",
                    "variables": ["fast", "slow", "vol"],
                },
            },
            {"id": "s1", "kind": "signal", "long_above": "0.05", "short_below": "-0.05"},
            {"id": "s2", "kind": "signal", "long_above": "0.5", "short_below": "-0.5"},
            {
                "id": "risk",
                "kind": "risk_rule",
                "asset": asset,
                "max_position_fraction": "0.5",
                "stop_loss_fraction": "0.05",
            },
            {"id": "act", "kind": "action", "asset": asset, "size_fraction": "0.5"},
        ],
        "edges": [
            {"from": "px", "to": "fast"},
            {"from": "px", "to": "slow"},
            {"from": "ret", "to": "vol"},
            {"from": "ret", "to": "z"},
            {"from": "z", "to": "dz"},
            {"from": "fast", "to": "m", "port": "fast"},
            {"from": "slow", "to": "m", "port": "slow"},
            {"from": "vol", "to": "m", "port": "vol"},
            {"from": "m", "to": "s1"},
            {"from": "dz", "to": "s2"},
            {"from": "s1", "to": "risk"},
            {"from": "risk", "to": "act"},
            {"from": "s2", "to": "act"},
        ],
    }


def frame_for(asset: str, candles: int, seed: int) -> MarketFrame:
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, candles)))
    opens = np.concatenate(([100.0], closes[:-1] * np.exp(rng.normal(0, 0.0005, candles - 1))))
    spread = np.abs(rng.normal(0, 0.002, candles))
    high = np.maximum(opens, closes) * (1 + spread)
    low = np.minimum(opens, closes) * (1 - spread)
    open_time = 1_764_000_000_000 + FIVE_MINUTES * np.arange(candles, dtype=np.int64)
    return MarketFrame(
        asset=asset,
        interval="5m",
        open_time=open_time,
        close_time=open_time + FIVE_MINUTES - 1,
        candles={asset: Bars(opens, high, low, closes, rng.uniform(1, 50, candles))},
        funding=np.where(np.arange(candles) % 12 == 0, 0.0000125, 0.0),
    )


def prepared(plan: EnginePlan) -> list[tuple[Strategy, MarketFrame]]:
    assets = [f"A{i}" for i in range(plan.assets)]
    rules = GraphRules(
        max_nodes=64,
        max_edges=128,
        max_depth=16,
        channels=frozenset(f"hyperliquid.{a}.{f}" for a in assets for f in ("close", "return_1h")),
        assets=frozenset(assets),
    )
    runs = []
    for i, asset in enumerate(assets):
        graph = check_graph(graph_for(asset), rules)  # a graph that could be published
        assert len(graph.nodes) == 12
        runs.append((compile_strategy(graph), frame_for(asset, plan.candles, seed=i)))
    return runs


def engine_figures(plan: EnginePlan) -> list[Figure]:
    runs = prepared(plan)
    audition = rule_set("audition")
    equity = Decimal("10000")
    seconds, trades = [], 0
    router = offline_router()
    for _ in range(plan.rounds):
        started = time.perf_counter()
        reports = [
            backtest(strategy, frame, audition, equity, RoutedModel(router))
            for strategy, frame in runs
        ]
        seconds.append(time.perf_counter() - started)
        trades = sum(r.trades for r in reports)
    candles = plan.candles * plan.assets
    median = statistics.median(seconds)
    rate = candles / median
    strategy, frame = runs[0]
    window = frame.tail(strategy.lookback(frame.interval))
    started = time.perf_counter()
    for _ in range(plan.latest_calls):
        decide_latest(strategy, window, Holding(), RoutedModel(router))
    per_call_ms = (time.perf_counter() - started) / plan.latest_calls * 1000
    return [
        Figure(
            section="(g) executor",
            measure=(
                f"backtest, 12-node graph, {plan.candles:,} candles x {plan.assets} assets"
                " (model node through the router, offline provider)"
            ),
            value=rate,
            unit="candles/s",
            detail=(
                f"median of {plan.rounds} rounds {median * 1000:.0f} ms"
                f" (fastest {min(seconds) * 1000:.0f}, slowest {max(seconds) * 1000:.0f});"
                f" {trades:,} trades; fills at next open, stop, funding, report"
            ),
            target=f">= {TARGET:,} candles/s",
            passed=rate >= TARGET,
        ),
        Figure(
            section="(g) executor",
            measure=f"decide_latest: one account and asset, latest {len(window)} bars",
            value=per_call_ms,
            unit="ms",
            detail=f"mean of {plan.latest_calls:,} calls (the cadence driver's per-bar cost)",
        ),
    ]
