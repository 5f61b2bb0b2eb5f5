"""Auditions: one row per audition (by owner, with its pinned rules and current attempt)
and one row per attempt (its prop account, due time, verdict and metrics).

Each row keeps `position`, the log position of the event that first wrote it: lists page
by it. Also the economy read model's question an audition asks first: which entitlements
a user may still spend (sync: commands run in threads); and the API's queries (async, typed
rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL, Composable, Identifier
from psycopg.types.json import Jsonb

from aggregates.auditions import Audition
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns
from runtime.transcoder import jsonable


class AuditionsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "auditions": """(
            audition_id uuid PRIMARY KEY,
            owner_id uuid NOT NULL,
            clone_id uuid NOT NULL,
            version_hash text NOT NULL,
            status text NOT NULL,
            rules jsonb NOT NULL,
            current_attempt integer NOT NULL DEFAULT 0,
            prop_account_id uuid,
            started_at timestamptz,
            due_at timestamptz,
            void_reason text,
            restored_entitlement_id uuid,
            submitted_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE
        )""",
        "audition_attempts": """(
            audition_id uuid NOT NULL,
            number integer NOT NULL,
            prop_account_id uuid NOT NULL,
            entitlement_id uuid,
            status text NOT NULL,
            started_at timestamptz NOT NULL,
            due_at timestamptz NOT NULL,
            ended_by text,
            evaluated_at timestamptz,
            failed_rules jsonb NOT NULL DEFAULT '[]',
            metrics jsonb,
            position bigint NOT NULL UNIQUE,
            PRIMARY KEY (audition_id, number)
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "auditions": ["(owner_id, position)", "(status, position)", "(clone_id, position)"]
    }

    def submit(self, audition_id: UUID, row: dict[str, Any]) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (audition_id, owner_id, clone_id, version_hash, status, rules,"
                " submitted_at, updated_at, position)"
                " VALUES (%(audition_id)s, %(owner_id)s, %(clone_id)s, %(version_hash)s,"
                " 'running', %(rules)s, %(at)s, %(at)s, %(position)s)"
            ).format(self.table("auditions")),
            {**row, "audition_id": audition_id, "rules": Jsonb(jsonable(row["rules"]))},
        )

    def start_attempt(self, audition_id: UUID, row: dict[str, Any]) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'running', current_attempt = %(number)s,"
                " prop_account_id = %(prop_account_id)s, started_at = %(started_at)s,"
                " due_at = %(due_at)s, updated_at = %(started_at)s"
                " WHERE audition_id = %(audition_id)s"
            ).format(self.table("auditions")),
            {**row, "audition_id": audition_id},
        )
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (audition_id, number, prop_account_id, entitlement_id, status,"
                " started_at, due_at, position)"
                " VALUES (%(audition_id)s, %(number)s, %(prop_account_id)s, %(entitlement_id)s,"
                " 'running', %(started_at)s, %(due_at)s, %(position)s)"
            ).format(self.table("audition_attempts")),
            {**row, "audition_id": audition_id},
        )

    def end_attempt(
        self,
        audition_id: UUID,
        number: int,
        status: str,
        metrics: dict[str, Any],
        failed_rules: list[str],
        ended_by: str,
        at: datetime,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %s, metrics = %s, failed_rules = %s, ended_by = %s,"
                " evaluated_at = %s WHERE audition_id = %s AND number = %s"
            ).format(self.table("audition_attempts")),
            (
                status,
                Jsonb(jsonable(metrics)),
                Jsonb(failed_rules),
                ended_by,
                at,
                audition_id,
                number,
            ),
        )
        self.set_status(audition_id, status, at)

    def void(
        self,
        audition_id: UUID,
        number: int,
        reason: str,
        restored_entitlement_id: UUID | None,
        at: datetime,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'voided' WHERE audition_id = %s AND number = %s"
                " AND status = 'running'"
            ).format(self.table("audition_attempts")),
            (audition_id, number),
        )
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = 'voided', void_reason = %s,"
                " restored_entitlement_id = %s, updated_at = %s WHERE audition_id = %s"
            ).format(self.table("auditions")),
            (reason, restored_entitlement_id, at, audition_id),
        )

    def set_status(self, audition_id: UUID, status: str, at: datetime) -> None:
        self.cursor.execute(
            SQL("UPDATE {} SET status = %s, updated_at = %s WHERE audition_id = %s").format(
                self.table("auditions")
            ),
            (status, at, audition_id),
        )


