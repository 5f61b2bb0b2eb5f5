"""Ingestion rounds: what they store, that a repeat stores nothing twice, and that a failed
round stores nothing but its error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aggregates.ports import Mark
from ingest.ingestion import Ingestion
from ingest.prices import PostgresPriceSource
from ingest.replay import FIXTURES
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from tests.ingest.servers import (
    Fault,
    Servers,
    hang,
    rate_limited,
    server_error,
    truncated,
    wrong_shape,
)

MARKET_TABLES = [
    "market_marks",
    "market_candles",
    "market_funding",
    "market_contexts",
    "prediction_markets",
    "prediction_prices",
    "protocol_tvl",
]


def counts(services: Services) -> dict[str, int]:
    with services.projections.datastore.transaction() as cursor:
        found = {}
        for table in MARKET_TABLES:
            cursor.execute(f"SELECT count(*) AS n FROM {table}")
            row = cursor.fetchone()
            found[table] = row["n"] if row else 0
    return found


def rows(services: Services, query: str, *params: Any) -> list[dict[str, Any]]:
    with services.projections.datastore.transaction() as cursor:
        cursor.execute(query, params)
        return [dict(row) for row in cursor.fetchall()]


def ingest_everything(ingestion: Ingestion, services: Services) -> None:
    for round_ in (ingestion.hyperliquid, ingestion.polymarket, ingestion.defillama):
        assert round_().error is None


def test_a_hyperliquid_round_stores_the_followed_coins(
    ingestion: Ingestion, services: Services, clock: FixedClock
) -> None:
    result = ingestion.hyperliquid()

    assert result.error is None
    assert counts(services) == {
        "market_marks": 3,
        "market_candles": 3 * 72,
        "market_funding": 3 * 6,
        "market_contexts": 3,
        "prediction_markets": 0,
        "prediction_prices": 0,
        "protocol_tvl": 0,
    }
    assert PostgresPriceSource(services.projections.datastore).latest_mark("BTC") == Mark(
        "BTC", Decimal("67000.0"), clock(), "hyperliquid"
    )
    assert rows(services, "SELECT * FROM market_marks WHERE asset = 'DOGE'") == []


def test_a_polymarket_round_stores_markets_and_outcome_midpoints(
    ingestion: Ingestion, services: Services
) -> None:
    ingestion.polymarket()

    markets = rows(services, "SELECT slug, outcomes FROM prediction_markets ORDER BY slug")
    prices = rows(
        services,
        "SELECT m.slug, p.outcome, p.midpoint, p.buy_price, p.sell_price FROM prediction_prices p"
        " JOIN prediction_markets m USING (source, market_id) WHERE m.slug = 'btc-100k'"
        " ORDER BY p.outcome DESC",
    )
    assert markets == [
        {"slug": "btc-100k", "outcomes": ["Yes", "No"]},
        {"slug": "eth-5k", "outcomes": ["Yes", "No"]},
    ]
    assert prices == [
        {
            "slug": "btc-100k",
            "outcome": "Yes",
            "midpoint": Decimal("0.416"),
            "buy_price": Decimal("0.411"),
            "sell_price": Decimal("0.421"),
        },
        {
            "slug": "btc-100k",
            "outcome": "No",
            "midpoint": Decimal("0.584"),
            "buy_price": Decimal("0.579"),
            "sell_price": Decimal("0.589"),
        },
    ]


def test_a_defillama_round_stores_exact_prices_and_default_tvl(
    ingestion: Ingestion, services: Services
) -> None:
    recorded = json.loads(
        Path(FIXTURES / "defillama/protocol-aave.json").read_text(), parse_float=Decimal
    )

    ingestion.defillama()

    bitcoin = PostgresPriceSource(services.projections.datastore).latest_mark("coingecko:bitcoin")
    assert bitcoin == Mark(
        "coingecko:bitcoin",
        Decimal("66728.08"),
        datetime.fromtimestamp(1754287223, UTC),
        "defillama",
    )
    tvl = rows(services, "SELECT observed_at, tvl_usd FROM protocol_tvl WHERE protocol = 'aave'")
    assert sorted((r["observed_at"].timestamp(), r["tvl_usd"]) for r in tvl) == [
        (point["date"], point["totalLiquidityUSD"]) for point in recorded["tvl"]
    ]


def test_ingesting_the_same_answers_again_writes_nothing(
    ingestion: Ingestion, services: Services, servers: Servers
) -> None:
    ingest_everything(ingestion, services)
    first = counts(services)
    servers.hyperliquid.recordings.rewind()  # every host answers as the first time

    again = [ingestion.hyperliquid(), ingestion.polymarket()]
    again.append(ingestion.defillama())

    assert counts(services) == first
    assert [set(result.written.values()) for result in again] == [{0}, {0}, {0}]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (server_error(match={"type": "fundingHistory", "coin": "SOL"}), "http"),
        (hang(match={"type": "fundingHistory", "coin": "SOL"}), "timeout"),
        (truncated(match={"type": "fundingHistory", "coin": "SOL"}), "decode"),
        (wrong_shape([{"coin": "SOL"}], match={"type": "fundingHistory", "coin": "SOL"}), "shape"),
        (rate_limited("3600", match={"type": "fundingHistory", "coin": "SOL"}), "rate-limited"),
    ],
    ids=["500", "hang", "truncated", "wrong-shape", "429-too-long"],
)
def test_a_round_with_one_bad_answer_writes_nothing_and_records_the_error(
    ingestion: Ingestion, services: Services, servers: Servers, fault: Fault, kind: str
) -> None:
    servers.hyperliquid.fail(fault, times=None)

    result = ingestion.hyperliquid()

    assert result.error is not None and result.error.kind == kind
    assert set(counts(services).values()) == {0}
    errors = rows(services, "SELECT source, request, kind FROM ingest_errors")
    assert errors == [
        {"source": "hyperliquid", "request": "POST /info fundingHistory SOL", "kind": kind}
    ]


def test_a_polymarket_round_whose_clob_fails_writes_no_markets_either(
    ingestion: Ingestion, services: Services, servers: Servers
) -> None:
    servers.polymarket_clob.fail(server_error(path="/prices"), times=None)

    result = ingestion.polymarket()

    assert result.error is not None and result.error.request == "POST /prices"
    assert counts(services)["prediction_markets"] == 0


def test_replay_mode_ingests_the_recordings_with_no_server(
    settings: Settings, services: Services, clock: FixedClock, servers: Servers
) -> None:
    for server in servers:
        server.stop()
    replay = Ingestion(
        settings.model_copy(update={"ingest_mode": "replay"}), services.datastore, clock=clock
    )
    try:
        ingest_everything(replay, services)
        clock.advance(minutes=1)
        replay.hyperliquid()
    finally:
        replay.close()

    marks = rows(
        services, "SELECT price FROM market_marks WHERE asset = 'BTC' ORDER BY observed_at"
    )
    assert [m["price"] for m in marks] == [Decimal("67000.0"), Decimal("67038.3")]
    assert counts(services)["prediction_prices"] == 4
    assert counts(services)["protocol_tvl"] == 30
