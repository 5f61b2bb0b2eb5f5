"""(h) The cadence driver: 500 live accounts on a 1-minute cadence, one minute's bar each.

Six clones (two per tradable asset, BTC, ETH and SOL), each with a published version of the
executor bench's 12-node graph declaring `cadence: 1m` (its model node through the model
router, offline provider), and 500 prop accounts opened on them through the command path.
Each asset has 1-minute candles and a mark. A round is what the worker's `engine_cadence`
job does once a minute: for every account, under its advisory lock, read the account and
its decisions, the asset's latest closed bars, decide, submit the prop action through
`prop_trading.submit_action` when the target moved, and record the decision (two or three
commands per account). Between rounds one more minute closes (a candle and a mark per
asset). A projection runner follows the log in a thread while the rounds run, as the
worker's would. The roster is given (the accounts as `accounts_to_trade` would list
them), so the round is the trading alone. The figure is the median round, in seconds,
against the 60 s a minute allows.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import numpy as np

from aggregates.base import CommandContext
from aggregates.ports import Mark
from aggregates.strategy_graph import GraphRules
from benchmarks.engine import graph_for
from benchmarks.harness import Figure
from ingest.prices import PostgresPriceSource
from ingest.storage import Batch, CandleRow
from projections.cadence import TradedAccount
from projections.runner import ProjectionRunner
from runtime.clock import FixedClock
from services import cloning, prop_trading
from services.bootstrap import Services
from services.schedule import cadence_driver

BUDGET = 60.0  # seconds: the round must end before the next minute's bar closes
ASSETS = ("BTC", "ETH", "SOL")
MINUTE = timedelta(minutes=1)
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class CadencePlan:
    accounts: int = 500
    clones_per_asset: int = 2
    history: int = 180
    """1-minute candles stored before the first round (the graph reads about 90)."""
    rounds: int = 3


QUICK_CADENCE = CadencePlan(accounts=60, rounds=2)


def _context(at: datetime, actor: str = "service:bench") -> CommandContext:
    return CommandContext(actor=actor, occurred_at=at, correlation_id="bench-cadence")


class _Minutes:
    """Seeded random-walk 1-minute candles of each asset, written as they close."""

    def __init__(self, services: Services, clock: FixedClock, history: int) -> None:
        self.services = services
        self.clock = clock
        rng = np.random.default_rng(19)
        steps = history + 64
        self.closes = {
            asset: base * np.exp(np.cumsum(rng.normal(0, 0.002, steps)))
            for asset, base in zip(ASSETS, (67_000.0, 3_500.0, 150.0), strict=True)
        }
        self.start = clock() - MINUTE * history
        self.done = 0
        self.advance(history)

    def advance(self, minutes: int) -> None:
        rows = []
        for asset, closes in self.closes.items():
            for i in range(self.done, self.done + minutes):
                opened = self.start + MINUTE * i
                o, c = float(closes[max(i - 1, 0)]), float(closes[i])
                rows.append(
                    CandleRow(
                        source="hyperliquid",
                        instrument=asset,
                        interval="1m",
                        open_time=opened,
                        close_time=opened + MINUTE - timedelta(milliseconds=1),
                        open=Decimal(f"{o:.4f}"),
                        high=Decimal(f"{max(o, c) * 1.0005:.4f}"),
                        low=Decimal(f"{min(o, c) * 0.9995:.4f}"),
                        close=Decimal(f"{c:.4f}"),
                        volume=Decimal("10"),
                        trades=20,
                    )
                )
        with self.services.datastore.transaction(commit=True) as cursor:
            Batch(candles=rows).write(cursor)
        self.done += minutes
        self.clock.now = self.start + MINUTE * self.done
        PostgresPriceSource(self.services.datastore).record(
            [
                Mark(asset, Decimal(f"{float(c[self.done - 1]):.4f}"), self.clock(), "hyperliquid")
                for asset, c in self.closes.items()
            ]
        )


def _published(services: Services, at: datetime, plan: CadencePlan) -> list[tuple[UUID, UUID, str]]:
    """(owner, clone, version) per clone: the 12-node graph on a 1-minute cadence."""
    rules = GraphRules(
        max_nodes=64,
        max_edges=128,
        max_depth=16,
        channels=frozenset(f"hyperliquid.{a}.{f}" for a in ASSETS for f in ("close", "return_1h")),
        assets=frozenset(ASSETS),
    )
    clones = []
    for asset in ASSETS:
        for number in range(plan.clones_per_asset):
            owner = uuid4()
            context = _context(at, f"user:{owner}")
            clone_id = cloning.create_clone(
                services.event_log,
                context,
                owner_id=owner,
                key=uuid4().hex,
                name=f"BENCH-{asset}-{number}",
                description="",
                active_limit=5,
            ).result
            graph: dict[str, Any] = {**graph_for(asset), "cadence": "1m"}
            if number:  # a second, more cautious clone of the same asset
                for node in graph["nodes"]:
                    if node["kind"] == "action":
                        node["size_fraction"] = "0.25"
            cloning.save_draft(
                services.event_log,
                context,
                clone_id=clone_id,
                owner_id=owner,
                graph=graph,
                rules=rules,
            )
            version = cloning.publish_version(
                services.event_log, context, clone_id=clone_id, owner_id=owner, rules=rules
            ).result
            clones.append((owner, clone_id, version.version_id))
    return clones


def _open_accounts(
    services: Services, at: datetime, clones: list[tuple[UUID, UUID, str]], count: int
) -> list[TradedAccount]:
    roster = []
    for number in range(count):
        owner, clone_id, version = clones[number % len(clones)]

        def open_it(
            unit: Any,
            owner: UUID = owner,
            clone_id: UUID = clone_id,
            version: str = version,
            key: str = f"bench-cadence-{number}",
        ) -> UUID:
            return prop_trading.open_account_in(
                unit,
                key=key,
                owner_id=owner,
                clone_id=clone_id,
                clone_version_hash=version,
                purpose="race",
                starting_equity=Decimal("10000"),
                rule_set_name="race",
                trading_ends_at=at + timedelta(days=1),
            ).id

        account_id = services.event_log.execute(_context(at), open_it).result
        roster.append(TradedAccount(account_id, clone_id, "race", version, None))
    return sorted(roster, key=lambda account: account.account_id)


class _Follower:
    """A projection runner following the log in a thread (as the worker's does)."""

    def __init__(self, services: Services) -> None:
        self.runner = ProjectionRunner(services.projections, None, services.url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.runner.step():
                self.stop.wait(0.05)

    def __enter__(self) -> _Follower:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def cadence_figures(services: Services, plan: CadencePlan) -> list[Figure]:
    clock = FixedClock(START)
    minutes = _Minutes(services, clock, plan.history)
    clones = _published(services, clock(), plan)
    ProjectionRunner(services.projections, None, services.url).catch_up()  # clone_versions
    roster = _open_accounts(services, clock(), clones, plan.accounts)
    ProjectionRunner(services.projections, None, services.url).catch_up()
    driver = replace(cadence_driver(services, clock), roster=lambda limit: roster[:limit])
    seconds: list[float] = []
    decided = ordered = 0
    skipped: dict[str, int] = {}
    with _Follower(services):
        for _ in range(plan.rounds):
            minutes.advance(1)
            started = time.perf_counter()
            done = driver()
            seconds.append(time.perf_counter() - started)
            decided += done.decided
            ordered += done.ordered
            for why, n in done.skipped.items():
                skipped[why] = skipped.get(why, 0) + n
    median = statistics.median(seconds)
    per_minute = plan.accounts / median * 60 if median else 0.0
    others = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none skipped"
    return [
        Figure(
            section="(h) cadence",
            measure=f"one 1-minute round of {plan.accounts} live accounts (decide, order, record)",
            value=median,
            unit="s",
            detail=(
                f"median of {plan.rounds} rounds (fastest {min(seconds):.1f} s, slowest"
                f" {max(seconds):.1f} s); {median / plan.accounts * 1000:.1f} ms per account,"
                f" {per_minute:,.0f} accounts a minute; {decided:,} decisions, {ordered:,}"
                f" orders; {others}; projections following"
            ),
            target=f"<= {BUDGET:g} s",
            passed=median <= BUDGET,
        )
    ]
