"""Dead letters: background work that ran out of retries, in one list for operators.

Every kind of background work that can fail records its failures on the one job queue
(`services/job_queue.py`), so a dead letter is a dead row of that queue, whatever the work:

- `backtest`: a leased job (`JobConsumer`), dead after its last attempt.
- `scheduled.<job>`: a scheduled job's round that still failed after the worker's quick
  in-round retries (`ScheduledRounds`, below).
- `deposit_verification`, `withdrawal_verification`: one payment's check against the chain
  (the node errored for its tx, or an unexpected exception), in `DepositConfirmations`:
  retried on its own backoff while the others carry on; a discarded one is never checked
  again (the payment stays as it is, for an operator to settle otherwise).
- `projection.<name>`: a projection stopped on an event (`projections/state.py`). A stall
  is not a queue row: it is read from `projection_state` and shown through these same
  functions (id `projection.<name>`); replay is `resume` (the runner retries the event),
  discard is `skip` (the event is stepped over), each recorded as a `DeadLetter` event.
  The runner retries nothing by itself (an event that failed fails again until a fix), so
  a stall is dead at its first failure (`attempts` 1), and it is listed while it lasts:
  once resumed or skipped, its record is the event and `projection_skips`.

Scheduled rounds. A round that fails (after the worker's tenacity retries) opens, or bumps,
the job's one open row, of kind `scheduled.<job>` and subject the job's name: attempts, the
first and last failure time and the last error, queued again at `now + backoff` (capped,
jittered, exponential: the queue's settings). Until that time the worker's ticks skip the
job (the backoff); the first tick after it runs the round as the retry. A success closes
the row (succeeded). After `job_max_attempts` failures in a row the row is dead: a dead
letter, which needs a person (the `DeadLettersPresent` alert; the job's heartbeat says
`held: dead letter ...`, so `WorkerJobFailing` too). The job is then held, not stopped for
good: its ticks skip it except once per backoff cap (`job_backoff_max`), when the round is
tried again; a failure keeps the letter (attempts, last error and time move on), a success
clears it. A scheduled job is the system's periodic work (deposits, market data, digests):
an outage nobody has fixed yet must not stop it for ever, nor should a broken job run on
every tick. Replay queues the row again, due at once, with its attempts reset: the
worker's next tick of that job runs the round (a success closes it, a failure starts the
backoff again). Discard gives the failed run up for good: the row is closed and never runs
again, and the job goes back to its schedule, whose next round is new work (a new row if
it fails). One row per job (a transaction-scoped advisory lock on kind and subject) keeps
two workers failing at once from opening two.

Replays and discards are events (`DeadLetter.Replayed`, `DeadLetter.Discarded`) with the
actor and the reason; a discard needs a reason, and a discarded letter is never replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from aggregates.base import CommandContext
from aggregates.dead_letters import (
    DeadLetter,
    DiscardReasonMissingError,
    dead_letter_id,
    stall_id,
)
from aggregates.errors import InvalidCommandError, NotFoundError
from projections.state import ProjectionNotFoundError, ProjectionNotStalledError
from runtime import job_queue as sql
from runtime.job_queue import JobRow
from services.bootstrap import Services
from services.eventlog import EventLog, UnitOfWork, Written
from services.job_queue import JobQueue, RetriedWork, queue_policy

log = logging.getLogger(__name__)

PROJECTION_PREFIX = "projection."


def stall_letter_id(projection: str) -> str:
    """The dead letter a projection's stall is shown as."""
    return f"{PROJECTION_PREFIX}{projection}"


SCHEDULED_PREFIX = "scheduled."


class DeadLetterNotFoundError(NotFoundError):
    code = "dead-letter-not-found"


class ReplayReasonMissingError(InvalidCommandError):
    code = "replay-reason-missing"


@dataclass(frozen=True)
class DeadLetterView:
    id: str
    """Stable id used in URLs and the CLI: the job's id, or `projection.<name>`."""
    kind: str
    """e.g. `backtest`, `scheduled.deposit_confirmations`, `projection.audit_log`."""
    subject: str | None
    error: str | None
    attempts: int
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    state: str
    """`dead` (waits for an operator), `discarded` or `replayed`."""


def queue_of(services: Services) -> JobQueue:
    return JobQueue(services.datastore, services.clock, queue_policy(services.settings))


def _job_view(row: JobRow) -> DeadLetterView:
    state = row.state if row.state in ("dead", "discarded") else "replayed"
    return DeadLetterView(
        id=str(row.id),
        kind=row.kind,
        subject=row.subject,
        error=row.last_error,
        attempts=row.attempts,
        first_failed_at=row.first_failed_at,
        last_failed_at=row.last_failed_at,
        state=state,
    )


