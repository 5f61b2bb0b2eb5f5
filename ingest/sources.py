"""One round per source: fetch every payload concurrently, parse, and turn it into rows.

A round either returns a complete `Batch` or raises the first `FetchError`; the caller
writes the batch in one transaction, so a failed round writes nothing at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from psycopg.types.json import Jsonb

from aggregates.ports import Mark
from ingest.client import FetchError
from ingest.defillama import CoinsClient, LlamaClient
from ingest.hyperliquid import HyperliquidClient, from_millis
from ingest.polymarket import ClobClient, GammaClient, GammaMarket
from ingest.storage import (
    Batch,
    CandleRow,
    ContextRow,
    FundingRow,
    MarketRow,
    PredictionRow,
    TvlRow,
)

HYPERLIQUID = "hyperliquid"
POLYMARKET = "polymarket"
DEFILLAMA = "defillama"


@asynccontextmanager
async def together() -> AsyncIterator[asyncio.TaskGroup]:
    """A task group whose failure surfaces as its first FetchError, the others cancelled."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except ExceptionGroup as failed:
        first = failed.exceptions[0]
        if isinstance(first, FetchError):
            raise first from None
        raise


async def hyperliquid_batch(
    client: HyperliquidClient,
    coins: list[str],
    interval: str,
    lookback: timedelta,
    now: datetime,
) -> Batch:
    start = now - lookback
    async with together() as group:
        mids = group.create_task(client.all_mids())
        contexts = group.create_task(client.meta_and_asset_ctxs())
        candles = {c: group.create_task(client.candles(c, interval, start, now)) for c in coins}
        funding = {c: group.create_task(client.funding_history(c, start, now)) for c in coins}
    batch = Batch()
    universe = contexts.result().by_name()
    for coin in coins:
        if coin in mids.result():
            batch.marks.append(Mark(coin, mids.result()[coin], now, HYPERLIQUID))
        if coin in universe:
            entry, ctx = universe[coin]
            batch.contexts.append(
                ContextRow(
                    source=HYPERLIQUID,
                    instrument=coin,
                    observed_at=now,
                    mark_price=ctx.markPx,
                    mid_price=ctx.midPx,
                    oracle_price=ctx.oraclePx,
                    funding=ctx.funding,
                    open_interest=ctx.openInterest,
                    premium=ctx.premium,
                    prev_day_price=ctx.prevDayPx,
                    day_notional_volume=ctx.dayNtlVlm,
                    max_leverage=entry.maxLeverage,
                )
            )
        batch.candles += [
            CandleRow(
                HYPERLIQUID,
                coin,
                interval,
                from_millis(c.t),
                from_millis(c.T),
                c.o,
                c.h,
                c.l,
                c.c,
                c.v,
                c.n,
            )
            for c in candles[coin].result()
        ]
        batch.funding += [
            FundingRow(HYPERLIQUID, coin, from_millis(r.time), r.fundingRate, r.premium)
            for r in funding[coin].result()
        ]
    return batch


async def polymarket_batch(
    gamma: GammaClient, clob: ClobClient, slugs: list[str], now: datetime
) -> Batch:
    markets = await gamma.markets(slugs)
    traded = [m for m in markets if m.enableOrderBook and not m.closed and m.clobTokenIds]
    tokens = [token for market in traded for token in market.clobTokenIds]
    batch = Batch(markets=[market_row(market, now) for market in markets])
    if not tokens:
        return batch
    async with together() as group:
        midpoints = group.create_task(clob.midpoints(tokens))
        prices = group.create_task(clob.prices(tokens))
    for market in traded:
        for outcome, token in zip(market.outcomes, market.clobTokenIds, strict=True):
            if token not in midpoints.result():
                continue  # no order book for it right now
            sides = prices.result().get(token)
            batch.predictions.append(
                PredictionRow(
                    source=POLYMARKET,
                    token_id=token,
                    observed_at=now,
                    market_id=market.id,
                    outcome=outcome,
                    midpoint=midpoints.result()[token],
                    buy_price=sides.BUY if sides else None,
                    sell_price=sides.SELL if sides else None,
                )
            )
    return batch


def market_row(market: GammaMarket, now: datetime) -> MarketRow:
    return MarketRow(
        source=POLYMARKET,
        market_id=market.id,
        slug=market.slug,
        question=market.question,
        condition_id=market.conditionId,
        outcomes=Jsonb(market.outcomes),
        token_ids=Jsonb(market.clobTokenIds),
        end_date=market.endDate,
        active=market.active,
        closed=market.closed,
        updated_at=now,
    )


async def defillama_batch(
    coins_client: CoinsClient, llama: LlamaClient, coins: list[str], protocols: list[str]
) -> Batch:
    async with together() as group:
        prices = group.create_task(coins_client.current_prices(coins)) if coins else None
        tvl = {slug: group.create_task(llama.protocol(slug)) for slug in protocols}
    batch = Batch()
    for coin, price in (prices.result() if prices else {}).items():
        observed = datetime.fromtimestamp(price.timestamp, UTC)
        batch.marks.append(Mark(coin, price.price, observed, DEFILLAMA))
    for slug, task in tvl.items():
        batch.tvl += [
            TvlRow(DEFILLAMA, slug, datetime.fromtimestamp(date, UTC), value)
            for date, value in sorted(task.result().default_tvl().items())
        ]
    return batch
