"""`pumpparty jobs list|show|replay`: the job queue for operators (`services/job_queue.py`).

A replay runs a dead job again from its first attempt and is an event (`DeadLetter.Replayed`)
whose actor is `operator:cli` and whose reason is the one given.
"""

from __future__ import annotations

from typing import Annotated, NoReturn
from uuid import UUID, uuid4

import orjson
import typer

from aggregates.base import CommandContext
from aggregates.errors import DomainError
from runtime.clock import system_clock
from runtime.job_queue import STATES, JobRow
from runtime.settings import Settings
from services.bootstrap import Services, open_services
from services.job_queue import JobQueue, queue_policy

jobs_app = typer.Typer(help="The job queue: list jobs, show one, replay a dead one.")

JobId = Annotated[UUID, typer.Argument(help="The job's id.")]


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def _fail(message: str) -> NoReturn:
    typer.echo(f"pumpparty: {message}", err=True)
    raise typer.Exit(1)


def _queue(services: Services) -> JobQueue:
    return JobQueue(services.datastore, system_clock, queue_policy(services.settings))


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
        _fail(f"no state {state!r}; states: {', '.join(STATES)}")
    services = open_services(_settings(ctx), run_migrations=False)
    try:
        for row in _queue(services).find(state=state, kind=kind, limit=limit):
            typer.echo(_line(row))
    finally:
        services.close()


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: JobId) -> None:
    """One job as JSON (payload, result and lease included)."""
    services = open_services(_settings(ctx), run_migrations=False)
    try:
        row = _queue(services).get(job_id)
    finally:
        services.close()
    if row is None:
        _fail(f"no job {job_id}")
    typer.echo(orjson.dumps(row, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@jobs_app.command("replay")
def jobs_replay(
    ctx: typer.Context,
    job_id: JobId,
    reason: Annotated[str, typer.Option(help="Why the job may run again (recorded).")],
) -> None:
    """Run a dead job again from its first attempt; the replay is an event with the reason."""
    if not reason.strip():
        _fail("a replay needs a reason")
    context = CommandContext(
        actor="operator:cli",
        occurred_at=system_clock(),
        correlation_id=f"jobs-replay:{uuid4().hex[:12]}",
    )
    services = open_services(_settings(ctx), run_migrations=False)
    try:
        written = _queue(services).replay(services.event_log, context, job_id, reason.strip())
    except DomainError as error:
        _fail(str(error))
    finally:
        services.close()
    typer.echo(
        f"{job_id}: queued again ({written.result.kind}), event at position {written.position}"
    )