@dataclass(frozen=True)
class _Stall:
    name: str
    position: int
    topic: str | None
    error: str | None
    since: datetime | None

    @property
    def letter_id(self) -> str:
        return stall_letter_id(self.name)

    def view(self, state: str = "dead") -> DeadLetterView:
        return DeadLetterView(
            id=self.letter_id,
            kind=self.letter_id,
            subject=f"position {self.position}: {self.topic}",
            error=self.error,
            attempts=1,
            first_failed_at=self.since,
            last_failed_at=self.since,
            state=state,
        )


def _stalls(services: Services) -> list[_Stall]:
    with services.datastore.transaction(commit=False) as cursor:
        cursor.execute(
            "SELECT name, stalled_position, stalled_topic, stalled_error, stalled_since"
            " FROM projection_state WHERE stalled_position IS NOT NULL ORDER BY name"
        )
        rows = cursor.fetchall()
    return [
        _Stall(
            row["name"],
            int(row["stalled_position"]),
            row["stalled_topic"],
            row["stalled_error"],
            row["stalled_since"],
        )
        for row in rows
    ]


def _stall(services: Services, letter_id: str) -> _Stall:
    name = letter_id.removeprefix(PROJECTION_PREFIX)
    for stall in _stalls(services):
        if stall.name == name:
            return stall
    raise DeadLetterNotFoundError(f"no dead letter {letter_id}: projection {name} is not stalled")


def _job_id(letter_id: str) -> UUID:
    try:
        return UUID(letter_id)
    except ValueError:
        raise DeadLetterNotFoundError(f"no dead letter {letter_id}") from None


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def page_key(view: DeadLetterView) -> tuple[datetime, str]:
    """Where a letter sorts, latest failure first (then the id, descending): a page's
    keyset, the `after` of the next page."""
    return (view.last_failed_at or _EARLIEST, view.id)


def list_dead_letters(
    services: Services,
    *,
    kind: str | None = None,
    include_closed: bool = False,
    limit: int = 100,
    after: tuple[datetime, str] | None = None,
) -> list[DeadLetterView]:
    """Dead letters of every kind (or one), the latest failure first; with
    `include_closed`, the discarded and replayed ones too. `after`: `page_key` of the last
    letter of the previous page (a keyset: pages hold when letters come and go)."""
    before = after
    views: list[DeadLetterView] = []
    if kind is None or not kind.startswith(PROJECTION_PREFIX):
        with services.datastore.transaction(commit=False) as cursor:
            rows = sql.dead_letters(
                cursor, kind=kind, include_closed=include_closed, limit=limit, before=before
            )
        views += [_job_view(row) for row in rows]
    if kind is None or kind.startswith(PROJECTION_PREFIX):
        views += [
            stall.view()
            for stall in _stalls(services)
            if kind in (None, stall.letter_id)
            and (before is None or page_key(stall.view()) < before)
        ]
    views.sort(key=page_key, reverse=True)
    return views[:limit]


def show_dead_letter(services: Services, letter_id: str) -> DeadLetterView:
    """One dead letter (or a closed one: replayed or discarded)."""
    if letter_id.startswith(PROJECTION_PREFIX):
        return _stall(services, letter_id).view()
    row = queue_of(services).get(_job_id(letter_id))
    if row is None or not (row.state in ("dead", "discarded") or row.replays > 0):
        raise DeadLetterNotFoundError(f"no dead letter {letter_id}")
    return _job_view(row)


def replay_dead_letter(
    services: Services, context: CommandContext, letter_id: str, reason: str
) -> DeadLetterView:
    """Run the dead work again (a job from its first attempt; a projection retries the
    event it stalled on); an event with the actor and the reason. A discarded letter is
    refused (409 `dead-letter-discarded`), one that is not dead too (409 `job-not-dead`)."""
    if not reason.strip():
        raise ReplayReasonMissingError("a replay needs a reason")
    if letter_id.startswith(PROJECTION_PREFIX):
        return _decide_stall(services, context, letter_id, reason.strip(), discard=False)
    written = replay_job(
        queue_of(services), services.event_log, context, _job_id(letter_id), reason
    )
    return _job_view(written.result)


