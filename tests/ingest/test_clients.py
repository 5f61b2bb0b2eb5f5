"""The source clients against loopback servers that answer with the recorded payloads."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from datetime import timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ingest.client import USER_AGENT, FetchError
from ingest.ingestion import Ingestion
from ingest.replay import FIXTURES
from runtime.clock import FixedClock
from tests.ingest.conftest import Naps
from tests.ingest.servers import (
    Servers,
    hang,
    rate_limited,
    server_error,
    truncated,
    wrong_shape,
)

T = TypeVar("T")

YES_BTC_100K = json.loads(
    json.loads((FIXTURES / "polymarket/gamma-markets.json").read_text())[0]["clobTokenIds"]
)[0]
YES_ETH_5K = json.loads(
    json.loads((FIXTURES / "polymarket/gamma-markets.json").read_text())[1]["clobTokenIds"]
)[0]


def run(ingestion: Ingestion, call: Coroutine[Any, Any, T]) -> T:
    return ingestion.loop.run(call)


def fixture(name: str) -> Any:
    return json.loads(Path(FIXTURES / name).read_text(), parse_float=Decimal)


# --- Hyperliquid ------------------------------------------------------------------------


def test_all_mids_parse_to_decimals(ingestion: Ingestion) -> None:
    mids = run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert mids["BTC"] == Decimal("67000.0")
    assert mids["ETH"] == Decimal("3520.00")
    assert mids["@107"] == Decimal("38.200")


def test_meta_and_asset_contexts_are_aligned_by_name(ingestion: Ingestion) -> None:
    answer = run(ingestion, ingestion.hyperliquid_client.meta_and_asset_ctxs())

    entry, context = answer.by_name()["SOL"]
    assert (entry.szDecimals, entry.maxLeverage) == (2, 20)
    assert context.markPx == Decimal("172.000")
    assert context.impactPxs == [Decimal("171.999"), Decimal("172.001")]


def test_candles_and_funding_parse(ingestion: Ingestion, clock: FixedClock) -> None:
    client = ingestion.hyperliquid_client
    start = clock() - timedelta(hours=6)

    candles = run(ingestion, client.candles("BTC", "5m", start, clock()))
    funding = run(ingestion, client.funding_history("ETH", start, clock()))

    assert len(candles) == 72
    assert (candles[0].t, candles[0].o, candles[0].c) == (
        1754287200000,
        Decimal("67000.0"),
        Decimal("67206.8"),
    )
    assert [f.fundingRate for f in funding][:2] == [Decimal("0.0000178"), Decimal("0.0000084")]


def test_every_request_names_us_in_the_user_agent(ingestion: Ingestion, servers: Servers) -> None:
    run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert servers.hyperliquid.seen[0].headers["User-Agent"] == USER_AGENT


# --- Polymarket -------------------------------------------------------------------------


def test_gamma_markets_decode_their_json_string_fields(ingestion: Ingestion) -> None:
    markets = run(ingestion, ingestion.gamma.markets(["btc-100k", "eth-5k"]))

    btc = markets[0]
    assert (btc.slug, btc.outcomes) == ("btc-100k", ["Yes", "No"])
    assert btc.outcomePrices == [Decimal("0.42"), Decimal("0.58")]
    assert btc.clobTokenIds[0] == YES_BTC_100K and len(btc.clobTokenIds) == 2


def test_gamma_events_parse(ingestion: Ingestion) -> None:
    events = run(ingestion, ingestion.gamma.events("btc-100k-2026"))

    assert [(e.id, [m.id for m in e.markets]) for e in events] == [("16085", ["12345"])]


def test_clob_midpoint_accepts_mid_and_mid_price(ingestion: Ingestion) -> None:
    as_mid = run(ingestion, ingestion.clob.midpoint(YES_BTC_100K))
    as_mid_price = run(ingestion, ingestion.clob.midpoint(YES_ETH_5K))

    assert (as_mid, as_mid_price) == (Decimal("0.401"), Decimal("0.194"))


def test_clob_midpoints_and_prices_parse_per_token(ingestion: Ingestion) -> None:
    tokens = run(ingestion, ingestion.gamma.markets(["btc-100k", "eth-5k"]))
    ids = [token for market in tokens for token in market.clobTokenIds]

    midpoints = run(ingestion, ingestion.clob.midpoints(ids))
    prices = run(ingestion, ingestion.clob.prices(ids))

    assert midpoints[YES_BTC_100K] == Decimal("0.416")
    assert (
        Decimal("0.411"),
        Decimal("0.421"),
    ) == (prices[YES_BTC_100K].BUY, prices[YES_BTC_100K].SELL)


def test_clob_error_bodies_become_the_error_message(ingestion: Ingestion) -> None:
    with pytest.raises(FetchError, match="HTTP 404: No orderbook exists") as raised:
        run(ingestion, ingestion.clob.midpoint("1"))

    assert raised.value.kind == "http"


# --- DefiLlama --------------------------------------------------------------------------


def test_coin_prices_keep_the_digits_of_their_json_numbers(ingestion: Ingestion) -> None:
    prices = run(
        ingestion, ingestion.coins.current_prices(ingestion.settings.ingest_defillama_coins)
    )

    assert prices["coingecko:bitcoin"].price == Decimal("66728.08")
    usdc = prices["ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"]
    assert (usdc.symbol, usdc.decimals, usdc.price) == ("USDC", 6, Decimal("0.9997"))


def test_protocol_default_tvl_sums_chains_and_leaves_out_borrowed(ingestion: Ingestion) -> None:
    recorded = fixture("defillama/protocol-aave.json")

    protocol = run(ingestion, ingestion.llama.protocol("aave"))

    assert protocol.default_tvl() == {
        point["date"]: point["totalLiquidityUSD"] for point in recorded["tvl"]
    }


def test_unknown_protocol_is_an_http_error(ingestion: Ingestion) -> None:
    with pytest.raises(FetchError, match="HTTP 404: Protocol not found"):
        run(ingestion, ingestion.llama.protocol("no-such-protocol"))


# --- misbehaving hosts ------------------------------------------------------------------


def test_429_waits_the_retry_after_seconds_then_succeeds(
    ingestion: Ingestion, servers: Servers, naps: Naps
) -> None:
    servers.hyperliquid.fail(rate_limited("7"))

    mids = run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert mids["BTC"] == Decimal("67000.0")
    assert naps.taken == [7.0]
    assert len(servers.hyperliquid.seen) == 2


def test_429_retry_after_may_be_an_http_date(
    ingestion: Ingestion, servers: Servers, naps: Naps, clock: FixedClock
) -> None:
    servers.hyperliquid.fail(rate_limited(format_datetime(clock() + timedelta(seconds=12), True)))

    run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert naps.taken == [12.0]


def test_429_asking_for_longer_than_allowed_pauses_the_host(
    ingestion: Ingestion, servers: Servers
) -> None:
    servers.hyperliquid.fail(rate_limited("3600"))

    with pytest.raises(FetchError, match="retry after 3600s") as first:
        run(ingestion, ingestion.hyperliquid_client.all_mids())
    with pytest.raises(FetchError, match="paused") as second:
        run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert (first.value.kind, second.value.kind) == ("rate-limited", "rate-limited")
    assert len(servers.hyperliquid.seen) == 1


def test_a_paused_host_is_asked_again_once_its_retry_after_has_passed(
    ingestion: Ingestion, servers: Servers, clock: FixedClock
) -> None:
    servers.hyperliquid.fail(rate_limited("3600"))
    with pytest.raises(FetchError):
        run(ingestion, ingestion.hyperliquid_client.all_mids())
    clock.advance(seconds=3600)

    mids = run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert mids["BTC"] == Decimal("67000.0")


def test_500_is_retried_with_jittered_backoff(
    ingestion: Ingestion, servers: Servers, naps: Naps
) -> None:
    servers.hyperliquid.fail(server_error(), times=2)

    mids = run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert mids["BTC"] == Decimal("67000.0")
    assert len(naps.taken) == 2
    assert all(0 <= nap <= ingestion.settings.ingest_backoff_max for nap in naps.taken)


def test_500_every_time_gives_up_after_the_attempts(ingestion: Ingestion, servers: Servers) -> None:
    servers.hyperliquid.fail(server_error(), times=None)

    with pytest.raises(FetchError, match="HTTP 500") as raised:
        run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert raised.value.kind == "http" and raised.value.excerpt == "Internal error"
    assert len(servers.hyperliquid.seen) == ingestion.settings.ingest_attempts


def test_a_hanging_host_times_out_on_every_attempt(ingestion: Ingestion, servers: Servers) -> None:
    servers.hyperliquid.fail(hang(), times=None)

    with pytest.raises(FetchError) as raised:
        run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert raised.value.kind == "timeout"
    assert len(servers.hyperliquid.seen) == ingestion.settings.ingest_attempts


def test_truncated_json_is_retried(ingestion: Ingestion, servers: Servers) -> None:
    servers.hyperliquid.fail(truncated())

    mids = run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert mids["BTC"] == Decimal("67038.3")  # the recording's next answer
    assert len(servers.hyperliquid.seen) == 2


def test_a_wrong_shape_is_not_retried_and_says_where(
    ingestion: Ingestion, servers: Servers
) -> None:
    servers.hyperliquid.fail(wrong_shape({"BTC": "sixty-seven thousand"}))

    with pytest.raises(FetchError, match="unexpected shape at BTC") as raised:
        run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert raised.value.kind == "shape"
    assert len(servers.hyperliquid.seen) == 1


def test_a_stopped_host_is_unreachable(ingestion: Ingestion, servers: Servers) -> None:
    servers.hyperliquid.stop()

    with pytest.raises(FetchError) as raised:
        run(ingestion, ingestion.hyperliquid_client.all_mids())

    assert raised.value.kind == "unreachable"
