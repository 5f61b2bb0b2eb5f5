"""The evaluator's queue: one row per audition with its running attempt's due time and any
breach the prop engine recorded on that attempt's account. The queue proper is the rows
still `running`: due soon, overdue, or breached. A judged or voided audition leaves it; a
retry brings it back with the new attempt. The evaluator's round reads it (sync: jobs run in
threads), and so does the admins' view of the queue (async, typed rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL

from aggregates.auditions import Audition
from aggregates.prop_accounts import PropAccount
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class AuditionQueueView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "audition_queue": """(
            audition_id uuid PRIMARY KEY,
            owner_id uuid NOT NULL,
            clone_id uuid NOT NULL,
            status text NOT NULL,
            attempt integer,
            prop_account_id uuid,
            started_at timestamptz,
            due_at timestamptz,
            breach text,
            updated_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE
        )"""
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "audition_queue": ["(status, due_at, audition_id)", "(prop_account_id)"]
    }

    def submit(
        self, audition_id: UUID, owner_id: UUID, clone_id: UUID, at: datetime, position: int
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (audition_id, owner_id, clone_id, status, updated_at, position)"
                " VALUES (%s, %s, %s, 'running', %s, %s)"
            ).format(self.table("audition_queue")),
            (audition_id, owner_id, clone_id, at, position),
        )

    def start_attempt(
        self,
        audition_id: UUID,
        attempt: int,
        prop_account_id: UUID,
        started_at: datetime,
        due_at: datetime,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'running', attempt = %s, prop_account_id = %s,"
                " started_at = %s, due_at = %s, breach = NULL, updated_at = %s"
                " WHERE audition_id = %s"
            ).format(self.table("audition_queue")),
            (attempt, prop_account_id, started_at, due_at, started_at, audition_id),
        )

    def end(self, audition_id: UUID, status: str, at: datetime) -> None:
        self.cursor.execute(
            SQL("UPDATE {} SET status = %s, updated_at = %s WHERE audition_id = %s").format(
                self.table("audition_queue")
            ),
            (status, at, audition_id),
        )

    def record_breach(self, prop_account_id: UUID, rule: str, at: datetime) -> None:
        """Only a running attempt's account counts: an old attempt's breach changes nothing."""
        self.cursor.execute(
            SQL(
                "UPDATE {} SET breach = %s, updated_at = %s"
                " WHERE prop_account_id = %s AND status = 'running'"
            ).format(self.table("audition_queue")),
            (rule, at, prop_account_id),
        )


class AuditionQueue(ReadModel[AuditionQueueView]):
    name = "audition_queue"
    view_class = AuditionQueueView
    topics = topics_of(
        Audition.Submitted,
        Audition.AttemptStarted,
        Audition.Passed,
        Audition.Failed,
        Audition.Voided,
        PropAccount.Breached,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Audition.Submitted, tracking: Tracking) -> None:
        self.view.submit(
            event.originator_id,
            event.owner_id,
            event.clone_id,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: Audition.AttemptStarted, tracking: Tracking) -> None:
        self.view.start_attempt(
            event.originator_id, event.number, event.prop_account_id, event.started_at, event.due_at
        )

    @process_event.register
    def _(self, event: Audition.Passed, tracking: Tracking) -> None:
        self.view.end(event.originator_id, "passed", event.timestamp)

    @process_event.register
    def _(self, event: Audition.Failed, tracking: Tracking) -> None:
        self.view.end(event.originator_id, "failed", event.timestamp)

    @process_event.register
    def _(self, event: Audition.Voided, tracking: Tracking) -> None:
        self.view.end(event.originator_id, "voided", event.timestamp)

    @process_event.register
    def _(self, event: PropAccount.Breached, tracking: Tracking) -> None:
        self.view.record_breach(event.originator_id, event.rule, event.timestamp)


def auditions_to_evaluate(datastore: PostgresDatastore, now: datetime) -> list[UUID]:
    """Running auditions whose attempt is due, or whose account was breached: the
    evaluator's round, oldest due first."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT audition_id FROM audition_queue WHERE status = 'running'"
            " AND (due_at <= %s OR breach IS NOT NULL) ORDER BY due_at, audition_id",
            (now,),
        )
        return [row["audition_id"] for row in cursor.fetchall()]


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedRow:
    """A running audition the evaluator will judge: its attempt, due time and any breach."""

    audition_id: UUID
    owner_id: UUID
    clone_id: UUID
    attempt: int
    prop_account_id: UUID
    started_at: datetime
    due_at: datetime
    breach: str | None


async def queued(reads: ProjectionReads, until: datetime, page: Page) -> list[QueuedRow]:
    """A page of the running auditions due by `until` (overdue ones first), or breached, in
    due order (cursor: due_at, audition_id)."""
    after_due, after_id = page.moment("due_at"), page.identifier("audition_id")
    query = SQL(
        "SELECT {} FROM audition_queue WHERE status = 'running'"
        " AND (due_at <= %s OR breach IS NOT NULL)"
        " AND (%s::timestamptz IS NULL OR (due_at, audition_id) > (%s::timestamptz, %s::uuid))"
        " ORDER BY due_at, audition_id LIMIT %s"
    ).format(columns(QueuedRow))
    params = (until, after_due, after_due, after_id, page.fetch)
    return await reads.all(QueuedRow, query, params)
