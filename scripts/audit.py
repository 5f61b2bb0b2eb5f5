"""What the `pumpparty audit` commands print: JSON lines of history, state and the log.

History and state come from `services.audit`, the same code the `/v1/audit/*`
routes use; this module adds log positions and streams the whole log for export.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

from runtime.transcoder import OrjsonTranscoder
from services.audit import history
from services.eventlog import EventLog

_transcoder = OrjsonTranscoder()


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot encode {type(value).__qualname__} as JSON")


def dumps(value: Any) -> bytes:
    """One JSON line; Decimal, UUID and datetime become strings, never floats."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_APPEND_NEWLINE)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def positions(event_log: EventLog, aggregate_id: UUID) -> dict[int, int]:
    """Version -> log position, for one aggregate (one indexed query)."""
    datastore = event_log.recorder.datastore  # type: ignore[attr-defined]
    with datastore.transaction() as cursor:
        cursor.execute(
            f"SELECT originator_version, notification_id FROM {event_log.events_table}"
            " WHERE originator_id = %s",
            (aggregate_id,),
        )
        return {row["originator_version"]: row["notification_id"] for row in cursor.fetchall()}


def aggregate_history(event_log: EventLog, aggregate_id: UUID) -> list[dict[str, Any]]:
    """The aggregate's events in order, each with the log position it was written at."""
    where = positions(event_log, aggregate_id)
    return [
        {"version": entry["version"], "position": where.get(entry["version"]), **entry}
        for entry in history(event_log, aggregate_id)
    ]


_EXPORT = SQL(
    "SELECT notification_id, originator_id, originator_version, topic, recorded_at, state"
    " FROM {} ORDER BY notification_id"
)


def export_events(url: str, write: Callable[[bytes], object], *, table: str) -> int:
    """Stream every stored event, in log order, as JSON lines; the number written."""
    count = 0
    with (
        psycopg.connect(url) as conn,
        conn.cursor(name="audit_export", row_factory=dict_row) as rows,
    ):
        rows.itersize = 2000
        rows.execute(_EXPORT.format(Identifier(table)))
        for row in rows:
            write(
                dumps(
                    {
                        "position": row["notification_id"],
                        "aggregate_id": row["originator_id"],
                        "version": row["originator_version"],
                        "topic": row["topic"],
                        "recorded_at": row["recorded_at"],
                        "state": _transcoder.decode(bytes(row["state"])),
                    }
                )
            )
            count += 1
    return count
