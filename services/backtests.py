"""Dry runs and backtests of published strategy versions (the engine: issue 19, items 3-4).

A dry run checks the version against today's guardrails and evaluates it on the latest
closed candles, inside the request: the decision at each bar with every node's value, and
no order anywhere. A backtest is a job of the one job queue (kind `backtest`): the owner's
request is checked, then queued with everything it needs pinned (the canonical graph, the
window's end, the bars, the rule set's version, the starting equity), so any worker, in
this process's worker or a remote one over HTTP, computes the same report from it. The
report (`aggregates.backtests.BacktestReport`) is the job's result, and carries the hashes
of the graph and of the market data it used.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID, uuid4

from eventsourcing.postgres import PostgresDatastore
from pydantic import BaseModel, ConfigDict, ValidationError

from aggregates.backtest_reports import BacktestReportRecord, report_record_id
from aggregates.backtests import (
    BacktestReport,
    BarDecision,
    Costs,
    backtest,
    bar_decisions,
    simulate,
)
from aggregates.backtests import Simulation as BacktestSimulation
from aggregates.base import CommandContext, derive_id, fingerprint
from aggregates.errors import InvalidCommandError
from aggregates.prop_rules import RuleSet, UnknownRuleSetError, rule_set
from aggregates.strategy_executor import (
    GraphNotExecutableError,
    MarketFrame,
    Strategy,
    compile_strategy,
)
from aggregates.strategy_graph import GraphRules, check_graph
from ingest.candles import MarketDataMissingError, closed_bar_count, market_frame
from ingest.providers.model_nodes import RoutedModel, offline_router
from runtime.clock import Clock
from runtime.job_queue import JobRow
from runtime.settings import Settings
from services.eventlog import EventLog, UnitOfWork
from services.job_queue import JobConsumer, JobQueue, Lease, PermanentJobError, queue_policy
from services.jobs import job_context

BACKTEST_KIND = "backtest"
BACKTEST_JOB = "backtest_worker"
"""The worker's scheduled job that leases and runs backtest jobs."""
BACKTEST_LEASE_SCOPE = "backtest:lease"
"""The service scope that leases backtest jobs over HTTP."""

Interval = Literal["1m", "5m", "15m", "1h"]


class TooManyBarsError(InvalidCommandError):
    code = "too-many-bars"


class BacktestTerms(BaseModel):
    """What a backtest runs over, pinned when it is queued."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bars: int
    interval: Interval
    end: datetime
    """Only candles that closed before this moment are read."""
    starting_equity: Decimal
    rule_set: str
    """The prop rule set's key (`audition@1`): its fee and slippage."""