class Auditions(ReadModel[AuditionsView]):
    name = "auditions"
    view_class = AuditionsView
    topics = topics_of(
        Audition.Submitted,
        Audition.AttemptStarted,
        Audition.Passed,
        Audition.Failed,
        Audition.Voided,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Audition.Submitted, tracking: Tracking) -> None:
        self.view.submit(
            event.originator_id,
            {
                "owner_id": event.owner_id,
                "clone_id": event.clone_id,
                "version_hash": event.version_hash,
                "rules": event.rules,
                "at": event.timestamp,
                "position": tracking.notification_id,
            },
        )

    @process_event.register
    def _(self, event: Audition.AttemptStarted, tracking: Tracking) -> None:
        self.view.start_attempt(
            event.originator_id,
            {
                "number": event.number,
                "prop_account_id": event.prop_account_id,
                "entitlement_id": event.entitlement_id,
                "started_at": event.started_at,
                "due_at": event.due_at,
                "position": tracking.notification_id,
            },
        )

    @process_event.register
    def _(self, event: Audition.Passed, tracking: Tracking) -> None:
        self.view.end_attempt(
            event.originator_id,
            event.number,
            "passed",
            event.metrics,
            [],
            event.ended_by,
            event.evaluated_at,
        )

    @process_event.register
    def _(self, event: Audition.Failed, tracking: Tracking) -> None:
        self.view.end_attempt(
            event.originator_id,
            event.number,
            "failed",
            event.metrics,
            event.failed_rules,
            event.ended_by,
            event.evaluated_at,
        )

    @process_event.register
    def _(self, event: Audition.Voided, tracking: Tracking) -> None:
        self.view.void(
            event.originator_id,
            event.number,
            event.reason,
            event.restored_entitlement_id,
            event.timestamp,
        )


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditionSummaryRow:
    audition_id: UUID
    owner_id: UUID
    clone_id: UUID
    version_hash: str
    status: str
    current_attempt: int
    prop_account_id: UUID | None
    started_at: datetime | None
    due_at: datetime | None
    void_reason: str | None
    submitted_at: datetime
    updated_at: datetime
    position: int


@dataclass(frozen=True, slots=True)
class AuditionRow(AuditionSummaryRow):
    """An audition with the rules pinned at submit and what its void gave back."""

    rules: dict[str, Any]
    restored_entitlement_id: UUID | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    number: int
    status: str
    prop_account_id: UUID
    entitlement_id: UUID | None
    started_at: datetime
    due_at: datetime
    ended_by: str | None
    evaluated_at: datetime | None
    failed_rules: list[str]
    metrics: dict[str, Any] | None

    @property
    def free(self) -> bool:
        """A retry the policy let start without an entitlement."""
        return self.entitlement_id is None


@dataclass(frozen=True, slots=True)
class AuditionFilter:
    """Which auditions to list: each field set must match exactly."""

    status: str | None = None
    owner_id: UUID | None = None
    clone_id: UUID | None = None

    def where(self, after: int) -> tuple[Composable, list[Any]]:
        clauses: list[Composable] = [SQL("position > %s")]
        params: list[Any] = [after]
        for column in ("status", "owner_id", "clone_id"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(SQL("{} = %s").format(Identifier(column)))
                params.append(value)
        return SQL(" AND ").join(clauses), params


async def audition_by_id(reads: ProjectionReads, audition_id: UUID) -> AuditionRow | None:
    query = SQL("SELECT {} FROM auditions WHERE audition_id = %s").format(columns(AuditionRow))
    return await reads.one(AuditionRow, query, (audition_id,))


async def auditions_matching(
    reads: ProjectionReads, where: AuditionFilter, page: Page
) -> list[AuditionSummaryRow]:
    """A page of the auditions that match, oldest first (cursor: position)."""
    condition, params = where.where(page.position())
    query = SQL("SELECT {} FROM auditions WHERE {} ORDER BY position LIMIT %s").format(
        columns(AuditionSummaryRow), condition
    )
    return await reads.all(AuditionSummaryRow, query, [*params, page.fetch])


async def auditions_of_owner(
    reads: ProjectionReads, owner_id: UUID, status: str | None, page: Page
) -> list[AuditionSummaryRow]:
    """A page of the owner's auditions (all, or those with `status`), oldest first."""
    return await auditions_matching(reads, AuditionFilter(status=status, owner_id=owner_id), page)


async def attempts_of(reads: ProjectionReads, audition_id: UUID) -> list[AttemptRow]:
    """Every attempt of the audition, first to latest."""
    query = SQL("SELECT {} FROM audition_attempts WHERE audition_id = %s ORDER BY number").format(
        columns(AttemptRow)
    )
    return await reads.all(AttemptRow, query, (audition_id,))
