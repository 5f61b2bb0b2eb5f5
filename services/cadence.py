"""The cadence driver: the engine trading running audition and race accounts by itself.

Each round, for every running audition account and running race account whose clone has a
published version (the audition's pinned version, the race entrant's), the driver reads the
asset's latest closed bars at the clone's cadence (`ingest.candles.market_frame`; the
interval the version's graph declares as `cadence`, else the one ingestion stores,
`PUMPPARTY_INGEST_CANDLE_INTERVAL`: the default of dry runs and backtests too),
evaluates the graph on the latest one (`decide_latest`; model nodes through the model
router, purpose `model-node`), and submits the prop action for the move from the position
held to the target through the normal command path (`prop_trading.submit_action`). The
action's `client_action_id` is derived from (account, asset, bar close time), so a driver
that restarts and decides the same bar again gets the first answer back, never a second
order. The decision (inputs' hashes, outputs, the model nodes' provider calls with their
tokens, the answer) is recorded on the account's `TradingDecisions` aggregate, once per
bar: a round that comes before the clone's next bar closes finds the bar decided and writes
nothing, so a 5m clone trades once per closed 5m bar however often rounds run. Each account
is leased (an advisory lock, as `runtime.leases`) for its turn, so two drivers never trade
one account at once.

Like every job, it appends nothing because time passed: no new closed bar, a frozen or
closed account, a race whose trading has ended (`trading-ended`), or a clone with no
published version write nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.postgres import PostgresDatastore

from aggregates.decisions import TradingDecisions, decisions_id
from aggregates.errors import DomainError
from aggregates.ports import PriceSource
from aggregates.prop_accounts import OPEN, QUANTUM, ActionRequest, PropAccount, to_quantum
from aggregates.races import Race
from aggregates.strategy_executor import (
    INTERVAL_SECONDS,
    Decision,
    Holding,
    MarketFrame,
    Strategy,
    compile_strategy,
    decide_latest,
)
from ingest.candles import MarketDataMissingError, market_frame
from ingest.providers.model_nodes import ModelRouting, RoutedModel, offline_router
from projections.cadence import TradedAccount, accounts_to_trade, published_graph
from runtime.clock import Clock
from runtime.leases import lease_on
from services.eventlog import EventLog
from services.jobs import job_context
from services.prop_trading import submit_action

log = logging.getLogger(__name__)

CADENCE_JOB = "engine_cadence"


def client_action_id(account_id: UUID, asset: str, bar_close_time: int) -> str:
    """The action's id for this account, asset and bar: the same bar, the same id."""
    digest = hashlib.sha256(f"{account_id}:{asset}:{bar_close_time}".encode()).hexdigest()
    return f"cadence-{asset}-{bar_close_time}-{digest[:12]}"


@dataclass
class CadenceRound:
    """What one round did: decisions recorded, orders sent, and accounts skipped, by why
    (`error`: the account's turn failed unexpectedly; it is logged with the account)."""

    decided: int = 0
    ordered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def order_for(
    decision: Decision, account: PropAccount, asset: str, previous_target: str | None, cid: str
) -> ActionRequest | None:
    """The action moving the held position to the decision's target, or None to hold: the
    target did not change since the last decision (no rebalancing while it holds), or the
    move is below the smallest size."""
    target = Decimal(repr(decision.target_exposure))
    held = account.position(asset).size
    if previous_target is not None and Decimal(previous_target) == target and held != 0:
        return None
    leverage = Decimal(max(1, int(decision.leverage)))
    if target == 0:
        if held == 0:
            return None
        side = "sell" if held > 0 else "buy"
        return ActionRequest(cid, asset, side, size=abs(held), reduce_only=True, leverage=leverage)
    close = Decimal(repr(decision.close))
    wanted = to_quantum(target * account.equity / close)
    move = wanted - held
    if abs(move) < QUANTUM:
        return None
    side = "buy" if move > 0 else "sell"
    return ActionRequest(cid, asset, side, size=abs(move), leverage=leverage)


