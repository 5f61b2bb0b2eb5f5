"""The engine's executor over HTTP: dry runs and backtests of a clone's published versions
(owner routes), the job queue for workers that lease backtests over HTTP (service token
with `backtest:lease`), and operators' replays of dead jobs (admin).

Someone else's clone, version or backtest is answered exactly like a missing one.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, Path, Response
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from aggregates.backtests import BacktestReport, BarDecision, text
from aggregates.errors import InvalidCommandError, NotFoundError
from aggregates.strategy_graph import decimal_text
from api.auth import AdminUser, CurrentUser, Principal, owned_or_404, require_service
from api.commands import AdminCommand
from api.deps import ClockDep, ServicesDep, command_context, found, wait_for
from api.routers.clones import graph_rules
from api.routing import APIRouter
from api.schemas import IdempotencyKey, Reason
from projections.strategy_versions import PublishedVersionRow, published_version
from runtime import job_queue
from runtime.clock import Clock
from runtime.job_queue import JobRow
from services import backtests, dead_letters
from services.backtests import BACKTEST_KIND, BACKTEST_LEASE_SCOPE, BacktestPayload
from services.bootstrap import Services
from services.job_queue import JobNotFoundError, JobQueue, StaleLeaseError, queue_policy
from services.market_data import MarketIntervals

router = APIRouter(prefix="/v1/clones", tags=["engine"])
jobs_router = APIRouter(prefix="/v1/engine/jobs", tags=["engine"])
admin_router = APIRouter(prefix="/v1/admin/jobs", tags=["admin"])

VersionId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{64}$", description="the version's id: its graph's SHA-256")
]
Interval = Literal["1m", "5m", "15m", "1h"]
Equity = Annotated[
    Decimal, Field(gt=0, le=Decimal("1e12"), max_digits=21, decimal_places=8, examples=["10000"])
]
RuleSetKey = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}(@[1-9][0-9]{0,5})?$")
]
LeaseScope = Annotated[Principal, Depends(require_service(BACKTEST_LEASE_SCOPE))]
JobState = Literal["queued", "leased", "succeeded", "dead", "discarded"]


def queue_of(services: Services, clock: Clock) -> JobQueue:
    return JobQueue(services.datastore, clock, queue_policy(services.settings))


async def owned_version(
    services: Services, user: Principal, clone_id: UUID, version_id: str
) -> PublishedVersionRow:
    row = await found(
        services, "clones", lambda: published_version(services.reads, clone_id, version_id)
    )
    owned_or_404(row.owner_id if row else None, user, f"version {version_id} of clone {clone_id}")
    assert row is not None
    return row


# --- dry runs -------------------------------------------------------------------------------


class DryRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bars: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="how many of the latest closed bars to decide on (at most the"
        " service's `dry_run_max_bars`); the bars before them that fill the windows are"
        " read too",
    )
    interval: Interval | None = Field(
        default=None,
        description="the candles' interval (default: the graph's cadence, else the one ingestion"
        " stores; a cadence not stored is a 422 `cadence-not-ingested`)",
    )


class BarDecisionPublic(BaseModel):
    open_time: datetime
    close_time: datetime
    close: str | None
    raw_target: str | None = Field(description="the graph's target exposure; null: undetermined")
    target_exposure: str | None = Field(
        description="the position to hold from the next open, as a fraction of equity"
        " (negative: short), after the stop-loss"
    )
    position: str | None = Field(description="units held during the bar")
    order: str | None = Field(
        description="units the decision orders at the next open (the last bar's: pending)"
    )
    stopped: int = Field(description="the stop-loss in force after the bar: 1, -1 or 0")
    nodes: dict[str, str | None] = Field(description="every node's value at the bar")


class DryRunPublic(BaseModel):
    clone_id: UUID
    version_id: str
    asset: str
    interval: str
    lookback: int = Field(description="bars a decision reads, the current one included")
    undetermined_bars: int = Field(description="bars below whose decision is undetermined")
    leverage: int
    data_hash: str
    model_evaluator: str
    missing_channels: list[str]
    decisions: list[BarDecisionPublic]


def decision_public(decision: BarDecision) -> BarDecisionPublic:
    return BarDecisionPublic(
        open_time=decision.open_time,
        close_time=decision.close_time,
        close=text(decision.close),
        raw_target=text(decision.raw_target),
        target_exposure=text(decision.target_exposure),
        position=text(decision.position),
        order=text(decision.order),
        stopped=decision.stopped,
        nodes={node_id: text(value) for node_id, value in decision.outputs.items()},
    )


@router.post(
    "/{clone_id}/versions/{version_id}/dry-run",
    operation_id="clone_version_dry_run",
    dependencies=[Depends(wait_for("clones"))],
)
async def dry_run(
    clone_id: UUID,
    version_id: VersionId,
    body: DryRunCreate,
    user: CurrentUser,
    services: ServicesDep,
    clock: ClockDep,
) -> DryRunPublic:
    """Check the version against today's guardrails and evaluate it on the latest closed
    candles: the decision at each bar, filled at the next bar's open. No order is sent."""
    row = await owned_version(services, user, clone_id, version_id)
    settings = services.settings
    market = MarketIntervals.of(services.datastore, settings)
    now = clock()
    run = await asyncio.to_thread(
        lambda: backtests.dry_run(
            services.datastore,
            row.graph,
            rules=graph_rules(settings),
            interval=market.interval_for(row.graph, body.interval, now),
            bars=body.bars,
            max_bars=settings.dry_run_max_bars,
            now=now,
            starting_equity=settings.audition_starting_equity,
        )
    )
    return DryRunPublic(
        clone_id=clone_id,
        version_id=version_id,
        asset=run.strategy.asset,
        interval=run.frame.interval,
        lookback=run.lookback,
        undetermined_bars=run.undetermined,
        leverage=run.strategy.limits.leverage,
        data_hash=run.frame.digest(),
        model_evaluator=run.model_evaluator,
        missing_channels=list(run.simulation.evaluation.missing_channels),
        decisions=[decision_public(d) for d in run.decisions],
    )


