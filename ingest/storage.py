"""Market-data tables: what one ingestion round writes, in one transaction.

Every table is keyed by (source, instrument, time), so writing the same window again is a
no-op: marks are first-write-wins (one observation at one time), the rest are upserts that
touch a row only when a value changed (the newest candle keeps moving until it closes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import Jsonb

from aggregates.ports import Mark
from ingest.prices import INSERT_MARK

R = TypeVar("R")


@dataclass(frozen=True)
class CandleRow:
    source: str
    instrument: str
    interval: str
    open_time: datetime
    close_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int


@dataclass(frozen=True)
class FundingRow:
    source: str
    instrument: str
    funded_at: datetime
    rate: Decimal
    premium: Decimal


@dataclass(frozen=True)
class ContextRow:
    source: str
    instrument: str
    observed_at: datetime
    mark_price: Decimal
    mid_price: Decimal | None
    oracle_price: Decimal
    funding: Decimal
    open_interest: Decimal
    premium: Decimal | None
    prev_day_price: Decimal
    day_notional_volume: Decimal
    max_leverage: int


@dataclass(frozen=True)
class MarketRow:
    source: str
    market_id: str
    slug: str
    question: str
    condition_id: str
    outcomes: Jsonb
    token_ids: Jsonb
    end_date: datetime | None
    active: bool
    closed: bool
    updated_at: datetime


@dataclass(frozen=True)
class PredictionRow:
    source: str
    token_id: str
    observed_at: datetime
    market_id: str
    outcome: str
    midpoint: Decimal
    buy_price: Decimal | None
    sell_price: Decimal | None


@dataclass(frozen=True)
class TvlRow:
    source: str
    protocol: str
    observed_at: datetime
    tvl_usd: Decimal


@dataclass(frozen=True)
class Table:
    name: str
    row: type
    key: tuple[str, ...]
    ignore_updates: tuple[str, ...] = ()
    """Columns that change on every round without changing the fact (a refresh time)."""

    def upsert(self) -> Composed:
        columns = [f.name for f in fields(self.row)]
        compared = [c for c in columns if c not in self.key and c not in self.ignore_updates]
        updated = [c for c in columns if c not in self.key]
        return SQL(
            "INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key})"
            " DO UPDATE SET {assignments} WHERE ({current}) IS DISTINCT FROM ({incoming})"
        ).format(
            table=Identifier(self.name),
            columns=SQL(", ").join(map(Identifier, columns)),
            values=SQL(", ").join(SQL("%s") for _ in columns),
            key=SQL(", ").join(map(Identifier, self.key)),
            assignments=SQL(", ").join(
                SQL("{c} = EXCLUDED.{c}").format(c=Identifier(c)) for c in updated
            ),
            current=SQL(", ").join(Identifier(self.name, c) for c in compared),
            incoming=SQL(", ").join(SQL("EXCLUDED.{}").format(Identifier(c)) for c in compared),
        )


CANDLES = Table("market_candles", CandleRow, ("source", "instrument", "interval", "open_time"))
FUNDING = Table("market_funding", FundingRow, ("source", "instrument", "funded_at"))
CONTEXTS = Table("market_contexts", ContextRow, ("source", "instrument", "observed_at"))
MARKETS = Table("prediction_markets", MarketRow, ("source", "market_id"), ("updated_at",))
PREDICTIONS = Table("prediction_prices", PredictionRow, ("source", "token_id", "observed_at"))
TVL = Table("protocol_tvl", TvlRow, ("source", "protocol", "observed_at"))


@dataclass
class Batch:
    """Everything one round fetched and parsed, written together or not at all."""

    marks: list[Mark] = field(default_factory=list)
    candles: list[CandleRow] = field(default_factory=list)
    funding: list[FundingRow] = field(default_factory=list)
    contexts: list[ContextRow] = field(default_factory=list)
    markets: list[MarketRow] = field(default_factory=list)
    predictions: list[PredictionRow] = field(default_factory=list)
    tvl: list[TvlRow] = field(default_factory=list)

    def write(self, cursor: Cursor[DictRow]) -> dict[str, int]:
        """Rows inserted or changed per table (zero when the window was written before)."""
        written = {
            "market_marks": _executemany(cursor, INSERT_MARK, [_mark(m) for m in self.marks])
        }
        for table, rows in (
            (MARKETS, self.markets),
            (CANDLES, self.candles),
            (FUNDING, self.funding),
            (CONTEXTS, self.contexts),
            (PREDICTIONS, self.predictions),
            (TVL, self.tvl),
        ):
            written[table.name] = _executemany(cursor, table.upsert(), [_values(r) for r in rows])
        return written


def _values(row: object) -> tuple[Any, ...]:
    return tuple(getattr(row, f.name) for f in fields(row))  # type: ignore[arg-type]


def _mark(mark: Mark) -> tuple[Any, ...]:
    return (mark.source, mark.asset, mark.observed_at, mark.price)


def _executemany(
    cursor: Cursor[DictRow], query: str | Composed, rows: list[tuple[Any, ...]]
) -> int:
    if not rows:
        return 0
    cursor.executemany(query, rows)  # type: ignore[arg-type]
    return max(cursor.rowcount, 0)
