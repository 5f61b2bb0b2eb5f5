"""Hyperliquid's info API (`POST /info`): mids, asset contexts, candles and funding.

Prices and sizes arrive as strings and become Decimal; times are integer milliseconds.
`metaAndAssetCtxs` is a pair whose second list is index-aligned with the universe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, model_validator

from ingest.client import SourceClient

Price = Annotated[Decimal, Field(gt=0)]
Amount = Annotated[Decimal, Field(ge=0)]


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True)


class UniverseEntry(Wire):
    name: str
    szDecimals: int
    maxLeverage: int
    marginTableId: int | None = None
    onlyIsolated: bool = False
    isDelisted: bool = False


class Meta(Wire):
    universe: list[UniverseEntry]


class AssetContext(Wire):
    dayNtlVlm: Amount
    funding: Decimal
    impactPxs: list[Price] | None = None
    markPx: Price
    midPx: Price | None = None
    openInterest: Amount
    oraclePx: Price
    premium: Decimal | None = None
    prevDayPx: Price
    dayBaseVlm: Amount


class MetaAndAssetCtxs(RootModel[tuple[Meta, list[AssetContext]]]):
    @model_validator(mode="after")
    def aligned(self) -> MetaAndAssetCtxs:
        meta, contexts = self.root
        if len(meta.universe) != len(contexts):
            raise ValueError("asset contexts are not aligned with the universe")
        return self

    def by_name(self) -> dict[str, tuple[UniverseEntry, AssetContext]]:
        meta, contexts = self.root
        return {
            entry.name: (entry, ctx) for entry, ctx in zip(meta.universe, contexts, strict=True)
        }


class Candle(Wire):
    t: int
    T: int
    s: str
    i: str
    o: Price
    c: Price
    h: Price
    l: Price  # noqa: E741 - the wire's name
    v: Amount
    n: int

    @model_validator(mode="after")
    def consistent(self) -> Candle:
        if not (
            self.l <= min(self.o, self.c) and max(self.o, self.c) <= self.h and self.t < self.T
        ):
            raise ValueError("candle high/low/open/close or times are inconsistent")
        return self


class FundingRecord(Wire):
    coin: str
    fundingRate: Decimal
    premium: Decimal
    time: int


ALL_MIDS = TypeAdapter(dict[str, Price])
META_AND_ASSET_CTXS = TypeAdapter(MetaAndAssetCtxs)
CANDLES = TypeAdapter(list[Candle])
FUNDING = TypeAdapter(list[FundingRecord])


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


class HyperliquidClient(SourceClient):
    async def all_mids(self) -> dict[str, Decimal]:
        return await self.post("/info", ALL_MIDS, body={"type": "allMids"})

    async def meta_and_asset_ctxs(self) -> MetaAndAssetCtxs:
        return await self.post("/info", META_AND_ASSET_CTXS, body={"type": "metaAndAssetCtxs"})

    async def candles(
        self, coin: str, interval: str, start: datetime, end: datetime
    ) -> list[Candle]:
        req = {
            "coin": coin,
            "interval": interval,
            "startTime": millis(start),
            "endTime": millis(end),
        }
        return await self.post("/info", CANDLES, body={"type": "candleSnapshot", "req": req})

    async def funding_history(
        self, coin: str, start: datetime, end: datetime
    ) -> list[FundingRecord]:
        body = {"type": "fundingHistory", "coin": coin, "startTime": millis(start)}
        return await self.post("/info", FUNDING, body=body | {"endTime": millis(end)})
