"""An aggregate's history and its state as of a version or a time, replayed from the log.

Shared by the `/v1/audit/*` routes and the `pumpparty audit` commands, so both show the
same thing. Values are made JSON-safe here: money and ids as strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from aggregates.errors import NotFoundError
from projections.audit_log import split_topic
from runtime.transcoder import jsonable
from services.eventlog import EventLog

_METADATA = ("actor", "correlation_id", "causation_id", "schema_version")
_HIDDEN = ("originator_id", "originator_version", "timestamp", "originator_topic", *_METADATA)


def history(event_log: EventLog, aggregate_id: UUID) -> list[dict[str, Any]]:
    events: list[Any] = list(event_log.events.get(aggregate_id))
    if not events:
        raise NotFoundError(f"aggregate {aggregate_id} has no events")
    entries = []
    for event in events:
        topic = f"{type(event).__module__}:{type(event).__qualname__}"
        state = vars(event)
        entries.append(
            {
                "version": event.originator_version,
                "aggregate_type": split_topic(topic)[0],
                "event_type": split_topic(topic)[1],
                "occurred_at": jsonable(event.timestamp),
                **{key: state.get(key) for key in _METADATA},
                "data": jsonable({k: v for k, v in state.items() if k not in _HIDDEN}),
            }
        )
    return entries


def state_at(
    event_log: EventLog,
    aggregate_id: UUID,
    *,
    version: int | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The aggregate as it was after `version`, or after its last event at or before `at`."""
    if at is not None:
        events: list[Any] = list(event_log.events.get(aggregate_id))
        versions = [e.originator_version for e in events if e.timestamp <= at]
        if not versions:
            raise NotFoundError(f"aggregate {aggregate_id} did not exist at {at.isoformat()}")
        version = max(versions) if version is None else min(version, max(versions))
    try:
        aggregate: Any = event_log.repository.get(aggregate_id, version=version)
    except AggregateNotFoundError:
        raise NotFoundError(f"aggregate {aggregate_id} not found") from None
    state = {
        key.lstrip("_"): value
        for key, value in vars(aggregate).items()
        if key not in ("_pending_events",)
    }
    return {
        "aggregate_id": str(aggregate.id),
        "aggregate_type": type(aggregate).__name__,
        "version": aggregate.version,
        "state": jsonable(state),
    }
