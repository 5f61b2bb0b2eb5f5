"""Retention: raw ticks older than the retention period are pruned; candles, funding, TVL,
markets and channel values are kept.

Raw ticks are the marks (mids and coin prices), asset contexts and prediction-market
prices. The newest tick of each instrument is always kept, so `latest_mark` still answers
(with its true, old observation time) after a long outage, and the prop engine's
freshness rule is what refuses it. Recorded ingestion errors past the period go too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

RAW_TICKS = [
    ("market_marks", "asset"),
    ("market_contexts", "instrument"),
    ("prediction_prices", "token_id"),
]


def prune(cursor: Cursor[DictRow], now: datetime, retention: timedelta) -> dict[str, int]:
    """Rows deleted per table."""
    cutoff = now - retention
    deleted: dict[str, int] = {}
    for table, instrument in RAW_TICKS:
        cursor.execute(
            SQL(
                "DELETE FROM {table} AS old WHERE old.observed_at < %s AND EXISTS ("
                " SELECT 1 FROM {table} AS newer WHERE newer.source = old.source"
                " AND newer.{instrument} = old.{instrument}"
                " AND newer.observed_at > old.observed_at)"
            ).format(table=Identifier(table), instrument=Identifier(instrument)),
            (cutoff,),
        )
        deleted[table] = max(cursor.rowcount, 0)
    cursor.execute("DELETE FROM ingest_errors WHERE occurred_at < %s", (cutoff,))
    deleted["ingest_errors"] = max(cursor.rowcount, 0)
    return deleted
