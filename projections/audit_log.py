"""The audit log: every event flattened, filterable by aggregate, actor, correlation, type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from psycopg.sql import SQL, Composable, Composed, Identifier

from projections.base import ProjectionView, ReadModel, RecordedEvent
from projections.paging import Page
from projections.reads import ProjectionReads, columns
from runtime.transcoder import OrjsonTranscoder

_transcoder = OrjsonTranscoder()


def split_topic(topic: str) -> tuple[str, str]:
    """`module:Aggregate.Event` -> (`Aggregate`, `Event`)."""
    qualname = topic.partition(":")[2] or topic
    aggregate_type, _, event_type = qualname.rpartition(".")
    return aggregate_type or qualname, event_type or qualname


class AuditLogView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "audit_log": """(
            position bigint PRIMARY KEY,
            aggregate_id uuid NOT NULL,
            aggregate_type text NOT NULL,
            event_type text NOT NULL,
            version bigint NOT NULL,
            actor text,
            correlation_id text,
            causation_id text,
            schema_version integer,
            occurred_at timestamptz,
            recorded_at timestamptz NOT NULL
        )"""
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "audit_log": [
            "(aggregate_id, position)",
            "(actor, position)",
            "(correlation_id, position)",
            "(event_type, position)",
            "(occurred_at)",
        ]
    }

    def insert_entry(self, entry: dict[str, Any]) -> None:
        self.append_row("audit_log", entry)


class AuditLog(ReadModel[AuditLogView]):
    name = "audit_log"
    view_class = AuditLogView
    # Works from the stored rows, so no event is ever unreadable to the auditors.
    decodes_events = False

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        pass

    @process_event.register
    def _(self, recorded: RecordedEvent, tracking: Tracking) -> None:
        state = _transcoder.decode(recorded.state)
        aggregate_type, event_type = split_topic(recorded.topic)
        self.view.insert_entry(
            {
                "position": recorded.position,
                "aggregate_id": recorded.originator_id,
                "aggregate_type": aggregate_type,
                "event_type": event_type,
                "version": recorded.originator_version,
                "actor": state.get("actor"),
                "correlation_id": state.get("correlation_id"),
                "causation_id": state.get("causation_id"),
                "schema_version": state.get("schema_version"),
                "occurred_at": state.get("timestamp"),
                "recorded_at": recorded.recorded_at,
            }
        )


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntryRow:
    position: int
    aggregate_id: UUID
    aggregate_type: str
    event_type: str
    version: int
    actor: str | None
    correlation_id: str | None
    causation_id: str | None
    schema_version: int | None
    occurred_at: datetime | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to list: each field set must match exactly; `occurred_from` is
    inclusive, `occurred_to` exclusive."""

    aggregate_id: UUID | None = None
    aggregate_type: str | None = None
    event_type: str | None = None
    actor: str | None = None
    correlation_id: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None

    def where(self, after: int) -> tuple[Composed, list[Any]]:
        clauses: list[Composable] = [SQL("position > %s")]
        params: list[Any] = [after]
        for column in ("aggregate_id", "aggregate_type", "event_type", "actor", "correlation_id"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(SQL("{} = %s").format(Identifier(column)))
                params.append(value)
        if self.occurred_from is not None:
            clauses.append(SQL("occurred_at >= %s"))
            params.append(self.occurred_from)
        if self.occurred_to is not None:
            clauses.append(SQL("occurred_at < %s"))
            params.append(self.occurred_to)
        return SQL(" AND ").join(clauses), params


async def audit_entries(
    reads: ProjectionReads, where: AuditFilter, page: Page
) -> list[AuditEntryRow]:
    """A page of the entries that match, in log order (cursor: position)."""
    condition, params = where.where(page.position())
    query = SQL("SELECT {} FROM audit_log WHERE {} ORDER BY position LIMIT %s").format(
        columns(AuditEntryRow), condition
    )
    return await reads.all(AuditEntryRow, query, [*params, page.fetch])


async def events_of(reads: ProjectionReads, aggregate_id: UUID, page: Page) -> list[AuditEntryRow]:
    """A page of one aggregate's entries, in log order (cursor: position)."""
    return await audit_entries(reads, AuditFilter(aggregate_id=aggregate_id), page)


async def events_of_all(
    reads: ProjectionReads, aggregate_ids: Sequence[UUID], page: Page
) -> list[AuditEntryRow]:
    """A page of several aggregates' entries together, in log order (cursor: position): a
    prop account's own events with its cadence decisions' (`TradingDecisions`)."""
    query = SQL(
        "SELECT {} FROM audit_log WHERE aggregate_id = ANY(%s) AND position > %s"
        " ORDER BY position LIMIT %s"
    ).format(columns(AuditEntryRow))
    return await reads.all(AuditEntryRow, query, (list(aggregate_ids), page.position(), page.fetch))
