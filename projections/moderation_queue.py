"""The moderation queue: profiles awaiting approval or review, and every report filed.

Every profile has a row; `awaiting` is `approval` (submitted or edited) or `review` (hidden
by reports) while an admin's decision is due, and NULL otherwise. A review decision closes
the profile's open reports with its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL

from aggregates.profiles import ProfileStatus, PublicProfile
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class ModerationQueueView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "moderation_queue": """(
            profile_id uuid PRIMARY KEY,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            display_name text NOT NULL DEFAULT '',
            status text NOT NULL,
            awaiting text,
            open_reports integer NOT NULL DEFAULT 0,
            queued_at timestamptz,
            queued_position bigint UNIQUE,
            position bigint NOT NULL UNIQUE
        )""",
        "moderation_reports": """(
            report_id uuid PRIMARY KEY,
            profile_id uuid NOT NULL,
            reporter_id uuid NOT NULL,
            reason text NOT NULL,
            text text NOT NULL,
            status text NOT NULL,
            reported_at timestamptz NOT NULL,
            resolved_at timestamptz,
            position bigint NOT NULL UNIQUE
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "moderation_queue": ["(awaiting, queued_position)"],
        "moderation_reports": ["(profile_id, position)"],
    }

    def open(self, profile_id: UUID, clone_id: UUID, owner_id: UUID, position: int) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (profile_id, clone_id, owner_id, status, position)"
                " VALUES (%s, %s, %s, %s, %s)"
            ).format(self.table("moderation_queue")),
            (profile_id, clone_id, owner_id, ProfileStatus.PENDING.value, position),
        )

    def enqueue(
        self,
        profile_id: UUID,
        status: ProfileStatus,
        awaiting: str,
        at: datetime,
        position: int,
        display_name: str | None = None,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %s, awaiting = %s, queued_at = %s, queued_position = %s,"
                " display_name = coalesce(%s, display_name) WHERE profile_id = %s"
            ).format(self.table("moderation_queue")),
            (status.value, awaiting, at, position, display_name, profile_id),
        )

    def record_report(
        self,
        report_id: UUID,
        profile_id: UUID,
        reporter_id: UUID,
        reason: str,
        text: str,
        at: datetime,
        position: int,
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (report_id, profile_id, reporter_id, reason, text, status,"
                " reported_at, position) VALUES (%s, %s, %s, %s, %s, 'open', %s, %s)"
            ).format(self.table("moderation_reports")),
            (report_id, profile_id, reporter_id, reason, text, at, position),
        )
        self.cursor.execute(
            SQL("UPDATE {} SET open_reports = open_reports + 1 WHERE profile_id = %s").format(
                self.table("moderation_queue")
            ),
            (profile_id,),
        )

    def decide(
        self, profile_id: UUID, status: ProfileStatus, at: datetime, outcome: str | None
    ) -> None:
        """Leave the queue; a review `outcome` also closes the open reports with it."""
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %s, awaiting = NULL, queued_at = NULL,"
                " queued_position = NULL, open_reports = CASE WHEN %s THEN 0 ELSE open_reports"
                " END WHERE profile_id = %s"
            ).format(self.table("moderation_queue")),
            (status.value, outcome is not None, profile_id),
        )
        if outcome is not None:
            self.cursor.execute(
                SQL(
                    "UPDATE {} SET status = %s, resolved_at = %s"
                    " WHERE profile_id = %s AND status = 'open'"
                ).format(self.table("moderation_reports")),
                (outcome, at, profile_id),
            )


