"""Health for operators: the database, each projection's lag, each worker's heartbeat.

`/v1/health` is public and cheap (the head of the log); the details, with raw error text
and process names, need the admin role or the `health:read` scope (issue 15, L3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Depends
from pydantic import BaseModel, Field

from api.auth import require_admin_or_scope
from api.deps import ClockDep, ReadsDep, ServicesDep, SettingsDep, health_reader
from api.routing import APIRouter
from projections import reconciliation, state

router = APIRouter(prefix="/v1/health", tags=["health"])

LATE_AFTER_INTERVALS = 3


class HealthPublic(BaseModel):
    status: str
    head_position: int


class ProjectionHealthPublic(BaseModel):
    name: str
    generation: int
    position: int
    head: int
    lag: int
    status: str
    stalled_position: int | None
    stalled_topic: str | None
    stalled_error: str | None
    stalled_since: datetime | None


class WorkerHealthPublic(BaseModel):
    job: str
    process: str
    beat_at: datetime
    interval_seconds: float
    age_seconds: float
    status: str
    last_error: str | None
    last_outcome: str | None = Field(
        description="what the last successful round did, e.g. `admitted 2, skipped 1`"
    )


class ReconciliationCheckPublic(BaseModel):
    name: str
    rule: str | None = Field(description="the invariant the check holds, in one line")
    ok: bool
    position: int = Field(description="the log position the check was judged at")
    breach_count: int


class ReconciliationPublic(BaseModel):
    status: str = Field(
        description="`ok`, `failing` (a check was breached), `stale` (the last completed"
        " check is older than `stale_after_seconds`: its result, breaches included, is"
        " shown but no longer current) or `unknown` (none yet)"
    )
    checked_at: datetime | None
    age_seconds: float | None = Field(description="how long ago the last check completed")
    stale_after_seconds: float
    trial_balance_minor: str | None
    breaches: list[dict[str, Any]]
    position: int | None = Field(
        default=None, description="the run's common log position (the lowest its models stood at)"
    )
    checks: list[ReconciliationCheckPublic] = Field(
        default_factory=list, description="every registered check of the run, by name"
    )


@router.get("", operation_id="health")
async def health(reads: ReadsDep) -> HealthPublic:
    return HealthPublic(status="ok", head_position=await reads.head())


@router.get(
    "/projections", operation_id="health_projections", dependencies=[Depends(health_reader)]
)
def projections_health(services: ServicesDep) -> list[ProjectionHealthPublic]:
    return [
        ProjectionHealthPublic(
            name=s.name,
            generation=s.generation,
            position=s.position,
            head=s.head,
            lag=s.lag,
            status=s.status,
            stalled_position=s.stalled_position,
            stalled_topic=s.stalled_topic,
            stalled_error=s.stalled_error,
            stalled_since=s.stalled_since,
        )
        for s in services.projections.statuses()
    ]


@router.get("/workers", operation_id="health_workers", dependencies=[Depends(health_reader)])
async def workers_health(reads: ReadsDep, clock: ClockDep) -> list[WorkerHealthPublic]:
    now = clock()
    workers = []
    for row in await state.worker_heartbeats(reads):
        age = (now - row.beat_at).total_seconds()
        late = age > LATE_AFTER_INTERVALS * row.interval_seconds
        workers.append(
            WorkerHealthPublic(
                job=row.job,
                process=row.process,
                beat_at=row.beat_at,
                interval_seconds=row.interval_seconds,
                age_seconds=max(age, 0.0),
                status="late" if late else "alive",
                last_error=row.last_error,
                last_outcome=row.last_outcome,
            )
        )
    return workers


@router.get(
    "/reconciliation",
    operation_id="health_reconciliation",
    # Breaches name user accounts and balances: auditors and admins only.
    dependencies=[Depends(require_admin_or_scope("audit:read"))],
)
async def reconciliation_health(reads: ReadsDep, settings: SettingsDep) -> ReconciliationPublic:
    """The latest ledger reconciliation: `failing` when any check was breached, `stale`
    when the last completed one is too old to speak for the ledger now."""
    stale_after = reconciliation.stale_after(settings)
    result = await reconciliation.latest_check(reads)
    if result is None:
        return ReconciliationPublic(
            status="unknown",
            checked_at=None,
            age_seconds=None,
            stale_after_seconds=stale_after,
            trial_balance_minor=None,
            breaches=[],
        )
    age = result.age_seconds or 0.0
    return ReconciliationPublic(
        status="stale" if age > stale_after else "ok" if result.ok else "failing",
        checked_at=result.checked_at,
        age_seconds=age,
        stale_after_seconds=stale_after,
        trial_balance_minor=str(result.trial_balance_minor),
        breaches=result.breaches,
        position=result.position,
        checks=[
            ReconciliationCheckPublic(
                name=c.name,
                rule=reconciliation.RULES.get(c.name),
                ok=c.ok,
                position=c.position,
                breach_count=c.breach_count,
            )
            for c in result.checks
        ],
    )
