"""Reading the log by position, for runners and rebuilds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from projections.base import LedgerProjection, RecordedEvent
from runtime.schema import EVENTS_TABLE

NOTIFY_CHANNEL = EVENTS_TABLE  # the library NOTIFYs a channel named after the table

_READ_AFTER = SQL(
    "SELECT notification_id, originator_id, originator_version, topic, state, recorded_at "
    "FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
).format(Identifier(EVENTS_TABLE))


def read_after(cursor: Cursor[DictRow], position: int, limit: int) -> list[RecordedEvent]:
    cursor.execute(_READ_AFTER, (position, limit), prepare=True)
    return [
        RecordedEvent(
            position=row["notification_id"],
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
            recorded_at=row["recorded_at"],
        )
        for row in cursor.fetchall()
    ]


def head_position(cursor: Cursor[DictRow]) -> int:
    cursor.execute(
        SQL("SELECT max(notification_id) AS head FROM {}").format(Identifier(EVENTS_TABLE))
    )
    row = cursor.fetchone()
    return int(row["head"] or 0) if row else 0


class HandlerFailedError(Exception):
    """A projection raised on an event; carries where, so the batch can stop just before."""

    def __init__(self, index: int, event: RecordedEvent, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.index = index
        self.event = event
        self.error = error


def apply_events(
    projection: LedgerProjection[Any], mapper: Mapper[Any], events: Sequence[RecordedEvent]
) -> None:
    """Feed events to a projection whose view is bound to an open transaction."""
    topics = set(projection.topics)
    for index, recorded in enumerate(events):
        if topics and recorded.topic not in topics:
            continue
        try:
            projection.process_event(_as_input(projection, mapper, recorded), recorded.tracking)
        except Exception as error:
            raise HandlerFailedError(index, recorded, error) from error


def _as_input(
    projection: LedgerProjection[Any], mapper: Mapper[Any], recorded: RecordedEvent
) -> Any:
    if not projection.decodes_events:
        return recorded
    return mapper.to_domain_event(
        StoredEvent(
            originator_id=recorded.originator_id,
            originator_version=recorded.originator_version,
            topic=recorded.topic,
            state=recorded.state,
        )
    )


def batches_after(
    cursor: Cursor[DictRow], position: int, size: int
) -> Iterator[list[RecordedEvent]]:
    """Successive batches from `position` until the log, as this cursor sees it, ends."""
    while events := read_after(cursor, position, size):
        yield events
        position = events[-1].position
