"""Closed candles for the strategy executor: the market-data store read into a `MarketFrame`.

The bars are the traded asset's stored candles (`market_candles`) of one interval whose
close is before `end`, so a still-forming candle is never read, the latest `bars` of them.
Other instruments' candles (for candle channels) are matched to those bars by open time;
stored channels (`feature_values`) are taken as of each bar's close, and a value older
than `CHANNEL_MAX_AGE` counts as missing; funding (`market_funding`) is summed per bar.
Prices arrive as Decimal and become float64 here: the executor's arithmetic is numpy's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import Cursor

from aggregates.errors import ConflictError
from aggregates.strategy_executor import (
    CANDLE_SOURCE,
    Bars,
    FloatArray,
    IntArray,
    MarketFrame,
    Strategy,
    as_of,
    per_bar_sum,
)

CHANNEL_MAX_AGE = timedelta(days=1)
"""A stored channel value is used for bars at most this long after it was observed."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class MarketDataMissingError(ConflictError):
    """No closed candle of the asset is stored for the window asked."""

    code = "market-data-missing"


def millis(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def closed_bar_count(
    cursor: Cursor[Any], asset: str, interval: str, end: datetime, source: str = CANDLE_SOURCE
) -> int:
    """How many candles of `asset` closed before `end` are stored."""
    cursor.execute(
        "SELECT count(*) AS n FROM market_candles WHERE source = %s AND instrument = %s"
        " AND interval = %s AND close_time < %s",
        (source, asset, interval, end),
    )
    row = cursor.fetchone()
    return int(row["n"]) if row else 0


def market_frame(
    cursor: Cursor[Any],
    strategy: Strategy,
    *,
    interval: str,
    end: datetime,
    bars: int,
    source: str = CANDLE_SOURCE,
) -> MarketFrame:
    """The latest `bars` closed bars before `end`, with everything `strategy` reads."""
    asset = strategy.asset
    cursor.execute(
        "SELECT open_time, close_time, open, high, low, close, volume FROM market_candles"
        " WHERE source = %s AND instrument = %s AND interval = %s AND close_time < %s"
        " ORDER BY open_time DESC LIMIT %s",
        (source, asset, interval, end, bars),
    )
    rows = cursor.fetchall()[::-1]
    if not rows:
        raise MarketDataMissingError(
            f"no closed {interval} candle of {asset} is stored before {end.isoformat()}"
        )
    open_time = np.array([millis(r["open_time"]) for r in rows], dtype=np.int64)
    close_time = np.array([millis(r["close_time"]) for r in rows], dtype=np.int64)
    candles = {asset: _bars(rows)}
    others = [name for name in strategy.instruments(source) if name != asset]
    if others:
        candles |= _aligned_candles(cursor, others, interval, source, rows, open_time, end)
    channels = _stored_channels(cursor, strategy.stored_channels(source), rows, close_time)
    funding = _funding(cursor, asset, source, rows, open_time, close_time)
    return MarketFrame(
        asset=asset,
        interval=interval,
        open_time=open_time,
        close_time=close_time,
        candles=candles,
        channels=channels,
        funding=funding,
        source=source,
    )


def _floats(rows: list[Any], column: str) -> FloatArray:
    return np.array([float(r[column]) for r in rows], dtype=np.float64)


def _bars(rows: list[Any]) -> Bars:
    return Bars(*(_floats(rows, c) for c in ("open", "high", "low", "close", "volume")))


def _aligned_candles(
    cursor: Cursor[Any],
    instruments: list[str],
    interval: str,
    source: str,
    rows: list[Any],
    open_time: IntArray,
    end: datetime,
) -> dict[str, Bars]:
    cursor.execute(
        "SELECT instrument, open_time, open, high, low, close, volume FROM market_candles"
        " WHERE source = %s AND instrument = ANY(%s) AND interval = %s"
        " AND open_time BETWEEN %s AND %s AND close_time < %s ORDER BY instrument, open_time",
        (source, instruments, interval, rows[0]["open_time"], rows[-1]["open_time"], end),
    )
    found: dict[str, list[Any]] = {name: [] for name in instruments}
    for row in cursor.fetchall():
        found[row["instrument"]].append(row)
    aligned = {}
    n = len(open_time)
    for name, theirs in found.items():
        columns = [np.full(n, np.nan) for _ in range(5)]
        if theirs:
            times = np.array([millis(r["open_time"]) for r in theirs], dtype=np.int64)
            index = np.minimum(np.searchsorted(times, open_time), len(times) - 1)
            hit = times[index] == open_time
            for values, column in zip(
                columns, ("open", "high", "low", "close", "volume"), strict=True
            ):
                values[hit] = _floats(theirs, column)[index[hit]]
        aligned[name] = Bars(*columns)
    return aligned


def _stored_channels(
    cursor: Cursor[Any], names: list[str], rows: list[Any], close_time: IntArray
) -> dict[str, FloatArray]:
    if not names:
        return {}
    cursor.execute(
        "SELECT channel, observed_at, value FROM feature_values WHERE channel = ANY(%s)"
        " AND observed_at <= %s AND observed_at > %s ORDER BY channel, observed_at",
        (names, rows[-1]["close_time"], rows[0]["close_time"] - CHANNEL_MAX_AGE),
    )
    found: dict[str, list[Any]] = {name: [] for name in names}
    for row in cursor.fetchall():
        found[row["channel"]].append(row)
    max_age = CHANNEL_MAX_AGE // _MS
    return {
        name: as_of(
            close_time,
            np.array([millis(r["observed_at"]) for r in theirs], dtype=np.int64),
            np.array([float(r["value"]) for r in theirs], dtype=np.float64),
            max_age,
        )
        for name, theirs in found.items()
    }


def _funding(
    cursor: Cursor[Any],
    asset: str,
    source: str,
    rows: list[Any],
    open_time: IntArray,
    close_time: IntArray,
) -> FloatArray:
    cursor.execute(
        "SELECT funded_at, rate FROM market_funding WHERE source = %s AND instrument = %s"
        " AND funded_at BETWEEN %s AND %s ORDER BY funded_at",
        (source, asset, rows[0]["open_time"], rows[-1]["close_time"]),
    )
    found = cursor.fetchall()
    times = np.array([millis(r["funded_at"]) for r in found], dtype=np.int64)
    rates = np.array([float(r["rate"]) for r in found], dtype=np.float64)
    return per_bar_sum(open_time, close_time, times, rates)
