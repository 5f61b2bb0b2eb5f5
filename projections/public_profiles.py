"""Public profiles: every clone's profile with its moderation status; `visible` when public.

Anonymous readers see only visible rows; owners see their own whatever the status.
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
from projections.reads import ProjectionReads, columns


class PublicProfilesView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "public_profiles": """(
            profile_id uuid PRIMARY KEY,
            clone_id uuid NOT NULL UNIQUE,
            owner_id uuid NOT NULL,
            display_name text NOT NULL DEFAULT '',
            bio text NOT NULL DEFAULT '',
            avatar_url text,
            links text[] NOT NULL DEFAULT '{}',
            status text NOT NULL,
            visible boolean NOT NULL DEFAULT false,
            status_reason text,
            submitted_at timestamptz,
            approved_at timestamptz,
            updated_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE
        )"""
    }

    def open(
        self, profile_id: UUID, clone_id: UUID, owner_id: UUID, at: datetime, position: int
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (profile_id, clone_id, owner_id, status, updated_at, position)"
                " VALUES (%s, %s, %s, %s, %s, %s)"
            ).format(self.table("public_profiles")),
            (profile_id, clone_id, owner_id, ProfileStatus.PENDING.value, at, position),
        )

    def submit(
        self,
        profile_id: UUID,
        display_name: str,
        bio: str,
        avatar_url: str | None,
        links: list[str],
        at: datetime,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET display_name = %s, bio = %s, avatar_url = %s, links = %s,"
                " status = %s, visible = false, status_reason = NULL, submitted_at = %s,"
                " updated_at = %s WHERE profile_id = %s"
            ).format(self.table("public_profiles")),
            (
                display_name,
                bio,
                avatar_url,
                links,
                ProfileStatus.PENDING.value,
                at,
                at,
                profile_id,
            ),
        )

    def set_status(
        self, profile_id: UUID, status: ProfileStatus, reason: str | None, at: datetime
    ) -> None:
        approved = status is ProfileStatus.APPROVED
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %s, visible = %s, status_reason = %s,"
                " approved_at = CASE WHEN %s THEN %s ELSE approved_at END, updated_at = %s"
                " WHERE profile_id = %s"
            ).format(self.table("public_profiles")),
            (status.value, approved, reason, approved, at, at, profile_id),
        )


class PublicProfiles(ReadModel[PublicProfilesView]):
    name = "public_profiles"
    view_class = PublicProfilesView
    topics = topics_of(
        PublicProfile.Opened,
        PublicProfile.Submitted,
        PublicProfile.Approved,
        PublicProfile.Rejected,
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
            event.originator_id,
            event.clone_id,
            event.owner_id,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: PublicProfile.Submitted, tracking: Tracking) -> None:
        self.view.submit(
            event.originator_id,
            event.display_name,
            event.bio,
            event.avatar_url,
            event.links,
            event.timestamp,
        )

    @process_event.register
    def _(self, event: PublicProfile.Approved, tracking: Tracking) -> None:
        self.view.set_status(
            event.originator_id, ProfileStatus.APPROVED, event.reason or None, event.timestamp
        )

    @process_event.register
    def _(self, event: PublicProfile.Rejected, tracking: Tracking) -> None:
        self.view.set_status(
            event.originator_id, ProfileStatus.REJECTED, event.reason, event.timestamp
        )

    @process_event.register
    def _(self, event: PublicProfile.Hidden, tracking: Tracking) -> None:
        reason = f"hidden after {event.open_reports} reports, pending review"
        self.view.set_status(
            event.originator_id, ProfileStatus.UNDER_REVIEW, reason, event.timestamp
        )

    @process_event.register
    def _(self, event: PublicProfile.Restored, tracking: Tracking) -> None:
        self.view.set_status(
            event.originator_id, ProfileStatus.APPROVED, event.reason, event.timestamp
        )

    @process_event.register
    def _(self, event: PublicProfile.KeptHidden, tracking: Tracking) -> None:
        self.view.set_status(
            event.originator_id, ProfileStatus.KEPT_HIDDEN, event.reason, event.timestamp
        )

    @process_event.register
    def _(self, event: PublicProfile.Banned, tracking: Tracking) -> None:
        self.view.set_status(
            event.originator_id, ProfileStatus.BANNED, event.reason, event.timestamp
        )

    @process_event.register
    def _(self, event: PublicProfile.Withdrawn, tracking: Tracking) -> None:
        self.view.set_status(event.originator_id, ProfileStatus.WITHDRAWN, None, event.timestamp)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicProfileRow:
    """What anyone may see of a visible profile."""

    profile_id: UUID
    clone_id: UUID
    display_name: str
    bio: str
    avatar_url: str | None
    links: list[str]
    approved_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """A profile as its owner sees it: any status, with the moderator's reason."""

    profile_id: UUID
    clone_id: UUID
    owner_id: UUID
    display_name: str
    bio: str
    avatar_url: str | None
    links: list[str]
    status: str
    visible: bool
    status_reason: str | None
    submitted_at: datetime | None
    approved_at: datetime | None
    updated_at: datetime


async def visible_profile(reads: ProjectionReads, profile_id: UUID) -> PublicProfileRow | None:
    """The profile if it is public (approved and not hidden), else None."""
    query = SQL("SELECT {} FROM public_profiles WHERE profile_id = %s AND visible").format(
        columns(PublicProfileRow)
    )
    return await reads.one(PublicProfileRow, query, (profile_id,))


async def profile_of_clone(reads: ProjectionReads, clone_id: UUID) -> ProfileRow | None:
    query = SQL("SELECT {} FROM public_profiles WHERE clone_id = %s").format(columns(ProfileRow))
    return await reads.one(ProfileRow, query, (clone_id,))