class ModerationQueue(ReadModel[ModerationQueueView]):
    name = "moderation_queue"
    view_class = ModerationQueueView
    topics = topics_of(
        PublicProfile.Opened,
        PublicProfile.Submitted,
        PublicProfile.Approved,
        PublicProfile.Rejected,
        PublicProfile.Reported,
        PublicProfile.Hidden,
        PublicProfile.Restored,
        PublicProfile.KeptHidden,
        PublicProfile.Banned,
        PublicProfile.Withdrawn,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: PublicProfile.Opened, tracking: Tracking) -> None:
        self.view.open(
            event.originator_id, event.clone_id, event.owner_id, tracking.notification_id
        )

    @process_event.register
    def _(self, event: PublicProfile.Submitted, tracking: Tracking) -> None:
        self.view.enqueue(
            event.originator_id,
            ProfileStatus.PENDING,
            "approval",
            event.timestamp,
            tracking.notification_id,
            display_name=event.display_name,
        )

    @process_event.register
    def _(self, event: PublicProfile.Approved, tracking: Tracking) -> None:
        self.view.decide(event.originator_id, ProfileStatus.APPROVED, event.timestamp, None)

    @process_event.register
    def _(self, event: PublicProfile.Rejected, tracking: Tracking) -> None:
        self.view.decide(event.originator_id, ProfileStatus.REJECTED, event.timestamp, None)

    @process_event.register
    def _(self, event: PublicProfile.Reported, tracking: Tracking) -> None:
        self.view.record_report(
            event.report_id,
            event.originator_id,
            event.reporter_id,
            event.reason,
            event.text,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: PublicProfile.Hidden, tracking: Tracking) -> None:
        self.view.enqueue(
            event.originator_id,
            ProfileStatus.UNDER_REVIEW,
            "review",
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: PublicProfile.Restored, tracking: Tracking) -> None:
        self.view.decide(event.originator_id, ProfileStatus.APPROVED, event.timestamp, "restored")

    @process_event.register
    def _(self, event: PublicProfile.KeptHidden, tracking: Tracking) -> None:
        self.view.decide(
            event.originator_id, ProfileStatus.KEPT_HIDDEN, event.timestamp, "kept_hidden"
        )

    @process_event.register
    def _(self, event: PublicProfile.Banned, tracking: Tracking) -> None:
        self.view.decide(event.originator_id, ProfileStatus.BANNED, event.timestamp, "banned")

    @process_event.register
    def _(self, event: PublicProfile.Withdrawn, tracking: Tracking) -> None:
        self.view.decide(event.originator_id, ProfileStatus.WITHDRAWN, event.timestamp, None)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueEntryRow:
    """A profile awaiting a decision (so `awaiting`, `queued_at` and its position are set)."""

    profile_id: UUID
    clone_id: UUID
    owner_id: UUID
    display_name: str
    status: str
    awaiting: str
    open_reports: int
    queued_at: datetime
    queued_position: int


@dataclass(frozen=True, slots=True)
class ReportRow:
    report_id: UUID
    reporter_id: UUID
    reason: str
    text: str
    status: str
    reported_at: datetime
    resolved_at: datetime | None
    position: int


async def awaiting_decision(
    reads: ProjectionReads, awaiting: str | None, page: Page
) -> list[QueueEntryRow]:
    """A page of profiles awaiting a decision (any, or `approval` / `review` only), oldest
    first (cursor: queued_position)."""
    query = SQL(
        "SELECT {} FROM moderation_queue WHERE awaiting IS NOT NULL"
        " AND (%s::text IS NULL OR awaiting = %s) AND queued_position > %s"
        " ORDER BY queued_position LIMIT %s"
    ).format(columns(QueueEntryRow))
    params = (awaiting, awaiting, page.position("queued_position"), page.fetch)
    return await reads.all(QueueEntryRow, query, params)


async def reports_of_profile(
    reads: ProjectionReads, profile_id: UUID, page: Page
) -> list[ReportRow]:
    """A page of the reports filed against a profile, oldest first (cursor: position)."""
    query = SQL(
        "SELECT {} FROM moderation_reports WHERE profile_id = %s AND position > %s"
        " ORDER BY position LIMIT %s"
    ).format(columns(ReportRow))
    return await reads.all(ReportRow, query, (profile_id, page.position(), page.fetch))
