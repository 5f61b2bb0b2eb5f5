"""Sessions: each sign-in's token family, active or revoked. No token material."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL

from aggregates.sessions import Session
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class SessionsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "sessions": """(
            session_id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            status text NOT NULL,
            started_at timestamptz NOT NULL,
            last_refreshed_at timestamptz,
            refresh_expires_at timestamptz NOT NULL,
            absolute_expires_at timestamptz NOT NULL,
            rotations integer NOT NULL DEFAULT 0,
            reuse_detected_at timestamptz,
            revoked_at timestamptz,
            revoked_reason text
        )"""
    }
    indexes: ClassVar[dict[str, list[str]]] = {"sessions": ["(user_id, started_at, session_id)"]}

    def start(
        self,
        session_id: UUID,
        user_id: UUID,
        at: datetime,
        refresh_expires_at: datetime,
        absolute_expires_at: datetime,
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (session_id, user_id, status, started_at, refresh_expires_at,"
                " absolute_expires_at) VALUES (%s, %s, 'active', %s, %s, %s)"
            ).format(self.table("sessions")),
            (session_id, user_id, at, refresh_expires_at, absolute_expires_at),
        )

    def rotate(self, session_id: UUID, at: datetime, refresh_expires_at: datetime) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET last_refreshed_at = %s, refresh_expires_at = %s,"
                " rotations = rotations + 1 WHERE session_id = %s"
            ).format(self.table("sessions")),
            (at, refresh_expires_at, session_id),
        )

    def note_reuse(self, session_id: UUID, at: datetime) -> None:
        self.cursor.execute(
            SQL("UPDATE {} SET reuse_detected_at = %s WHERE session_id = %s").format(
                self.table("sessions")
            ),
            (at, session_id),
        )

    def revoke(self, session_id: UUID, at: datetime, reason: str) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'revoked', revoked_at = %s, revoked_reason = %s"
                " WHERE session_id = %s"
            ).format(self.table("sessions")),
            (at, reason, session_id),
        )


class Sessions(ReadModel[SessionsView]):
    name = "sessions"
    view_class = SessionsView
    topics = topics_of(Session.Started, Session.Rotated, Session.ReuseDetected, Session.Revoked)

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Session.Started, tracking: Tracking) -> None:
        self.view.start(
            event.originator_id,
            event.user_id,
            event.timestamp,
            event.refresh_expires_at,
            event.absolute_expires_at,
        )

    @process_event.register
    def _(self, event: Session.Rotated, tracking: Tracking) -> None:
        self.view.rotate(event.originator_id, event.timestamp, event.refresh_expires_at)

    @process_event.register
    def _(self, event: Session.ReuseDetected, tracking: Tracking) -> None:
        self.view.note_reuse(event.originator_id, event.timestamp)

    @process_event.register
    def _(self, event: Session.Revoked, tracking: Tracking) -> None:
        self.view.revoke(event.originator_id, event.timestamp, event.reason)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: UUID
    user_id: UUID
    status: str
    started_at: datetime
    last_refreshed_at: datetime | None
    refresh_expires_at: datetime
    absolute_expires_at: datetime
    rotations: int
    reuse_detected_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None


async def session_by_id(reads: ProjectionReads, session_id: UUID) -> SessionRow | None:
    query = SQL("SELECT {} FROM sessions WHERE session_id = %s").format(columns(SessionRow))
    return await reads.one(SessionRow, query, (session_id,))


async def sessions_of_user(reads: ProjectionReads, user_id: UUID, page: Page) -> list[SessionRow]:
    """A page of the user's sessions, oldest first (cursor: started_at, session_id)."""
    after_time, after_id = page.moment("started_at"), page.identifier("session_id")
    query = SQL(
        "SELECT {} FROM sessions WHERE user_id = %s AND (%s::timestamptz IS NULL"
        " OR (started_at, session_id) > (%s::timestamptz, %s::uuid))"
        " ORDER BY started_at, session_id LIMIT %s"
    ).format(columns(SessionRow))
    params = (user_id, after_time, after_time, after_id, page.fetch)
    return await reads.all(SessionRow, query, params)


@dataclass(frozen=True, slots=True)
class SessionStanding:
    """What an access token's check needs of its session (`api.auth.Standings`)."""

    status: str
    absolute_expires_at: datetime

    def ended(self, now: datetime) -> bool:
        """Revoked (logout, a reused refresh token, its owner) or past its lifetime: nothing
        the family issued is honoured any more."""
        return self.status != "active" or now >= self.absolute_expires_at


async def session_standing(reads: ProjectionReads, session_id: UUID) -> SessionStanding | None:
    """None when the read model has not seen the session yet (a sign-in a moment ago): that
    means "not known yet", never "ended"."""
    query = SQL("SELECT {} FROM sessions WHERE session_id = %s").format(columns(SessionStanding))
    return await reads.one(SessionStanding, query, (session_id,))
