"""Prototypes of proposed speed-ups, measured beside the product code; not used by it.

Each one is a measured argument for a change outside `benchmarks/` (see RESULTS.md):

- `LockedInsertFunction`: the command path's append as ONE statement (a PL/pgSQL function
  taking the same table lock and NOTIFY as the library's default path, then inserting),
  called in autocommit, instead of the library's pipelined BEGIN/SET/LOCK/NOTIFY/INSERT,
  sync, COMMIT. Same commit-order guarantee, one round trip, no pipeline mode.
- `CopyAuditLog`: the audit log projection writing a batch's rows with one COPY at the
  end of the batch instead of one INSERT round trip per event.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from aggregates.application import Ledger
from projections.audit_log import AuditLog, AuditLogView
from projections.base import ProjectionView

INSERT_FUNCTION = "bench_insert_events_locked"

_COLUMNS = (
    "position",
    "aggregate_id",
    "aggregate_type",
    "event_type",
    "version",
    "actor",
    "correlation_id",
    "causation_id",
    "schema_version",
    "occurred_at",
    "recorded_at",
)


def create_locked_insert_function(url: str, events_table: str, lock_timeout: int = 10) -> None:
    """The library's `es_insert_events_uuid`, plus the EXCLUSIVE lock its default path takes."""
    body = SQL(
        "CREATE OR REPLACE FUNCTION {function}(events stored_event_uuid[])"
        " RETURNS SETOF bigint LANGUAGE plpgsql AS $$"
        " BEGIN"
        "   SET LOCAL lock_timeout = '{timeout}s';"
        "   LOCK TABLE {table} IN EXCLUSIVE MODE;"
        "   NOTIFY {table};"
        "   RETURN QUERY"
        "   INSERT INTO {table} (originator_id, originator_version, topic, state)"
        "   SELECT originator_id, originator_version, topic, state FROM unnest(events)"
        "   RETURNING notification_id;"
        " END $$"
    ).format(
        function=Identifier(INSERT_FUNCTION),
        timeout=SQL(str(int(lock_timeout))),
        table=Identifier(events_table),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(body)


def use_locked_insert_function(ledger: Ledger, *, pre_ping: bool) -> None:
    """Point this ledger's recorder at the one-statement function (library hook: the
    `enable_db_functions` path, with our function instead of the lock-free one)."""
    recorder: Any = ledger.recorder
    recorder.datastore.enable_db_functions = True
    recorder.pg_function_name_insert_events = INSERT_FUNCTION
    recorder.sql_invoke_pg_function_insert_events = SQL("SELECT * FROM {}((%s))").format(
        Identifier(INSERT_FUNCTION)
    )
    if not pre_ping:
        recorder.datastore.pool._check = None


class CopyAuditLogView(AuditLogView):
    """Buffers a batch's rows and writes them with one COPY when the position is recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rows: list[tuple[Any, ...]] = []

    @contextmanager
    def batch(self, cursor: Cursor[DictRow]) -> Iterator[ProjectionView]:
        self._rows.clear()  # a batch that failed half-way must leave nothing behind
        with super().batch(cursor) as view:
            yield view

    def insert_entry(self, entry: dict[str, Any]) -> None:
        self._rows.append(tuple(entry[column] for column in _COLUMNS))

    def record_position(self, position: int) -> None:
        if self._rows:
            statement = SQL("COPY {} ({}) FROM STDIN").format(
                self.table("audit_log"), SQL(", ").join(map(Identifier, _COLUMNS))
            )
            with self.cursor.copy(statement) as copy:
                for row in self._rows:
                    copy.write_row(row)
            self._rows.clear()
        super().record_position(position)


class CopyAuditLog(AuditLog):
    name = AuditLog.name
    view_class: ClassVar[type[AuditLogView]] = CopyAuditLogView  # type: ignore[misc]
