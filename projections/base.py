"""The one projection base: tables in generations, rows and position in one transaction.

A projection's rows live in physical tables named `<table>__g<N>`; readers query the
stable name `<table>`, a view over the live generation. A rebuild fills generation N+1
from position zero while readers keep using N, then repoints the views in one
transaction. Each generation tracks its own position in `<name>__g<N>_tracking`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Placeholder

from runtime.schema import LOG_NAME

COPY_FROM_ROWS = 16
"""A batch appends this many rows to a table or more with COPY, fewer with one INSERT."""


@dataclass(frozen=True)
class RecordedEvent:
    """One row of the log as stored: what a projection that needs no domain class reads."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    recorded_at: datetime

    @property
    def tracking(self) -> Tracking:
        return Tracking(LOG_NAME, self.position)


class ProjectionView(PostgresTrackingRecorder):
    """A projection's tables for one generation; handlers write through `self.cursor`."""

    tables: ClassVar[dict[str, str]] = {}
    """Logical table name -> column definitions, e.g. `"(id uuid PRIMARY KEY, ...)"`."""
    indexes: ClassVar[dict[str, list[str]]] = {}
    """Logical table name -> index column lists, e.g. `["(owner, created_at)"]`."""

    def __init__(self, datastore: PostgresDatastore, *, name: str, generation: int) -> None:
        self.projection_name = name
        self.generation = generation
        super().__init__(datastore, tracking_table_name=f"{name}__g{generation}_tracking")
        self._cursor: Cursor[DictRow] | None = None
        self._appends: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for logical, columns in self.tables.items():
            # Column lists are SQL written by us, appended after formatting so that
            # literals like '{}' are not read as placeholders.
            self.sql_create_statements.append(
                SQL("CREATE TABLE IF NOT EXISTS {} ").format(self.table(logical)) + SQL(columns)
            )
            for number, index in enumerate(self.indexes.get(logical, [])):
                self.sql_create_statements.append(
                    SQL("CREATE INDEX IF NOT EXISTS {} ON {} ").format(
                        Identifier(f"{logical}__g{generation}_i{number}"), self.table(logical)
                    )
                    + SQL(index)
                )

    def table(self, logical: str) -> Identifier:
        """The physical table of this generation."""
        return Identifier(f"{logical}__g{self.generation}")

    @property
    def cursor(self) -> Cursor[DictRow]:
        if self._cursor is None:
            raise RuntimeError("view methods run inside a batch")
        return self._cursor

    @contextmanager
    def batch(self, cursor: Cursor[DictRow]) -> Iterator[ProjectionView]:
        """Bind the view to one transaction. A view is used by one runner at a time."""
        self._cursor = cursor
        self._appends.clear()
        try:
            yield self
        finally:
            self._cursor = None
            self._appends.clear()  # a batch that failed half-way leaves nothing behind

    def update_row(self, logical: str, key: str, value: Any, **columns: Any) -> None:
        """Set `columns` on the row of `logical` whose `key` column equals `value`: the one
        way a read model changes a row it keeps (column names are ours, never input)."""
        assignments = SQL(", ").join(SQL("{} = %s").format(Identifier(c)) for c in columns)
        self.cursor.execute(
            SQL("UPDATE {} SET {} WHERE {} = %s").format(
                self.table(logical), assignments, Identifier(key)
            ),
            (*columns.values(), value),
        )

    def append_row(self, logical: str, row: dict[str, Any]) -> None:
        """Buffer a row for a table that is only ever appended to (and not read while a
        batch runs); the batch writes them all at once when it records its position."""
        self._appends.setdefault((logical, tuple(row)), []).append(tuple(row.values()))

    def record_position(self, position: int) -> None:
        for (logical, columns), rows in self._appends.items():
            self._write_appended(self.table(logical), columns, rows)
        self._appends.clear()
        self._insert_tracking(self.cursor, Tracking(LOG_NAME, position))

    def _write_appended(
        self, table: Identifier, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        """One COPY for a rebuild's or a busy log's many rows; below `COPY_FROM_ROWS`, one
        INSERT, since a COPY takes a round trip to start and another to end (a live
        follower's batch is often a single event)."""
        names = SQL(", ").join(map(Identifier, columns))
        if len(rows) < COPY_FROM_ROWS:
            one_row = SQL("({})").format(SQL(", ").join([Placeholder()] * len(columns)))
            self.cursor.execute(
                SQL("INSERT INTO {} ({}) VALUES {}").format(
                    table, names, SQL(", ").join([one_row] * len(rows))
                ),
                [value for row in rows for value in row],
            )
            return
        with self.cursor.copy(SQL("COPY {} ({}) FROM STDIN").format(table, names)) as copy:
            for row in rows:
                copy.write_row(row)

    def position_in(self, cursor: Cursor[DictRow]) -> int:
        return self._max_tracking_id(LOG_NAME, cursor) or 0

    def create_statements(self) -> list[Composed]:
        return list(self.sql_create_statements)  # type: ignore[arg-type]

    def drop_statements(self) -> list[Composed]:
        drops = [SQL("DROP TABLE IF EXISTS {}").format(self.table(t)) for t in self.tables]
        drops.append(SQL("DROP TABLE IF EXISTS {}").format(Identifier(self.tracking_table_name)))
        return drops

    def shape_in(self, cursor: Cursor[DictRow]) -> list[tuple[str, str]]:
        """This generation's tables as the catalog has them: per logical table, its columns
        (name, type, NOT NULL, default) in order, its constraints and its indexes, with the
        generation's number taken out of names, so that two generations made from the same
        declarations compare equal. A table that does not exist has no lines."""
        logicals = list(self.tables)
        cursor.execute(_SHAPE, (logicals, [f"{t}__g{self.generation}" for t in logicals]))
        return [
            (str(row["logical"]), re.sub(r"__g[0-9]+", "__g", str(row["line"])))
            for row in cursor.fetchall()
        ]

    def expose_statements(self, *, reshaped: bool = False) -> list[Composed]:
        """Point each reader-facing view at this generation's table. `reshaped`: the tables
        the views show now have other columns, which `CREATE OR REPLACE VIEW` refuses (it
        cannot drop, rename or reorder a view's columns), so the views are dropped and made
        again; in one transaction, readers wait on the views' locks and then see the new."""
        drops = [SQL("DROP VIEW IF EXISTS {}").format(Identifier(t)) for t in self.tables]
        return [
            *(drops if reshaped else []),
            *(
                SQL("CREATE OR REPLACE VIEW {} AS SELECT * FROM {}").format(
                    Identifier(logical), self.table(logical)
                )
                for logical in self.tables
            ),
        ]


_SHAPE = SQL("""
    SELECT t.logical, x.line
    FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(logical, physical, ord)
    CROSS JOIN LATERAL (
        SELECT 1 AS part, a.attnum AS n,
            'column ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
            || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
            || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') AS line
        FROM pg_attribute a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = to_regclass(t.physical) AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT 2, 0, 'constraint ' || pg_get_constraintdef(c.oid)
        FROM pg_constraint c WHERE c.conrelid = to_regclass(t.physical)
        UNION ALL
        SELECT 3, 0, 'index ' || CASE WHEN i.indisunique THEN 'unique ' ELSE '' END
            || substring(pg_get_indexdef(i.indexrelid) FROM ' USING .*$')
        FROM pg_index i WHERE i.indrelid = to_regclass(t.physical)
    ) AS x
    ORDER BY t.ord, x.part, x.n, x.line
""")
"""A generation's tables, one line per column, constraint and index (`shape_in`). Our
table names are lower-case and unquoted, so `to_regclass` reads them as written."""

V = TypeVar("V", bound=ProjectionView)


class ReadModel(Projection[V], Generic[V]):
    """Base of every read model.

    `topics` names the event classes it handles (empty: every event). With
    `decodes_events` off, handlers receive the `RecordedEvent` itself, never a domain
    object, so the projection works even where an event's class cannot be imported.
    """

    view_class: ClassVar[type[ProjectionView]]
    decodes_events: ClassVar[bool] = True
    rebuildable: ClassVar[bool] = True

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Events a projection does not handle leave no rows; its position still moves."""