class BacktestPayload(BaseModel):
    """A backtest job's payload: everything a worker needs besides the market data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clone_id: UUID
    version_id: str
    owner_id: UUID
    graph: dict[str, Any]
    terms: BacktestTerms


def pinned_rule_set(key: str) -> RuleSet:
    """`audition` (the version in force) or `audition@1`."""
    name, _, version = key.partition("@")
    if version and not version.isdigit():
        raise UnknownRuleSetError(f"no rule set {key!r}")
    return rule_set(name, int(version) if version else None)


def checked_strategy(graph: dict[str, Any], rules: GraphRules) -> Strategy:
    """The version as it stands against today's guardrails (a 422 naming each broken rule
    when it no longer passes them), ready to run."""
    check_graph(graph, rules)
    return compile_strategy(graph)


def _check_bars(bars: int, most: int, what: str) -> None:
    if bars > most:
        raise TooManyBarsError(f"a {what} reads at most {most} bars; {bars} were asked")


# --- dry runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DryRun:
    strategy: Strategy
    simulation: BacktestSimulation
    decisions: list[BarDecision]
    lookback: int
    model_evaluator: str

    @property
    def frame(self) -> MarketFrame:
        return self.simulation.frame

    @property
    def undetermined(self) -> int:
        """Bars among the decisions whose target is still undetermined."""
        return sum(1 for d in self.decisions if d.raw_target != d.raw_target)


def dry_run(
    datastore: PostgresDatastore,
    graph: dict[str, Any],
    *,
    rules: GraphRules,
    interval: Interval,
    bars: int,
    max_bars: int,
    now: datetime,
    rule_set_key: str = "audition",
    starting_equity: Decimal = Decimal("10000"),
) -> DryRun:
    """The version's decision at each of the latest `bars` closed bars before `now`, with
    enough bars before them read to fill every window; nothing is ordered."""
    _check_bars(bars, max_bars, "dry run")
    strategy = checked_strategy(graph, rules)
    rules_in_force = pinned_rule_set(rule_set_key)
    lookback = strategy.lookback(interval)
    with datastore.transaction(commit=False) as cursor:
        frame = market_frame(cursor, strategy, interval=interval, end=now, bars=bars + lookback - 1)
    models = RoutedModel(offline_router())
    simulation = simulate(strategy, frame, Costs.of(rules_in_force), float(starting_equity), models)
    return DryRun(strategy, simulation, bar_decisions(simulation, bars), lookback, models.name)


# --- backtests ------------------------------------------------------------------------------


def backtest_subject(clone_id: UUID, version_id: str) -> str:
    return f"{clone_id}/{version_id}"


def enqueue_backtest(
    queue: JobQueue,
    *,
    clone_id: UUID,
    version_id: str,
    owner_id: UUID,
    graph: dict[str, Any],
    rules: GraphRules,
    bars: int,
    max_bars: int,
    interval: Interval,
    end: datetime | None,
    starting_equity: Decimal,
    rule_set_key: str,
    key: str | None,
) -> JobRow:
    """Check the request, then queue it. With an idempotency key the job's id derives from
    the owner and the key: the same request again returns the first job, another request
    with the same key is a 409."""
    _check_bars(bars, max_bars, "backtest")
    strategy = checked_strategy(graph, rules)
    if strategy.version != version_id:
        raise GraphNotExecutableError("the version's graph does not hash to its id")
    pinned = pinned_rule_set(rule_set_key)
    now = queue.clock()
    until = min(end, now) if end is not None else now
    with queue.datastore.transaction(commit=False) as cursor:
        if closed_bar_count(cursor, strategy.asset, interval, until) == 0:
            raise MarketDataMissingError(
                f"no closed {interval} candle of {strategy.asset} is stored before"
                f" {until.isoformat()}"
            )
    payload = BacktestPayload(
        clone_id=clone_id,
        version_id=version_id,
        owner_id=owner_id,
        graph=graph,
        terms=BacktestTerms(
            bars=bars,
            interval=interval,
            end=until,
            starting_equity=starting_equity,
            rule_set=pinned.key,
        ),
    )
    request = {
        "clone_id": clone_id,
        "version_id": version_id,
        "bars": bars,
        "interval": interval,
        "end": end.isoformat() if end else "latest",
        "starting_equity": starting_equity,
        "rule_set": rule_set_key,
    }
    return queue.enqueue(
        BACKTEST_KIND,
        payload.model_dump(mode="json"),
        job_id=derive_id("BacktestJob", f"{owner_id}:{key}") if key else uuid4(),
        subject=backtest_subject(clone_id, version_id),
        fingerprint=fingerprint(request),
    )


def backtest_payload(payload: dict[str, Any]) -> BacktestPayload:
    try:
        return BacktestPayload.model_validate(payload)
    except ValidationError as error:
        raise PermanentJobError(f"not a backtest job: {error.errors()[0]['msg']}") from None


def backtest_inputs(datastore: PostgresDatastore, payload: dict[str, Any]) -> MarketFrame:
    """The market data a backtest job reads (what a remote worker asks for over HTTP)."""
    job = backtest_payload(payload)
    strategy = compile_strategy(job.graph)
    with datastore.transaction(commit=False) as cursor:
        return market_frame(
            cursor,
            strategy,
            interval=job.terms.interval,
            end=job.terms.end,
            bars=job.terms.bars,
        )


def run_backtest(payload: dict[str, Any], frame: MarketFrame) -> BacktestReport:
    """The report of a backtest job over its market data: pure, the same anywhere."""
    job = backtest_payload(payload)
    try:
        strategy = compile_strategy(job.graph)
        rules = pinned_rule_set(job.terms.rule_set)
    except (GraphNotExecutableError, UnknownRuleSetError) as error:
        raise PermanentJobError(str(error)) from None
    if strategy.version != job.version_id:
        raise PermanentJobError("the job's graph does not hash to its version id")
    # Model nodes go through a router with the offline provider alone, so every worker
    # computes the same report. Its calls (one per model node: all bars in one request) are
    # summed into the report rather than recorded one event per bar: nobody is charged for
    # them, and the report is what the owner reads.
    models = RoutedModel(offline_router())
    result = backtest(strategy, frame, rules, job.terms.starting_equity, models)
    usage = models.usage
    calls = sum(len(call.attempts) for call in models.calls)
    return result.model_copy(
        update={
            "model_calls": calls,
            "model_prompt_tokens": usage.prompt_tokens,
            "model_completion_tokens": usage.completion_tokens,
        }
    )


def record_report(
    event_log: EventLog,
    context: CommandContext,
    job_id: UUID,
    payload: dict[str, Any],
    report: dict[str, Any],
) -> None:
    """Keep the job's report as an artifact of its clone (once per job)."""
    job = backtest_payload(payload)

    def decide(unit: UnitOfWork) -> None:
        if unit.find(BacktestReportRecord, report_record_id(job_id)) is None:
            unit.add(
                BacktestReportRecord.of(job_id, job.clone_id, job.owner_id, job.version_id, report)
            )

    event_log.execute(context, decide)


@dataclass(frozen=True)
class BacktestHandler:
    """A backtest job's work in this process: read its market data, compute its report,
    keep it as an artifact of the clone (with `event_log`)."""

    datastore: PostgresDatastore
    event_log: EventLog | None = None
    clock: Clock | None = None

    def __call__(self, lease: Lease) -> dict[str, Any]:
        try:
            frame = backtest_inputs(self.datastore, lease.payload)
        except (GraphNotExecutableError, MarketDataMissingError) as error:
            raise PermanentJobError(str(error)) from None
        report = run_backtest(lease.payload, frame).model_dump(mode="json")
        if self.event_log is not None and self.clock is not None:
            # Before the completion: a lease lost meanwhile leaves the same report (the
            # job's inputs are pinned) for whichever worker completes it.
            context = job_context(BACKTEST_JOB, self.clock, str(lease.job_id))
            record_report(self.event_log, context, lease.job_id, lease.payload, report)
        return report


def backtest_queue(datastore: PostgresDatastore, clock: Clock, settings: Settings) -> JobQueue:
    return JobQueue(datastore, clock, queue_policy(settings))


def backtest_worker(
    datastore: PostgresDatastore,
    clock: Clock,
    settings: Settings,
    event_log: EventLog | None = None,
) -> JobConsumer:
    """The worker's scheduled job: lease backtest jobs and run them, one at a time."""
    return JobConsumer(
        backtest_queue(datastore, clock, settings),
        BACKTEST_KIND,
        BacktestHandler(datastore, event_log, clock),
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