@dataclass(frozen=True)
class CadenceDriver:
    """One round over the roster (at most `max_accounts`), each account under its lease."""

    event_log: EventLog
    prices: PriceSource
    datastore: PostgresDatastore
    url: str
    clock: Clock
    interval: str
    """The bars of a clone whose graph declares no cadence."""
    max_accounts: int
    max_mark_age: timedelta
    router: ModelRouting = field(default_factory=offline_router)
    roster: Callable[[int], list[TradedAccount]] | None = None
    # A published version never changes, so its compiled graph is kept; the bars read are
    # shared by the accounts of one version within a round (same version, interval and bar).
    _strategies: dict[tuple[UUID, str], Strategy] = field(
        default_factory=dict, repr=False, compare=False
    )
    _frames: dict[tuple[str, str, int], tuple[MarketFrame, str]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __call__(self) -> CadenceRound:
        done = CadenceRound()
        self._frames.clear()
        roster = self.roster or (lambda limit: accounts_to_trade(self.datastore, limit))
        with psycopg.connect(self.url, autocommit=True) as leases:
            for target in roster(self.max_accounts):
                with lease_on(leases, f"{CADENCE_JOB}:{target.account_id}") as held:
                    if not held:
                        done.skipped["leased-elsewhere"] += 1
                        continue
                    try:
                        outcome = self.trade(target)
                    except DomainError as error:  # one account's refusal never stops the round
                        log.warning("%s skipped %s: %s", CADENCE_JOB, target.account_id, error)
                        outcome = getattr(error, "code", "refused")
                    except Exception:
                        # Nor does one account's fault: the others still trade this round,
                        # and this one is tried again the next (its bar is not yet decided).
                        log.exception("%s failed on %s", CADENCE_JOB, target.account_id)
                        outcome = "error"
                self.tally(done, outcome)
        return done

    @staticmethod
    def tally(done: CadenceRound, outcome: str) -> None:
        if outcome == "ordered":
            done.decided += 1
            done.ordered += 1
        elif outcome == "decided":
            done.decided += 1
        else:
            done.skipped[outcome] += 1

    def version_of(self, target: TradedAccount) -> str | None:
        if target.version_hash is not None or target.race_id is None:
            return target.version_hash
        race = self.event_log.read(Race, target.race_id)
        entrant = next(
            (
                e
                for e in (race.entrants if race else [])
                if str(e["clone_id"]) == str(target.clone_id)
            ),
            None,
        )
        return str(entrant["version_hash"]) if entrant and entrant.get("version_hash") else None

    def strategy_of(self, clone_id: UUID, version_hash: str) -> Strategy | None:
        key = (clone_id, version_hash)
        strategy = self._strategies.get(key)
        if strategy is None:
            graph = published_graph(self.datastore, clone_id, version_hash)
            if graph is None:
                return None  # not kept: the version may yet be published
            strategy = self._strategies[key] = compile_strategy(graph)
        return strategy

    def bars_of(self, strategy: Strategy, interval: str, now: datetime) -> tuple[MarketFrame, str]:
        """The latest closed bars the graph reads, and their hash; read once per version,
        interval and bar within a round."""
        seconds = INTERVAL_SECONDS[interval]
        key = (strategy.version, interval, int(now.timestamp()) // seconds)
        found = self._frames.get(key)
        if found is None:
            with self.datastore.transaction(commit=False) as cursor:
                frame = market_frame(
                    cursor, strategy, interval=interval, end=now, bars=strategy.lookback(interval)
                )
            found = self._frames[key] = (frame, frame.digest())
        return found

    def trade(self, target: TradedAccount) -> str:
        """Decide the account's latest closed bar and act on it; answers what happened."""
        now = self.clock()
        version_hash = self.version_of(target)
        strategy = self.strategy_of(target.clone_id, version_hash) if version_hash else None
        if strategy is None:
            return "no-published-version"
        account = self.event_log.read(PropAccount, target.account_id)
        if account is None:
            return "no-account"
        if account.trading_ended(now):
            return "trading-ended"
        if account.status != OPEN:
            return f"account-{account.status}"
        asset = strategy.asset
        interval = strategy.graph.cadence or self.interval
        try:
            frame, data_hash = self.bars_of(strategy, interval, now)
        except MarketDataMissingError:
            return "market-data-missing"
        book_id = decisions_id(target.account_id)
        book = self.event_log.read(TradingDecisions, book_id)
        bar = int(frame.close_time[-1])
        if book is not None and book.decided(asset, bar):
            return "already-decided"
        position = account.position(asset)
        entry = position.average_entry
        holding = Holding(
            float(position.size),
            float(entry) if entry is not None else float("nan"),
            book.stop(asset) if book else 0,
        )
        models = RoutedModel(self.router)
        decision = decide_latest(strategy, frame, holding, models)
        model_calls = [record for call in models.calls for record in call.records()]
        cid = client_action_id(target.account_id, asset, bar)
        context = job_context(CADENCE_JOB, self.clock, f"{target.account_id}:{asset}:{bar}")
        request = order_for(decision, account, asset, book.target(asset) if book else None, cid)
        answer: dict[str, Any]
        if request is None:
            answer = {"status": "held", "reason": None}
        else:
            try:
                result = submit_action(
                    self.event_log,
                    context,
                    self.prices,
                    target.account_id,
                    request,
                    max_mark_age=self.max_mark_age,
                ).result
                answer = {"status": result.status, "reason": result.reason, "fill": result.fill}
            except DomainError as error:
                answer = {"status": "refused", "reason": getattr(error, "code", None)}

        def record(unit: Any) -> bool:
            found = unit.find(TradingDecisions, book_id)
            decisions = found or unit.add(
                TradingDecisions(id=book_id, account_id=target.account_id)
            )
            return bool(
                decisions.record(
                    asset=asset,
                    bar_close_time=bar,
                    version_hash=version_hash or "",
                    data_hash=data_hash,
                    target_exposure=repr(decision.target_exposure),
                    stopped=int(decision.stopped),
                    leverage=int(decision.leverage),
                    outputs={k: repr(v) for k, v in decision.outputs.items()},
                    client_action_id=None if request is None else cid,
                    answer=answer,
                    interval=interval,
                    clone_id=account.clone_id,
                    owner_id=account.owner_id,
                    model_calls=model_calls,
                )
            )

        self.event_log.execute(context, record)
        return "decided" if request is None else "ordered"
