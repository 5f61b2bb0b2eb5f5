"""Dead letters: what an operator decides about a job of the queue that went dead.

A job's life (queued, leased, retried, dead) is working state in the job queue's table
(runtime/job_queue.py): derived and retried, never the record. An operator's decision about
a dead job is the record: each replay is an event with the actor and the reason, on one
aggregate per job (its id derives from the job's), so the audit log shows who ran a job
again and why. Later decisions (discarding a dead letter) belong here too.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import ConflictError


class JobNotDeadError(ConflictError):
    """Only a dead job can be replayed."""

    code = "job-not-dead"


def dead_letter_id(job_id: UUID) -> UUID:
    return derive_id("DeadLetter", str(job_id))


class DeadLetter(DomainAggregate):
    class Opened(DomainAggregate.Created):
        job_id: UUID
        kind: str

    class Replayed(DomainAggregate.Event):
        reason: str
        attempts: int
        """Attempts the job had used when it died."""
        last_error: str | None

    @event(Opened)
    def __init__(self, id: UUID, job_id: UUID, kind: str) -> None:
        self.job_id = job_id
        self.kind = kind
        self.replays = 0
        self.last_reason: str | None = None

    def replay(self, reason: str, attempts: int, last_error: str | None) -> None:
        """Record that the dead job runs again from its first attempt."""
        self._replayed(reason=reason, attempts=attempts, last_error=last_error)

    @event(Replayed)
    def _replayed(self, reason: str, attempts: int, last_error: str | None) -> None:
        self.replays += 1
        self.last_reason = reason
