"""Dead letters: what an operator decides about a job of the queue that went dead.

A job's life (queued, leased, retried, dead) is working state in the job queue's table
(runtime/job_queue.py): derived and retried, never the record. An operator's decision about
a dead job is the record: each replay is an event with the actor and the reason, on one
aggregate per job (its id derives from the job's), so the audit log shows who ran a job
again and why, and each discard (the work is given up for good: it never runs again) too.
A projection's stall is a dead letter as well (kind `projection.<name>`): its aggregate's
`job_id` derives from the projection and the stalled position, since no job row holds it.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import ConflictError, InvalidCommandError


class JobNotDeadError(ConflictError):
    """Only a dead job can be replayed."""

    code = "job-not-dead"


class DeadLetterDiscardedError(ConflictError):
    """A discarded dead letter never runs again: it cannot be replayed nor discarded twice."""

    code = "dead-letter-discarded"


class DiscardReasonMissingError(InvalidCommandError):
    """Giving work up for good needs a reason, recorded with it."""

    code = "discard-reason-missing"


def dead_letter_id(job_id: UUID) -> UUID:
    return derive_id("DeadLetter", str(job_id))


def stall_id(projection: str, position: int) -> UUID:
    """The work item of a projection's stall on one event: what its dead letter is about."""
    return derive_id("ProjectionStall", f"{projection}:{position}")


class DeadLetter(DomainAggregate):
    class Opened(DomainAggregate.Created):
        job_id: UUID
        kind: str

    class Replayed(DomainAggregate.Event):
        reason: str
        attempts: int
        """Attempts the job had used when it died."""
        last_error: str | None

    class Discarded(DomainAggregate.Event):
        reason: str
        attempts: int
        last_error: str | None

    @event(Opened)
    def __init__(self, id: UUID, job_id: UUID, kind: str) -> None:
        self.job_id = job_id
        self.kind = kind
        self.replays = 0
        self.last_reason: str | None = None
        self.discarded = False

    def replay(self, reason: str, attempts: int, last_error: str | None) -> None:
        """Record that the dead job runs again from its first attempt."""
        if self.discarded:
            raise DeadLetterDiscardedError("this dead letter was discarded; it never runs again")
        self._replayed(reason=reason, attempts=attempts, last_error=last_error)

    def discard(self, reason: str, attempts: int, last_error: str | None) -> None:
        """Record that the dead job is given up for good, and why."""
        if not reason.strip():
            raise DiscardReasonMissingError("a discard needs a reason")
        if self.discarded:
            raise DeadLetterDiscardedError("this dead letter was already discarded")
        self._discarded(reason=reason.strip(), attempts=attempts, last_error=last_error)

    @event(Discarded)
    def _discarded(self, reason: str, attempts: int, last_error: str | None) -> None:
        self.discarded = True
        self.last_reason = reason

    @event(Replayed)
    def _replayed(self, reason: str, attempts: int, last_error: str | None) -> None:
        self.replays += 1
        self.last_reason = reason
