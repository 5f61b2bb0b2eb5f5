"""`pumpparty dead-letters list|show|replay|discard`: background work that ran out of retries
(`services/dead_letters.py`): backtests, scheduled jobs' rounds, payment checks, stalled
projections, in one list.

Replays and discards are events (`DeadLetter.Replayed`, `DeadLetter.Discarded`) whose actor
is `operator:cli` and whose reason is the one given; a discard needs one.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, NoReturn
from uuid import uuid4

import orjson
import typer

from aggregates.base import CommandContext
from aggregates.errors import DomainError
from runtime.clock import system_clock
from runtime.settings import Settings
from services import dead_letters
from services.bootstrap import open_services
from services.dead_letters import DeadLetterView

dead_letters_app = typer.Typer(
    help="Dead letters: work that ran out of retries. List, show, replay, discard."
)

LetterId = Annotated[
    str, typer.Argument(help="The dead letter's id (a job's id, or projection.<name>).")
]


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def _fail(message: str) -> NoReturn:
    typer.echo(f"pumpparty: {message}", err=True)
    raise typer.Exit(1)


def _line(view: DeadLetterView) -> str:
    at = view.last_failed_at.isoformat() if view.last_failed_at else "-"
    error = f"  {view.error}" if view.error else ""
    return (
        f"{view.id}  {view.kind}  {view.state}  attempts {view.attempts}  {at}"
        f"  {view.subject or '-'}{error}"
    )


def _context(action: str) -> CommandContext:
    return CommandContext(
        actor="operator:cli",
        occurred_at=system_clock(),
        correlation_id=f"dead-letters-{action}:{uuid4().hex[:12]}",
    )


@dead_letters_app.command("list")
def letters_list(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Only dead letters of this kind.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Discarded and replayed ones too.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
) -> None:
    """Dead letters, the latest failure first: id, kind, state, attempts, last failure,
    subject, error."""
    services = open_services(_settings(ctx), run_migrations=False)
    try:
        views = dead_letters.list_dead_letters(
            services, kind=kind, include_closed=all_, limit=limit
        )
    finally:
        services.close()
    for view in views:
        typer.echo(_line(view))


@dead_letters_app.command("show")
def letters_show(ctx: typer.Context, letter_id: LetterId) -> None:
    """One dead letter as JSON: error, attempts, first and last failure."""
    services = open_services(_settings(ctx), run_migrations=False)
    try:
        view = dead_letters.show_dead_letter(services, letter_id)
    except DomainError as error:
        _fail(str(error))
    finally:
        services.close()
    typer.echo(orjson.dumps(asdict(view), option=orjson.OPT_INDENT_2).decode())


@dead_letters_app.command("replay")
def letters_replay(
    ctx: typer.Context,
    letter_id: LetterId,
    reason: Annotated[
        str, typer.Option(help="Why the work may run again (recorded).")
    ] = "replayed by an operator after a fix",
) -> None:
    """Run the dead work again (a job from its first attempt; a projection retries the
    event it stalled on); the replay is an event with the reason."""
    services = open_services(_settings(ctx), run_migrations=False)
    try:
        view = dead_letters.replay_dead_letter(services, _context("replay"), letter_id, reason)
    except DomainError as error:
        _fail(str(error))
    finally:
        services.close()
    typer.echo(f"{view.id}: replayed ({view.kind})")


@dead_letters_app.command("discard")
def letters_discard(
    ctx: typer.Context,
    letter_id: LetterId,
    reason: Annotated[str, typer.Option(help="Why the work is given up for good (recorded).")],
) -> None:
    """Give the dead work up for good: it never runs again (a projection skips the event
    it stalled on); the discard is an event with the reason."""
    services = open_services(_settings(ctx), run_migrations=False)
    try:
        view = dead_letters.discard_dead_letter(services, _context("discard"), letter_id, reason)
    except DomainError as error:
        _fail(str(error))
    finally:
        services.close()
    typer.echo(f"{view.id}: discarded ({view.kind}): {reason.strip()}")
