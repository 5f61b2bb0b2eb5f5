"""Clones: each owner's clones, every draft save, and every published version with its graph.

Each row keeps `position`, the log position of the event that first wrote it: lists page
by it, and no two rows of a table share one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from aggregates.clones import Clone
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class ClonesView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "clones": """(
            clone_id uuid PRIMARY KEY,
            owner_id uuid NOT NULL,
            name text NOT NULL,
            description text NOT NULL,
            status text NOT NULL,
            ban_reason text,
            draft_number integer NOT NULL DEFAULT 0,
            draft_digest text,
            draft_graph jsonb,
            draft_saved_at timestamptz,
            version_count integer NOT NULL DEFAULT 0,
            latest_version_id text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            archived_at timestamptz,
            position bigint NOT NULL UNIQUE
        )""",
        "clone_drafts": """(
            clone_id uuid NOT NULL,
            number integer NOT NULL,
            digest text NOT NULL,
            saved_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE,
            PRIMARY KEY (clone_id, number)
        )""",
        "clone_versions": """(
            clone_id uuid NOT NULL,
            version_id text NOT NULL,
            number integer NOT NULL,
            draft_number integer NOT NULL,
            graph jsonb NOT NULL,
            published_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE,
            PRIMARY KEY (clone_id, version_id)
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "clones": ["(owner_id, position)"],
        "clone_versions": ["(clone_id, position)"],
    }

    def create(
        self,
        clone_id: UUID,
        owner_id: UUID,
        name: str,
        description: str,
        at: datetime,
        position: int,
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (clone_id, owner_id, name, description, status, created_at,"
                " updated_at, position) VALUES (%s, %s, %s, %s, 'active', %s, %s, %s)"
            ).format(self.table("clones")),
            (clone_id, owner_id, name, description, at, at, position),
        )

    def update(self, clone_id: UUID, name: str, description: str, at: datetime) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET name = %s, description = %s, updated_at = %s WHERE clone_id = %s"
            ).format(self.table("clones")),
            (name, description, at, clone_id),
        )

    def save_draft(
        self,
        clone_id: UUID,
        number: int,
        digest: str,
        graph: dict[str, Any],
        at: datetime,
        position: int,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET draft_number = %s, draft_digest = %s, draft_graph = %s,"
                " draft_saved_at = %s, updated_at = %s WHERE clone_id = %s"
            ).format(self.table("clones")),
            (number, digest, Jsonb(graph), at, at, clone_id),
        )
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (clone_id, number, digest, saved_at, position)"
                " VALUES (%s, %s, %s, %s, %s)"
            ).format(self.table("clone_drafts")),
            (clone_id, number, digest, at, position),
        )

    def publish(
        self,
        clone_id: UUID,
        version_id: str,
        number: int,
        draft_number: int,
        graph: dict[str, Any],
        at: datetime,
        position: int,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET version_count = %s, latest_version_id = %s, updated_at = %s"
                " WHERE clone_id = %s"
            ).format(self.table("clones")),
            (number, version_id, at, clone_id),
        )
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (clone_id, version_id, number, draft_number, graph,"
                " published_at, position) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("clone_versions")),
            (clone_id, version_id, number, draft_number, Jsonb(graph), at, position),
        )

    def archive(self, clone_id: UUID, at: datetime) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'archived', archived_at = %s, updated_at = %s"
                " WHERE clone_id = %s"
            ).format(self.table("clones")),
            (at, at, clone_id),
        )

    def ban(self, clone_id: UUID, reason: str, at: datetime) -> None:
        self.cursor.execute(
            SQL("UPDATE {} SET ban_reason = %s, updated_at = %s WHERE clone_id = %s").format(
                self.table("clones")
            ),
            (reason, at, clone_id),
        )