# --- backtests ------------------------------------------------------------------------------


class BacktestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bars: int = Field(
        default=2000,
        ge=2,
        le=1_000_000,
        description="how many of the latest closed bars before `end` to run over (at most"
        " the service's `backtest_max_bars`)",
    )
    interval: Interval | None = Field(
        default=None,
        description="the candles' interval (default: the graph's cadence, else the one ingestion"
        " stores; a cadence not stored is a 422 `cadence-not-ingested`)",
    )
    end: AwareDatetime | None = Field(
        default=None,
        description="only candles closed before this are read (default and at most: now)",
    )
    starting_equity: Equity | None = Field(
        default=None, description="in USD (default: an audition's starting equity)"
    )
    rule_set: RuleSetKey = Field(
        default="audition", description="the prop rule set whose fee and slippage apply"
    )


class BacktestTermsPublic(BaseModel):
    bars: int
    interval: str
    end: datetime
    starting_equity: str
    rule_set: str


class BacktestJobPublic(BaseModel):
    job_id: UUID
    clone_id: UUID
    version_id: str
    state: JobState
    attempts: int
    max_attempts: int
    terms: BacktestTermsPublic
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    last_error: str | None
    report: BacktestReport | None


def backtest_public(row: JobRow) -> BacktestJobPublic:
    payload = BacktestPayload.model_validate(row.payload)
    terms = payload.terms
    return BacktestJobPublic(
        job_id=row.id,
        clone_id=payload.clone_id,
        version_id=payload.version_id,
        state=row.state,  # type: ignore[arg-type]
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        terms=BacktestTermsPublic(
            bars=terms.bars,
            interval=terms.interval,
            end=terms.end,
            starting_equity=decimal_text(terms.starting_equity),
            rule_set=terms.rule_set,
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        last_error=row.last_error,
        report=BacktestReport.model_validate(row.result) if row.result is not None else None,
    )


@router.post(
    "/{clone_id}/versions/{version_id}/backtests",
    status_code=202,
    operation_id="clone_version_backtest",
    dependencies=[Depends(wait_for("clones"))],
)
async def create_backtest(
    clone_id: UUID,
    version_id: VersionId,
    body: BacktestCreate,
    user: CurrentUser,
    services: ServicesDep,
    clock: ClockDep,
    idempotency_key: IdempotencyKey = None,
) -> BacktestJobPublic:
    """Queue a backtest of the version; read its state and report at the job's URL. With an
    `Idempotency-Key`, the same request again answers the first job."""
    row = await owned_version(services, user, clone_id, version_id)
    settings = services.settings
    market = MarketIntervals.of(services.datastore, settings)
    job = await asyncio.to_thread(
        lambda: backtests.enqueue_backtest(
            queue_of(services, clock),
            clone_id=clone_id,
            version_id=version_id,
            owner_id=row.owner_id,
            graph=row.graph,
            rules=graph_rules(settings),
            bars=body.bars,
            max_bars=settings.backtest_max_bars,
            interval=market.interval_for(row.graph, body.interval, clock()),
            end=body.end,
            starting_equity=body.starting_equity or settings.audition_starting_equity,
            rule_set_key=body.rule_set,
            key=idempotency_key,
        )
    )
    return backtest_public(job)


@router.get(
    "/{clone_id}/versions/{version_id}/backtests/{job_id}",
    operation_id="clone_version_backtest_get",
)
async def get_backtest(
    clone_id: UUID, version_id: VersionId, job_id: UUID, user: CurrentUser, services: ServicesDep
) -> BacktestJobPublic:
    """The backtest's state, and its report once it has succeeded."""
    row = await job_queue.job_by_id(services.reads, job_id)
    mine = (
        row is not None
        and row.kind == BACKTEST_KIND
        and row.subject == backtests.backtest_subject(clone_id, version_id)
        and row.payload.get("owner_id") == str(user.user_id)
    )
    if not mine:
        raise NotFoundError(f"backtest {job_id} not found")
    assert row is not None
    return backtest_public(row)


# --- workers over HTTP ----------------------------------------------------------------------


class LeaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[\x21-\x7e]+$",
        description="names the worker process (recorded on the job with the service's name)",
    )
    kinds: list[Literal["backtest"]] = Field(default=["backtest"], min_length=1, max_length=1)


