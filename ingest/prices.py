"""Mark prices for the prop engine: the PostgreSQL `PriceSource` (the port is in the domain).

Ingestion writes observed prices into `market_marks`; the prop engine asks for the latest
mark of an asset and records the price, its source and when it was observed in the fill
event, so replay never reads this table.
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.postgres import PostgresDatastore

from aggregates.ports import Mark

INSERT_MARK = (
    "INSERT INTO market_marks (source, asset, observed_at, price)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
"""Idempotent: the same (source, asset, time) twice is stored once."""


class PostgresPriceSource:
    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore

    def latest_mark(self, asset: str) -> Mark | None:
        return self._mark(asset, None)

    def mark_at(self, asset: str, moment: datetime) -> Mark | None:
        return self._mark(asset, moment)

    def _mark(self, asset: str, moment: datetime | None) -> Mark | None:
        """The newest mark of `asset` observed at or before `moment` (None: the newest)."""
        with self.datastore.transaction() as cursor:
            cursor.execute(
                "SELECT asset, price, observed_at, source FROM market_marks"
                " WHERE asset = %s AND (%s::timestamptz IS NULL OR observed_at <= %s)"
                " ORDER BY observed_at DESC LIMIT 1",
                (asset, moment, moment),
            )
            row = cursor.fetchone()
        return (
            None
            if row is None
            else Mark(row["asset"], row["price"], row["observed_at"], row["source"])
        )

    def record(self, marks: list[Mark]) -> int:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.executemany(
                INSERT_MARK, [(m.source, m.asset, m.observed_at, m.price) for m in marks]
            )
            return max(cursor.rowcount, 0)