class Clones(ReadModel[ClonesView]):
    name = "clones"
    view_class = ClonesView
    topics = topics_of(
        Clone.Created,
        Clone.Updated,
        Clone.DraftSaved,
        Clone.Published,
        Clone.Archived,
        Clone.Banned,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Clone.Created, tracking: Tracking) -> None:
        self.view.create(
            event.originator_id,
            event.owner_id,
            event.name,
            event.description,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: Clone.Updated, tracking: Tracking) -> None:
        self.view.update(event.originator_id, event.name, event.description, event.timestamp)

    @process_event.register
    def _(self, event: Clone.DraftSaved, tracking: Tracking) -> None:
        self.view.save_draft(
            event.originator_id,
            event.number,
            event.digest,
            event.graph,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: Clone.Published, tracking: Tracking) -> None:
        self.view.publish(
            event.originator_id,
            event.version_id,
            event.number,
            event.draft_number,
            event.graph,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: Clone.Archived, tracking: Tracking) -> None:
        self.view.archive(event.originator_id, event.timestamp)

    @process_event.register
    def _(self, event: Clone.Banned, tracking: Tracking) -> None:
        self.view.ban(event.originator_id, event.reason, event.timestamp)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloneSummaryRow:
    clone_id: UUID
    owner_id: UUID
    name: str
    description: str
    status: str
    ban_reason: str | None
    draft_number: int
    version_count: int
    latest_version_id: str | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    position: int

    @property
    def banned(self) -> bool:
        return self.ban_reason is not None


@dataclass(frozen=True, slots=True)
class CurrentDraft:
    number: int
    digest: str
    saved_at: datetime
    graph: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloneRow(CloneSummaryRow):
    """A clone with its current draft (digest, graph and time are None before the first)."""

    draft_digest: str | None
    draft_graph: dict[str, Any] | None
    draft_saved_at: datetime | None

    @property
    def draft(self) -> CurrentDraft | None:
        if self.draft_digest is None or self.draft_graph is None or self.draft_saved_at is None:
            return None
        return CurrentDraft(
            self.draft_number, self.draft_digest, self.draft_saved_at, self.draft_graph
        )


@dataclass(frozen=True, slots=True)
class CloneOwnerRow:
    owner_id: UUID


@dataclass(frozen=True, slots=True)
class DraftSummaryRow:
    number: int
    digest: str
    saved_at: datetime


@dataclass(frozen=True, slots=True)
class VersionSummaryRow:
    version_id: str
    number: int
    draft_number: int
    published_at: datetime


@dataclass(frozen=True, slots=True)
class VersionRow(VersionSummaryRow):
    graph: dict[str, Any]
    position: int


async def clone_by_id(reads: ProjectionReads, clone_id: UUID) -> CloneRow | None:
    query = SQL("SELECT {} FROM clones WHERE clone_id = %s").format(columns(CloneRow))
    return await reads.one(CloneRow, query, (clone_id,))


async def clone_owner(reads: ProjectionReads, clone_id: UUID) -> CloneOwnerRow | None:
    query = SQL("SELECT {} FROM clones WHERE clone_id = %s").format(columns(CloneOwnerRow))
    return await reads.one(CloneOwnerRow, query, (clone_id,))


async def clones_of_owner(
    reads: ProjectionReads, owner_id: UUID, status: str | None, page: Page
) -> list[CloneSummaryRow]:
    """A page of the owner's clones (all, or those with `status`), oldest first
    (cursor: position)."""
    query = SQL(
        "SELECT {} FROM clones WHERE owner_id = %s AND position > %s"
        " AND (%s::text IS NULL OR status = %s) ORDER BY position LIMIT %s"
    ).format(columns(CloneSummaryRow))
    params = (owner_id, page.position(), status, status, page.fetch)
    return await reads.all(CloneSummaryRow, query, params)


async def latest_drafts(
    reads: ProjectionReads, clone_id: UUID, limit: int
) -> list[DraftSummaryRow]:
    """The clone's `limit` latest draft saves, newest first."""
    query = SQL(
        "SELECT {} FROM clone_drafts WHERE clone_id = %s ORDER BY number DESC LIMIT %s"
    ).format(columns(DraftSummaryRow))
    return await reads.all(DraftSummaryRow, query, (clone_id, limit))


async def latest_versions(
    reads: ProjectionReads, clone_id: UUID, limit: int
) -> list[VersionSummaryRow]:
    """The clone's `limit` latest published versions, newest first, without their graphs."""
    query = SQL(
        "SELECT {} FROM clone_versions WHERE clone_id = %s ORDER BY number DESC LIMIT %s"
    ).format(columns(VersionSummaryRow))
    return await reads.all(VersionSummaryRow, query, (clone_id, limit))


async def versions_of_clone(reads: ProjectionReads, clone_id: UUID, page: Page) -> list[VersionRow]:
    """A page of the clone's versions with their graphs, oldest first (cursor: position)."""
    query = SQL(
        "SELECT {} FROM clone_versions WHERE clone_id = %s AND position > %s"
        " ORDER BY position LIMIT %s"
    ).format(columns(VersionRow))
    return await reads.all(VersionRow, query, (clone_id, page.position(), page.fetch))