class LeasePublic(BaseModel):
    job_id: UUID
    kind: str
    payload: dict[str, Any]
    lease_token: UUID = Field(description="present it on every heartbeat, completion and failure")
    lease_until: datetime
    attempt: int
    max_attempts: int
    heartbeat_seconds: float = Field(description="beat at least this often to keep the lease")


class LeaseTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lease_token: UUID


class HeartbeatCreate(LeaseTokenCreate):
    progress: dict[str, Any] | None = None


class CompleteCreate(LeaseTokenCreate):
    result: dict[str, Any] = Field(description="a backtest's: its report")


class FailCreate(LeaseTokenCreate):
    error: str = Field(min_length=1, max_length=2000)
    retry: bool = Field(
        default=True, description="false: retrying cannot help, the job goes dead at once"
    )


class JobStatePublic(BaseModel):
    job_id: UUID
    kind: str
    state: JobState
    attempts: int
    max_attempts: int
    run_at: datetime
    lease_until: datetime | None
    last_error: str | None


class InvalidJobResultError(InvalidCommandError):
    code = "job-result-invalid"


def job_state(row: JobRow) -> JobStatePublic:
    return JobStatePublic(
        job_id=row.id,
        kind=row.kind,
        state=row.state,  # type: ignore[arg-type]
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        run_at=row.run_at,
        lease_until=row.lease_until,
        last_error=row.last_error,
    )


def _leasable(queue: JobQueue, job_id: UUID) -> JobRow:
    """A job the scope may lease; any other is answered as missing."""
    row = queue.get(job_id)
    if row is None or row.kind != BACKTEST_KIND:
        raise JobNotFoundError(f"job {job_id} not found")
    return row


@jobs_router.post(
    "/lease",
    operation_id="engine_job_lease",
    responses={200: {"model": LeasePublic}, 204: {"description": "no job is ready"}},
    response_model=None,
)
def lease_job(
    body: LeaseCreate, service: LeaseScope, services: ServicesDep, clock: ClockDep
) -> LeasePublic | Response:
    """Lease the next ready backtest job: 204 when none is ready."""
    queue = queue_of(services, clock)
    lease = queue.lease(body.kinds, f"{service.subject}/{body.worker}")
    if lease is None:
        return Response(status_code=204)
    return LeasePublic(
        job_id=lease.job_id,
        kind=lease.kind,
        payload=lease.payload,
        lease_token=lease.token,
        lease_until=lease.until,
        attempt=lease.attempt,
        max_attempts=lease.max_attempts,
        heartbeat_seconds=queue.policy.heartbeat_seconds,
    )


