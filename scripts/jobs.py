"""`pumpparty jobs list|show|replay`: the job queue for operators (`services/job_queue.py`).

A replay runs a dead job again from its first attempt and is an event (`DeadLetter.Replayed`)
whose actor is `operator:cli` and whose reason is the one given.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import orjson
import typer

from runtime.job_queue import STATES, JobRow
from scripts.command_line import fail, opened, operator_context
from services.dead_letters import queue_of, replay_job

jobs_app = typer.Typer(help="The job queue: list jobs, show one, replay a dead one.")

JobId = Annotated[UUID, typer.Argument(help="The job's id.")]


def _line(row: JobRow) -> str:
    error = f"  {row.last_error}" if row.last_error else ""
    return (
        f"{row.id}  {row.kind:<10} {row.state:<9} attempts {row.attempts}/{row.max_attempts}"
        f"  {row.updated_at.isoformat()}{error}"
    )


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help=f"Only jobs in this state ({', '.join(STATES)}).")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
) -> None:
    """Jobs, newest first: id, kind, state, attempts, last change, last error."""
    if state is not None and state not in STATES:
        fail(f"no state {state!r}; states: {', '.join(STATES)}")
    with opened(ctx) as services:
        for row in queue_of(services).find(state=state, kind=kind, limit=limit):
            typer.echo(_line(row))


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: JobId) -> None:
    """One job as JSON (payload, result and lease included)."""
    with opened(ctx) as services:
        row = queue_of(services).get(job_id)
    if row is None:
        fail(f"no job {job_id}")
    typer.echo(orjson.dumps(row, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@jobs_app.command("replay")
def jobs_replay(
    ctx: typer.Context,
    job_id: JobId,
    reason: Annotated[str, typer.Option(help="Why the job may run again (recorded).")],
) -> None:
    """Run a dead job again from its first attempt; the replay is an event with the reason."""
    with opened(ctx) as services:
        written = replay_job(
            queue_of(services), services.event_log, operator_context("jobs-replay"), job_id, reason
        )
    typer.echo(
        f"{job_id}: queued again ({written.result.kind}), event at position {written.position}"
    )
