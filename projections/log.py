"""Reading the log by position, for runners and rebuilds."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from projections.base import ReadModel, RecordedEvent
from runtime.schema import EVENTS_TABLE

NOTIFY_CHANNEL = EVENTS_TABLE  # the library NOTIFYs a channel named after the table

_COLUMNS = "notification_id, originator_id, originator_version, topic, state, recorded_at"
# Rendered once: these run for every batch.
_READ_AFTER = (
    SQL(
        "SELECT "
        + _COLUMNS
        + " FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
    )
    .format(Identifier(EVENTS_TABLE))
    .as_bytes()
)
_READ_BETWEEN = (
    SQL(
        "SELECT " + _COLUMNS + " FROM {} WHERE notification_id > %s AND notification_id <= %s"
        " ORDER BY notification_id LIMIT %s"
    )
    .format(Identifier(EVENTS_TABLE))
    .as_bytes()
)
_READ_BETWEEN_TOPICS = (
    SQL(
        "SELECT " + _COLUMNS + " FROM {} WHERE notification_id > %s AND notification_id <= %s"
        " AND topic = ANY(%s) ORDER BY notification_id LIMIT %s"
    )
    .format(Identifier(EVENTS_TABLE))
    .as_bytes()
)


def read_after(cursor: Cursor[DictRow], position: int, limit: int) -> list[RecordedEvent]:
    cursor.execute(_READ_AFTER, (position, limit), prepare=True)
    return _recorded(cursor)


@dataclass(frozen=True)
class Window:
    """The log between two positions, as one read saw it: `events` are every event in
    (`after`, `upto`] (of the asked topics, when some were asked), in order. A projection
    at any position in [`after`, `upto`) that applies the ones it handles is at `upto`."""

    after: int
    upto: int
    events: list[RecordedEvent]


def read_window(
    cursor: Cursor[DictRow],
    after: int,
    limit: int,
    *,
    head: int | None = None,
    topics: Collection[str] | None = None,
) -> Window:
    """Up to `limit` events after `after` (only `topics`, if given), up to `head` (default:
    the head now). A full read ends at its last event; a short one at `head`, which is safe
    because positions commit in order: every event up to a visible head is visible."""
    if head is None:
        head = head_position(cursor)
    if head <= after:
        return Window(after, after, [])
    if topics is None:
        cursor.execute(_READ_BETWEEN, (after, head, limit), prepare=True)
    else:
        cursor.execute(_READ_BETWEEN_TOPICS, (after, head, list(topics), limit), prepare=True)
    events = _recorded(cursor)
    upto = events[-1].position if len(events) >= limit else head
    return Window(after, upto, events)


def _recorded(cursor: Cursor[DictRow]) -> list[RecordedEvent]:
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
    projection: ReadModel[Any],
    mapper: Mapper[Any],
    events: Sequence[RecordedEvent],
    decoded: dict[int, Any] | None = None,
) -> None:
    """Feed events to a projection whose view is bound to an open transaction.

    `decoded` (position -> domain event) lets projections that read the same batch decode
    each event once; a handler must not change the event it is given."""
    topics = set(projection.topics)
    for index, recorded in enumerate(events):
        if topics and recorded.topic not in topics:
            continue
        try:
            event = _as_input(projection, mapper, recorded, decoded)
            projection.process_event(event, recorded.tracking)
        except Exception as error:
            raise HandlerFailedError(index, recorded, error) from error


def _as_input(
    projection: ReadModel[Any],
    mapper: Mapper[Any],
    recorded: RecordedEvent,
    decoded: dict[int, Any] | None,
) -> Any:
    if not projection.decodes_events:
        return recorded
    if decoded is not None and recorded.position in decoded:
        return decoded[recorded.position]
    event = _decode(mapper, recorded)
    if decoded is not None:
        decoded[recorded.position] = event
    return event


def _decode(mapper: Mapper[Any], recorded: RecordedEvent) -> Any:
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
