"""`pumpparty dead-letters list|show|replay|discard`: background work that ran out of retries
(`services/dead_letters.py`): backtests, scheduled jobs' rounds, payment checks, stalled
projections, in one list.

Replays and discards are events (`DeadLetter.Replayed`, `DeadLetter.Discarded`) whose actor
is `operator:cli` and whose reason is the one given; a discard needs one.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import orjson
import typer

from scripts.command_line import opened, operator_context
from services import dead_letters
from services.dead_letters import DeadLetterView

dead_letters_app = typer.Typer(
    help="Dead letters: work that ran out of retries. List, show, replay, discard."
)

LetterId = Annotated[
    str, typer.Argument(help="The dead letter's id (a job's id, or projection.<name>).")
]


def _line(view: DeadLetterView) -> str:
    at = view.last_failed_at.isoformat() if view.last_failed_at else "-"
    error = f"  {view.error}" if view.error else ""
    return (
        f"{view.id}  {view.kind}  {view.state}  attempts {view.attempts}  {at}"
        f"  {view.subject or '-'}{error}"
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
    with opened(ctx) as services:
        views = dead_letters.list_dead_letters(
            services, kind=kind, include_closed=all_, limit=limit
        )
    for view in views:
        typer.echo(_line(view))


@dead_letters_app.command("show")
def letters_show(ctx: typer.Context, letter_id: LetterId) -> None:
    """One dead letter as JSON: error, attempts, first and last failure."""
    with opened(ctx) as services:
        view = dead_letters.show_dead_letter(services, letter_id)
    typer.echo(orjson.dumps(asdict(view), option=orjson.OPT_INDENT_2).decode())


@dead_letters_app.command("replay")
def letters_replay(
    ctx: typer.Context,
    letter_id: LetterId,
    reason: Annotated[str, typer.Option(help="Why the work may run again (recorded).")],
) -> None:
    """Run the dead work again (a job from its first attempt; a projection retries the
    event it stalled on); the replay is an event with the reason."""
    with opened(ctx) as services:
        view = dead_letters.replay_dead_letter(
            services, operator_context("dead-letters-replay"), letter_id, reason
        )
    typer.echo(f"{view.id}: replayed ({view.kind})")


@dead_letters_app.command("discard")
def letters_discard(
    ctx: typer.Context,
    letter_id: LetterId,
    reason: Annotated[str, typer.Option(help="Why the work is given up for good (recorded).")],
) -> None:
    """Give the dead work up for good: it never runs again (a projection skips the event
    it stalled on); the discard is an event with the reason."""
    with opened(ctx) as services:
        view = dead_letters.discard_dead_letter(
            services, operator_context("dead-letters-discard"), letter_id, reason
        )
    typer.echo(f"{view.id}: discarded ({view.kind}): {reason.strip()}")