@jobs_router.post("/{job_id}/heartbeat", operation_id="engine_job_heartbeat")
def heartbeat_job(
    job_id: UUID, body: HeartbeatCreate, _: LeaseScope, services: ServicesDep, clock: ClockDep
) -> JobStatePublic:
    """Keep the lease (409 `lease-stale` once it is lost: stop working on the job)."""
    queue = queue_of(services, clock)
    _leasable(queue, job_id)
    return job_state(queue.heartbeat(job_id, body.lease_token, body.progress))


@jobs_router.post("/{job_id}/inputs", operation_id="engine_job_inputs")
def job_inputs(
    job_id: UUID, body: LeaseTokenCreate, _: LeaseScope, services: ServicesDep, clock: ClockDep
) -> dict[str, Any]:
    """The market data a leased backtest reads (`MarketFrame.to_json`: closed candles,
    channels and funding on the bar timeline; null where missing), for the lease holder."""
    queue = queue_of(services, clock)
    row = _leasable(queue, job_id)
    if row.state != "leased" or row.lease_token != body.lease_token:
        raise StaleLeaseError("this lease token no longer holds the job")
    frame = backtests.backtest_inputs(services.datastore, row.payload)
    return frame.to_json()


@jobs_router.post("/{job_id}/complete", operation_id="engine_job_complete")
def complete_job(
    job_id: UUID, body: CompleteCreate, worker: LeaseScope, services: ServicesDep, clock: ClockDep
) -> JobStatePublic:
    """Finish the job with its result (a backtest's report, checked); a retried completion
    with the same token answers the same, any other token is 409 `lease-stale`. The report
    is kept as an artifact of the clone."""
    queue = queue_of(services, clock)
    _leasable(queue, job_id)
    try:
        report = BacktestReport.model_validate(body.result)
    except ValidationError as error:
        raise InvalidJobResultError(f"not a backtest report: {error.errors()[0]['msg']}") from None
    result = report.model_dump(mode="json")
    done = queue.complete(job_id, body.lease_token, result)
    backtests.record_report(
        services.event_log, command_context(worker.actor, clock), job_id, done.payload, result
    )
    return job_state(done)


@jobs_router.post("/{job_id}/fail", operation_id="engine_job_fail")
def fail_job(
    job_id: UUID, body: FailCreate, _: LeaseScope, services: ServicesDep, clock: ClockDep
) -> JobStatePublic:
    """Record a failed attempt: retried after the backoff, or dead after the last one."""
    queue = queue_of(services, clock)
    _leasable(queue, job_id)
    return job_state(queue.fail(job_id, body.lease_token, body.error, retry=body.retry))


# --- operators ------------------------------------------------------------------------------


class ReplayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class JobPublic(JobStatePublic):
    subject: str | None
    payload: dict[str, Any]
    leased_by: str | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    replays: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ReplayedPublic(BaseModel):
    job: JobPublic
    position: int


def job_public(row: JobRow) -> JobPublic:
    return JobPublic(
        **job_state(row).model_dump(),
        subject=row.subject,
        payload=row.payload,
        leased_by=row.leased_by,
        first_failed_at=row.first_failed_at,
        last_failed_at=row.last_failed_at,
        replays=row.replays,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


@admin_router.get("/{job_id}", operation_id="admin_job_get")
async def get_job(job_id: UUID, _: AdminUser, services: ServicesDep) -> JobPublic:
    row = await job_queue.job_by_id(services.reads, job_id)
    if row is None:
        raise JobNotFoundError(f"job {job_id} not found")
    return job_public(row)


@admin_router.post("/{job_id}/replay", operation_id="admin_job_replay")
def replay_job(
    job_id: UUID, body: ReplayCreate, admin: AdminCommand, services: ServicesDep, clock: ClockDep
) -> ReplayedPublic:
    """Run a dead job again from its first attempt; the replay is an event with the admin
    and the reason (409 `job-not-dead` for a job that is not dead, 409
    `dead-letter-discarded` for a discarded one). The same as
    `/v1/admin/dead-letters/{id}/replay` (`services/dead_letters.py`)."""
    queue = queue_of(services, clock)
    written = dead_letters.replay_job(queue, admin.event_log, admin.context, job_id, body.reason)
    return ReplayedPublic(job=job_public(written.result), position=written.position)
