"""The audit log: every event flattened, filterable by aggregate, actor, correlation, type."""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking

from projections.base import LedgerProjection, ProjectionView, RecordedEvent
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


class AuditLog(LedgerProjection[AuditLogView]):
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