def replay_job(
    queue: JobQueue, event_log: EventLog, context: CommandContext, job_id: UUID, reason: str
) -> Written[JobRow]:
    """A dead job's replay, with the event's position (`/v1/admin/jobs/{id}/replay`)."""
    if not reason.strip():
        raise ReplayReasonMissingError("a replay needs a reason")
    return queue.replay(event_log, context, job_id, reason.strip())


def discard_dead_letter(
    services: Services, context: CommandContext, letter_id: str, reason: str
) -> DeadLetterView:
    """Give the dead work up for good, with a reason (422 `discard-reason-missing`
    without one): a job never runs again; a projection skips the event it stalled on."""
    if not reason.strip():
        raise DiscardReasonMissingError("a discard needs a reason")
    if letter_id.startswith(PROJECTION_PREFIX):
        return _decide_stall(services, context, letter_id, reason.strip(), discard=True)
    written = queue_of(services).discard(
        services.event_log, context, _job_id(letter_id), reason.strip()
    )
    return _job_view(written.result)


def dead_letter_counts(services: Services) -> dict[str, int]:
    """Open dead letters per kind: the `pumpparty_dead_letters{kind}` gauge."""
    with services.datastore.transaction(commit=False) as cursor:
        counts = sql.dead_counts(cursor)
    for stall in _stalls(services):
        counts[stall.letter_id] = counts.get(stall.letter_id, 0) + 1
    return counts


def _decide_stall(
    services: Services, context: CommandContext, letter_id: str, reason: str, *, discard: bool
) -> DeadLetterView:
    """Resume or skip a stalled projection: the decision is an event appended while its
    state row is locked, then the stall is cleared. The log commits on its own connection
    first: should the state's commit fail, the same skip again applies the recorded
    decision without a second event (the letter is per stall position)."""
    name = letter_id.removeprefix(PROJECTION_PREFIX)
    projections = services.projections
    try:
        with services.datastore.transaction(commit=True) as cursor:
            stalled = projections.stalled_row(cursor, name)
            stall = _Stall(
                name,
                int(stalled["stalled_position"]),
                stalled["stalled_topic"],
                stalled["stalled_error"],
                stalled["stalled_since"],
            )
            work_id = stall_id(name, stall.position)

            def decide(unit: UnitOfWork) -> None:
                dead_id = dead_letter_id(work_id)
                letter = unit.find(DeadLetter, dead_id) or unit.add(
                    DeadLetter(dead_id, work_id, letter_id)
                )
                if not discard:
                    letter.replay(reason, 1, stall.error)
                elif not letter.discarded:  # else: a skip whose state change was lost
                    letter.discard(reason, 1, stall.error)

            services.event_log.execute(context, decide)
            if discard:
                projections.skip_stalled(cursor, stalled, reason)
            else:
                projections.clear_stall(cursor, name)
    except (ProjectionNotFoundError, ProjectionNotStalledError):
        raise DeadLetterNotFoundError(
            f"no dead letter {letter_id}: projection {name} is not stalled"
        ) from None
    return stall.view("discarded" if discard else "replayed")


# --- scheduled jobs' rounds ----------------------------------------------------------------


@dataclass(frozen=True)
class RoundOutcome:
    ran: bool
    outcome: object = None
    error: str | None = None
    """The round's failure, or why it was held; None when it ran and succeeded."""


class ScheduledRounds:
    """The retries of scheduled jobs' rounds on the job queue (see the module docstring)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    @staticmethod
    def kind(job: str) -> str:
        return f"{SCHEDULED_PREFIX}{job}"

    def run(self, job: str, round_: Callable[[], object]) -> RoundOutcome:
        """One tick of `job`: skipped while its retry is not due or it is dead, else the
        round, its failure recorded (or its open retry closed)."""
        work = RetriedWork(self.queue, self.kind(job), probe_dead=True)
        held = work.held([job]).get(job)
        if held is not None:
            # Waiting for its retry, the job's error is still the last failure's.
            error = held.last_error or "failed"
            if held.state != "queued":
                error = (
                    f"held: dead letter {held.id} after {held.attempts} attempts"
                    f" (next try {held.run_at.isoformat()}): {error}"
                )
            return RoundOutcome(False, error=error)
        try:
            outcome = round_()
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            try:
                work.failed(job, message)
            except Exception as failure:  # the database away: the heartbeat still tells
                log.warning("could not record the failure of %s: %s", job, failure)
            return RoundOutcome(True, error=message)
        try:
            work.succeeded(job, {"outcome": None if outcome is None else str(outcome)})
        except Exception as failure:
            log.warning("could not close the retry of %s: %s", job, failure)
        return RoundOutcome(True, outcome=outcome)
