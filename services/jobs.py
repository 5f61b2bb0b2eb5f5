"""What every scheduled job shares: the command context its events record."""

from __future__ import annotations

from aggregates.base import CommandContext
from runtime.clock import Clock


def job_context(job: str, clock: Clock, key: str) -> CommandContext:
    """A job's events record the job as actor, its clock's time, and as correlation the job
    run (job and time); the work item (`key`) is what caused this command."""
    now = clock()
    run = f"{job}:{now.isoformat()}"
    return CommandContext(
        actor=f"worker:{job}", occurred_at=now, correlation_id=run, causation_id=f"{run}:{key}"
    )
