"""Retention prunes raw ticks past the setting and keeps candles and the newest tick."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from aggregates.ports import Mark
from ingest.client import FetchError
from ingest.health import record_error
from ingest.ingestion import Ingestion
from ingest.prices import PostgresPriceSource
from ingest.storage import Batch, CandleRow
from runtime.clock import FixedClock
from services.bootstrap import Services


def mark(asset: str, at: datetime, price: str = "100") -> Mark:
    return Mark(asset, Decimal(price), at, "hyperliquid")


def candle(at: datetime) -> CandleRow:
    one = Decimal(1)
    return CandleRow(
        "hyperliquid", "BTC", "5m", at, at + timedelta(minutes=5), one, one, one, one, one, 1
    )


def marks(services: Services) -> list[tuple[str, datetime]]:
    with services.projections.datastore.transaction() as cursor:
        cursor.execute("SELECT asset, observed_at FROM market_marks ORDER BY asset, observed_at")
        return [(row["asset"], row["observed_at"]) for row in cursor.fetchall()]


def count(services: Services, table: str) -> int:
    with services.projections.datastore.transaction() as cursor:
        cursor.execute(f"SELECT count(*) AS n FROM {table}")
        row = cursor.fetchone()
    return int(row["n"]) if row else 0


def test_marks_past_retention_are_pruned_but_the_newest_of_each_asset_stays(
    ingestion: Ingestion, services: Services, clock: FixedClock
) -> None:
    retention = timedelta(seconds=ingestion.settings.ingest_tick_retention)
    old, older, recent = clock() - retention - timedelta(hours=1), clock() - retention * 2, clock()
    PostgresPriceSource(services.projections.datastore).record(
        [
            mark("BTC", older),
            mark("BTC", old),
            mark("BTC", recent),
            mark("ETH", older),
            mark("ETH", old),
        ]
    )

    deleted = ingestion.prune()

    assert marks(services) == [("BTC", recent), ("ETH", old)]
    assert deleted["market_marks"] == 3


def test_candles_are_kept_whatever_their_age(
    ingestion: Ingestion, services: Services, clock: FixedClock
) -> None:
    ancient = clock() - timedelta(days=400)
    with services.projections.datastore.transaction(commit=True) as cursor:
        Batch(candles=[candle(ancient), candle(ancient + timedelta(minutes=5))]).write(cursor)

    ingestion.prune()

    assert count(services, "market_candles") == 2


def test_recorded_errors_past_retention_are_pruned(
    ingestion: Ingestion, services: Services, clock: FixedClock
) -> None:
    with services.projections.datastore.transaction(commit=True) as cursor:
        error = FetchError("http", "POST /info allMids", "HTTP 500")
        record_error(cursor, "hyperliquid", error, clock() - timedelta(days=30))
        record_error(cursor, "hyperliquid", error, clock())

    ingestion.prune()

    assert count(services, "ingest_errors") == 1
