"""DefiLlama: current coin prices (coins.llama.fi) and protocol TVL (api.llama.fi).

Prices and TVL are JSON numbers on the wire; the client decodes them straight to Decimal.
Unknown coins are silently absent from a price answer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ingest.client import SourceClient

SEARCH_WIDTH = "6h"

EXTRA_TVL = {"borrowed", "staking", "pool2", "vesting", "offers", "treasury", "doublecounted"}
"""chainTvls keys that DefiLlama keeps apart from a protocol's default TVL."""


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True)


class CoinPrice(Wire):
    symbol: str
    price: Annotated[Decimal, Field(gt=0)]
    timestamp: int
    confidence: Decimal | None = None
    decimals: int | None = None


class CurrentPrices(Wire):
    coins: dict[str, CoinPrice]


class TvlPoint(Wire):
    date: int
    totalLiquidityUSD: Annotated[Decimal, Field(ge=0)]


class ChainTvl(Wire):
    tvl: list[TvlPoint]


class Protocol(Wire):
    name: str
    chainTvls: dict[str, ChainTvl]

    def default_tvl(self) -> dict[int, Decimal]:
        """TVL per date summed over plain chains, leaving out borrowed, staking, pool2 and
        the like (`Ethereum-borrowed`, `borrowed`), as DefiLlama's default view does."""
        total: dict[int, Decimal] = {}
        for chain, series in self.chainTvls.items():
            if "-" in chain or chain.lower() in EXTRA_TVL:
                continue
            for point in series.tvl:
                total[point.date] = total.get(point.date, Decimal(0)) + point.totalLiquidityUSD
        return total


PRICES = TypeAdapter(CurrentPrices)
PROTOCOL = TypeAdapter(Protocol)


class CoinsClient(SourceClient):
    async def current_prices(self, coins: list[str]) -> dict[str, CoinPrice]:
        path = "/prices/current/" + ",".join(coins)
        answer = await self.get(path, PRICES, params=[("searchWidth", SEARCH_WIDTH)])
        return answer.coins


class LlamaClient(SourceClient):
    async def protocol(self, slug: str) -> Protocol:
        return await self.get(f"/protocol/{slug}", PROTOCOL)
