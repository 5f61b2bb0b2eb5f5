"""Polymarket: Gamma (markets and events) and the CLOB (midpoints and prices).

Gamma's `outcomes`, `outcomePrices` and `clobTokenIds` are JSON documents inside strings;
they are decoded here. The CLOB's single midpoint is `mid` on the wire but `mid_price` in
the newer OpenAPI, so both are accepted.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from ingest.client import SourceClient

Probability = Annotated[Decimal, Field(ge=0, le=1)]


def decode_json_string(value: Any) -> Any:
    """`"[\\"Yes\\", \\"No\\"]"` → `["Yes", "No"]`; anything else is left to validation."""
    if isinstance(value, str):
        try:
            return json.loads(value, parse_float=Decimal)
        except ValueError:
            raise ValueError("not a JSON-encoded list") from None
    return value


JsonList = Annotated[list[str], BeforeValidator(decode_json_string)]
JsonProbabilities = Annotated[list[Probability], BeforeValidator(decode_json_string)]


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True)


class GammaMarket(Wire):
    id: str
    question: str
    conditionId: str
    slug: str
    outcomes: JsonList
    outcomePrices: JsonProbabilities = []
    clobTokenIds: JsonList = []
    active: bool
    closed: bool
    endDate: datetime | None = None
    volume: Decimal | None = None
    liquidity: Decimal | None = None
    enableOrderBook: bool = False

    @model_validator(mode="after")
    def aligned(self) -> GammaMarket:
        if self.clobTokenIds and len(self.clobTokenIds) != len(self.outcomes):
            raise ValueError("clobTokenIds are not aligned with outcomes")
        return self


class GammaEventMarket(Wire):
    id: str
    conditionId: str


class GammaEvent(Wire):
    id: str
    slug: str
    title: str
    active: bool
    closed: bool
    endDate: datetime | None = None
    markets: list[GammaEventMarket] = []


class Midpoint(Wire):
    mid: Probability = Field(validation_alias=AliasChoices("mid", "mid_price"))


class SidePrices(Wire):
    BUY: Probability | None = None
    SELL: Probability | None = None


MARKETS = TypeAdapter(list[GammaMarket])
EVENTS = TypeAdapter(list[GammaEvent])
MIDPOINT = TypeAdapter(Midpoint)
MIDPOINTS = TypeAdapter(dict[str, Probability])
PRICES = TypeAdapter(dict[str, SidePrices])


class GammaClient(SourceClient):
    async def markets(self, slugs: list[str]) -> list[GammaMarket]:
        """Open markets with these slugs (Gamma applies closed=false when it is omitted)."""
        return await self.get("/markets", MARKETS, params=[("slug", slug) for slug in slugs])

    async def events(self, slug: str) -> list[GammaEvent]:
        return await self.get("/events", EVENTS, params=[("slug", slug)])


class ClobClient(SourceClient):
    async def midpoint(self, token_id: str) -> Decimal:
        answer = await self.get("/midpoint", MIDPOINT, params=[("token_id", token_id)])
        return answer.mid

    async def midpoints(self, token_ids: list[str]) -> dict[str, Decimal]:
        body = [{"token_id": token} for token in token_ids]
        return await self.post("/midpoints", MIDPOINTS, body=body)

    async def prices(self, token_ids: list[str]) -> dict[str, SidePrices]:
        body = [
            {"token_id": token, "side": side} for token in token_ids for side in ("BUY", "SELL")
        ]
        return await self.post("/prices", PRICES, body=body)
