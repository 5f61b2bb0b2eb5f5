"""Feature channels: named series computed on a cadence from the stored market data.

A channel is a feature of one instrument, named `source.instrument.feature` (for example
`hyperliquid.BTC.return_1h`), so a strategy graph can name it as a data source. Each value
is stored with the time it describes (the close of the candle it ends on, the funding
time, the TVL or midpoint observation), so computing again over the same data writes
nothing new. Values are Decimal, computed with 28 significant digits.

Features:
- `return_<w>`: close of the latest closed candle over the close of the candle opened `w`
  earlier, minus one.
- `volatility_<w>`: realized volatility, the square root of the sum of squared simple
  returns of consecutive closed candles over the window (not annualised).
- `funding_rate`: the latest hourly funding rate.
- `tvl_change_<w>`: latest TVL over the latest TVL at least `w` older, minus one.
- `probability`: the latest midpoint of the market's first outcome (Yes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Context, Decimal, localcontext
from itertools import pairwise
from typing import Any, ClassVar

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

from aggregates.errors import NotFoundError
from ingest.health import Watched, record_failure, record_success
from runtime.reads import Reads, columns
from runtime.settings import Settings

PRECISION = Context(prec=28)

CANDLE_INTERVALS = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
}


class ChannelNotFoundError(NotFoundError):
    code = "channel-not-found"


class NotEnoughDataError(Exception):
    """The stored data cannot give this channel a value yet."""


@dataclass(frozen=True)
class Observation:
    time: datetime
    value: Decimal


def label(window: timedelta) -> str:
    """`1h`, `4h`, `1d`, `7d`."""
    if window % timedelta(days=1) == timedelta(0):
        return f"{window // timedelta(days=1)}d"
    return f"{window // timedelta(hours=1)}h"


class Feature(ABC):
    source: ClassVar[str]
    unit: ClassVar[str]
    window: timedelta | None = None

    @property
    @abstractmethod
    def key(self) -> str: ...

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def compute(self, cursor: Cursor[DictRow], instrument: str, now: datetime) -> Observation:
        """The newest value from data observed at or before `now`."""


@dataclass(frozen=True)
class CandleFeature(Feature, ABC):
    window: timedelta = field()  # a field with no default, over Feature's `None`
    interval: str
    source: ClassVar[str] = "hyperliquid"

    def latest_closed(self, cursor: Cursor[DictRow], coin: str, now: datetime) -> DictRow:
        cursor.execute(
            "SELECT open_time, close_time, close FROM market_candles WHERE source = %s"
            " AND instrument = %s AND interval = %s AND close_time < %s"
            " ORDER BY open_time DESC LIMIT 1",
            (self.source, coin, self.interval, now),
        )
        row = cursor.fetchone()
        if row is None:
            raise NotEnoughDataError(f"no closed {self.interval} candle of {coin} yet")
        return row

    def closes(
        self, cursor: Cursor[DictRow], coin: str, start: datetime, end: datetime
    ) -> list[Decimal]:
        """Closes of the candles opened from `start` to `end`, inclusive, every one present."""
        cursor.execute(
            "SELECT close FROM market_candles WHERE source = %s AND instrument = %s"
            " AND interval = %s AND open_time BETWEEN %s AND %s ORDER BY open_time",
            (self.source, coin, self.interval, start, end),
        )
        closes = [row["close"] for row in cursor.fetchall()]
        wanted = (end - start) // CANDLE_INTERVALS[self.interval] + 1
        if len(closes) != wanted:
            raise NotEnoughDataError(
                f"{len(closes)} of the {wanted} {self.interval} candles of {coin}"
                f" over {label(self.window)} are stored"
            )
        return closes


@dataclass(frozen=True)
class CandleReturn(CandleFeature):
    unit: ClassVar[str] = "ratio"

    @property
    def key(self) -> str:
        return f"return_{label(self.window)}"

    @property
    def description(self) -> str:
        return f"Simple return over {label(self.window)} of {self.interval} closes"

    def compute(self, cursor: Cursor[DictRow], instrument: str, now: datetime) -> Observation:
        latest = self.latest_closed(cursor, instrument, now)
        closes = self.closes(
            cursor, instrument, latest["open_time"] - self.window, latest["open_time"]
        )
        with localcontext(PRECISION):
            return Observation(latest["close_time"], closes[-1] / closes[0] - 1)


@dataclass(frozen=True)
class RealizedVolatility(CandleFeature):
    unit: ClassVar[str] = "ratio"

    @property
    def key(self) -> str:
        return f"volatility_{label(self.window)}"

    @property
    def description(self) -> str:
        return (
            f"Realized volatility over {label(self.window)}: square root of the sum of squared"
            f" simple returns of consecutive {self.interval} closes, not annualised"
        )

    def compute(self, cursor: Cursor[DictRow], instrument: str, now: datetime) -> Observation:
        latest = self.latest_closed(cursor, instrument, now)
        closes = self.closes(
            cursor, instrument, latest["open_time"] - self.window, latest["open_time"]
        )
        with localcontext(PRECISION):
            returns = [after / before - 1 for before, after in pairwise(closes)]
            return Observation(
                latest["close_time"], sum((r * r for r in returns), Decimal(0)).sqrt()
            )


@dataclass(frozen=True)
class FundingRate(Feature):
    source: ClassVar[str] = "hyperliquid"
    unit: ClassVar[str] = "rate per hour"

    @property
    def key(self) -> str:
        return "funding_rate"

    @property
    def description(self) -> str:
        return "The latest hourly funding rate"

    def compute(self, cursor: Cursor[DictRow], instrument: str, now: datetime) -> Observation:
        cursor.execute(
            "SELECT funded_at, rate FROM market_funding WHERE source = %s AND instrument = %s"
            " AND funded_at <= %s ORDER BY funded_at DESC LIMIT 1",
            (self.source, instrument, now),
        )
        row = cursor.fetchone()
        if row is None:
            raise NotEnoughDataError(f"no funding of {instrument} stored yet")
        return Observation(row["funded_at"], row["rate"])


@dataclass(frozen=True)
class TvlChange(Feature):
    window: timedelta = field()  # a field with no default, over Feature's `None`
    source: ClassVar[str] = "defillama"
    unit: ClassVar[str] = "ratio"

    @property
    def key(self) -> str:
        return f"tvl_change_{label(self.window)}"

    @property
    def description(self) -> str:
        return f"Change of total value locked over {label(self.window)}"

    def compute(self, cursor: Cursor[DictRow], instrument: str, now: datetime) -> Observation:
        latest = self.tvl_at(cursor, instrument, now)
        if latest is None:
            raise NotEnoughDataError(f"no TVL of {instrument} stored yet")
        base = self.tvl_at(cursor, instrument, latest["observed_at"] - self.window)
        if base is None or base["tvl_usd"] == 0:
            raise NotEnoughDataError(
                f"no non-zero TVL of {instrument} {label(self.window)} earlier"
            )
        with localcontext(PRECISION):
            return Observation(latest["observed_at"], latest["tvl_usd"] / base["tvl_usd"] - 1)

    def tvl_at(self, cursor: Cursor[DictRow], protocol: str, moment: datetime) -> DictRow | None:
        cursor.execute(
            "SELECT observed_at, tvl_usd FROM protocol_tvl WHERE source = %s AND protocol = %s"
            " AND observed_at <= %s ORDER BY observed_at DESC LIMIT 1",
            (self.source, protocol, moment),
        )
        return cursor.fetchone()


@dataclass(frozen=True)
class Probability(Feature):
    source: ClassVar[str] = "polymarket"
    unit: ClassVar[str] = "probability"

    @property
    def key(self) -> str:
        return "probability"

    @property
    def description(self) -> str:
        return "Midpoint of the market's first outcome (Yes), 0 to 1"

    def compute(self, cursor: Cursor[DictRow], instrument: str, now: datetime) -> Observation:
        cursor.execute(
            "SELECT p.observed_at, p.midpoint FROM prediction_markets m"
            " JOIN prediction_prices p ON p.source = m.source AND p.token_id = m.token_ids ->> 0"
            " WHERE m.source = %s AND m.slug = %s AND p.observed_at <= %s"
            " ORDER BY p.observed_at DESC LIMIT 1",
            (self.source, instrument, now),
        )
        row = cursor.fetchone()
        if row is None:
            raise NotEnoughDataError(f"no midpoint of market {instrument} stored yet")
        return Observation(row["observed_at"], row["midpoint"])


@dataclass(frozen=True)
class Channel:
    instrument: str
    feature: Feature
    cadence_seconds: float

    @property
    def name(self) -> str:
        return f"{self.feature.source}.{self.instrument}.{self.feature.key}"

    @property
    def watched(self) -> Watched:
        return Watched("channel", self.name, self.cadence_seconds)

    def value_schema(self) -> dict[str, Any]:
        """JSON Schema of one stored value, as `/v1/ingest/channels/{name}/values` sends it."""
        return {
            "type": "object",
            "required": ["time", "value"],
            "properties": {
                "time": {"type": "string", "format": "date-time"},
                "value": {
                    "type": "string",
                    "format": "decimal",
                    "description": f"{self.feature.description} ({self.feature.unit})",
                },
            },
        }


def catalog(settings: Settings) -> list[Channel]:
    """The channels the settings ask for, in a stable order."""
    cadence = settings.ingest_channels_interval
    interval = settings.ingest_candle_interval
    hour, four_hours = timedelta(hours=1), timedelta(hours=4)
    per_coin: list[Feature] = [
        CandleReturn(hour, interval),
        CandleReturn(four_hours, interval),
        RealizedVolatility(hour, interval),
        RealizedVolatility(four_hours, interval),
        FundingRate(),
    ]
    per_protocol: list[Feature] = [TvlChange(timedelta(days=1)), TvlChange(timedelta(days=7))]
    channels = [
        Channel(coin, f, cadence) for coin in settings.ingest_hyperliquid_coins for f in per_coin
    ]
    channels += [
        Channel(slug, f, cadence)
        for slug in settings.ingest_defillama_protocols
        for f in per_protocol
    ]
    channels += [Channel(slug, Probability(), cadence) for slug in settings.ingest_polymarket_slugs]
    return channels


def compute_channels(cursor: Cursor[DictRow], channels: list[Channel], now: datetime) -> int:
    """Compute every channel; store new values and each channel's health. Returns the
    number of values written (zero when nothing changed since the last round)."""
    written = 0
    for channel in channels:
        try:
            observation = channel.feature.compute(cursor, channel.instrument, now)
        except NotEnoughDataError as error:
            record_failure(cursor, channel.watched, now, str(error))
            continue
        cursor.execute(
            "INSERT INTO feature_values (channel, observed_at, value, computed_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (channel, observed_at) DO UPDATE"
            " SET value = EXCLUDED.value, computed_at = EXCLUDED.computed_at"
            " WHERE feature_values.value IS DISTINCT FROM EXCLUDED.value",
            (channel.name, observation.time, observation.value, now),
        )
        written += max(cursor.rowcount, 0)
        record_success(cursor, channel.watched, now)
    return written


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelValueRow:
    channel: str
    observed_at: datetime
    value: Decimal


async def latest_values(reads: Reads) -> list[ChannelValueRow]:
    """Each channel's newest stored value."""
    query = SQL(
        "SELECT DISTINCT ON (channel) {} FROM feature_values ORDER BY channel, observed_at DESC"
    ).format(columns(ChannelValueRow))
    return await reads.all(ChannelValueRow, query, ())


async def channel_values(
    reads: Reads, channel: str, before: datetime | None, limit: int
) -> list[ChannelValueRow]:
    """Up to `limit` of the channel's stored values older than `before`, newest first."""
    query = SQL(
        "SELECT {} FROM feature_values WHERE channel = %s"
        " AND (%s::timestamptz IS NULL OR observed_at < %s)"
        " ORDER BY observed_at DESC LIMIT %s"
    ).format(columns(ChannelValueRow))
    return await reads.all(ChannelValueRow, query, (channel, before, before, limit))
