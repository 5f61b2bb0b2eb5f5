"""Feature channels from a known series served by the loopback hosts, checked against
values worked out by hand; and the channel routes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from ingest.ingestion import Ingestion
from ingest.replay import FIXTURES
from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.ingest.servers import Servers, answer
from tests.support.http import assert_problem

FIRST_OPEN = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)
# Thirteen 5m closes over the hour to 11:05: flat at 100, then up 10% and down 10%.
CLOSES = ["100"] * 10 + ["110", "99", "99"]
DAY = 86_400
FIRST_DAY = int(datetime(2026, 11, 17, tzinfo=UTC).timestamp())
# Ethereum + Arbitrum: 100 for six days, then 110, then 121; borrowed is not TVL.
ETHEREUM = [60, 60, 60, 60, 60, 60, 66, 72.6]
ARBITRUM = [40, 40, 40, 40, 40, 40, 44, 48.4]
MARKETS = json.loads((FIXTURES / "polymarket/gamma-markets.json").read_text())
YES, NO = json.loads(MARKETS[0]["clobTokenIds"])


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def candle(index: int, close: str) -> dict[str, Any]:
    opened = FIRST_OPEN + index * FIVE_MINUTES
    return {
        "t": millis(opened),
        "T": millis(opened + FIVE_MINUTES) - 1,
        "s": "BTC",
        "i": "5m",
        "o": close,
        "c": close,
        "h": close,
        "l": close,
        "v": "1.0",
        "n": 1,
    }


def tvl(values: list[float]) -> dict[str, Any]:
    return {
        "tvl": [
            {"date": FIRST_DAY + day * DAY, "totalLiquidityUSD": value}
            for day, value in enumerate(values)
        ]
    }


def serve_known_series(servers: Servers) -> None:
    servers.hyperliquid.fail(
        answer([candle(i, c) for i, c in enumerate(CLOSES)], match={"type": "candleSnapshot"}),
        times=None,
    )
    funding = [
        {"coin": "BTC", "fundingRate": "0.0000125", "premium": "0.0003", "time": millis(FIRST_OPEN)}
    ]
    servers.hyperliquid.fail(answer(funding, match={"type": "fundingHistory"}), times=None)
    protocol = {
        "name": "AAVE",
        "chainTvls": {
            "Ethereum": tvl(ETHEREUM),
            "Arbitrum": tvl(ARBITRUM),
            "Ethereum-borrowed": tvl([900] * 8),
            "borrowed": tvl([900] * 8),
        },
    }
    servers.defillama_api.fail(answer(protocol, path="/protocol/aave"), times=None)
    servers.polymarket_clob.fail(answer({YES: "0.42", NO: "0.58"}, path="/midpoints"), times=None)


def values(services: Services) -> dict[str, tuple[datetime, Decimal]]:
    with services.projections.datastore.transaction() as cursor:
        cursor.execute("SELECT channel, observed_at, value FROM feature_values")
        return {row["channel"]: (row["observed_at"], row["value"]) for row in cursor.fetchall()}


def ingest_known_series(ingestion: Ingestion, services: Services, servers: Servers) -> int:
    serve_known_series(servers)
    for round_ in (ingestion.hyperliquid, ingestion.polymarket, ingestion.defillama):
        assert round_().error is None
    return ingestion.channels()


def test_channel_values_match_the_hand_computed_ones(
    ingestion: Ingestion, services: Services, servers: Servers
) -> None:
    ingest_known_series(ingestion, services, servers)

    found = values(services)

    last_close = FIRST_OPEN + 13 * FIVE_MINUTES - timedelta(milliseconds=1)
    # 99 / 100 - 1
    assert found["hyperliquid.BTC.return_1h"] == (last_close, Decimal("-0.01"))
    # returns 0 (x9), +0.1, -0.1, 0: sqrt(0.01 + 0.01) = sqrt(0.02)
    assert found["hyperliquid.BTC.volatility_1h"] == (
        last_close,
        Decimal("0.1414213562373095048801688724"),
    )
    assert found["hyperliquid.BTC.funding_rate"] == (FIRST_OPEN, Decimal("0.0000125"))
    last_day = datetime.fromtimestamp(FIRST_DAY + 7 * DAY, UTC)
    # 121 / 110 - 1 and 121 / 100 - 1
    assert found["defillama.aave.tvl_change_1d"] == (last_day, Decimal("0.1"))
    assert found["defillama.aave.tvl_change_7d"] == (last_day, Decimal("0.21"))
    assert found["polymarket.btc-100k.probability"][1] == Decimal("0.42")


def test_a_window_longer_than_the_stored_candles_has_no_value(
    ingestion: Ingestion, services: Services, servers: Servers
) -> None:
    ingest_known_series(ingestion, services, servers)

    assert "hyperliquid.BTC.return_4h" not in values(services)


def test_computing_again_over_the_same_data_writes_nothing(
    ingestion: Ingestion, services: Services, servers: Servers, clock: FixedClock
) -> None:
    first = ingest_known_series(ingestion, services, servers)
    clock.advance(minutes=1)

    again = ingestion.channels()

    # three coins' 1h returns, 1h volatilities and funding, two protocols' TVL changes, one
    # market's probability (the other has no midpoint in the known series)
    assert (first, again) == (3 * 3 + 2 * 2 + 1, 0)


# --- routes -----------------------------------------------------------------------------


def test_channels_are_listed_with_their_schema_and_latest_value(
    client: TestClient, ingestion: Ingestion, services: Services, servers: Servers
) -> None:
    ingest_known_series(ingestion, services, servers)

    listed = {c["name"]: c for c in client.get("/v1/ingest/channels").json()}

    assert len(listed) == 21
    volatility = listed["hyperliquid.BTC.volatility_1h"]
    assert volatility["source"] == "hyperliquid" and volatility["instrument"] == "BTC"
    assert (volatility["feature"], volatility["unit"], volatility["window_seconds"]) == (
        "volatility_1h",
        "ratio",
        3600.0,
    )
    assert volatility["value_schema"]["properties"]["value"]["format"] == "decimal"
    assert volatility["latest"]["value"] == "0.1414213562373095048801688724"
    assert listed["hyperliquid.BTC.return_4h"]["latest"] is None


def test_channel_values_page_newest_first(
    client: TestClient,
    ingestion: Ingestion,
    services: Services,
    servers: Servers,
    clock: FixedClock,
) -> None:
    ingest_known_series(ingestion, services, servers)
    name = "polymarket.btc-100k.probability"
    for _ in range(2):  # two more observations, a minute apart
        clock.advance(minutes=1)
        ingestion.polymarket()
        ingestion.channels()

    first = client.get(f"/v1/ingest/channels/{name}/values", params={"limit": 2}).json()
    rest = client.get(
        f"/v1/ingest/channels/{name}/values", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()

    times = [item["time"] for item in first["items"] + rest["items"]]
    assert times == sorted(times, reverse=True) and len(times) == 3
    assert rest["next_cursor"] is None
    assert first["items"][0]["value"] == "0.42"


def test_an_unknown_channel_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/v1/ingest/channels/hyperliquid.NOPE.return_1h/values")

    assert_problem(response, 404, "channel-not-found")


def test_a_forged_cursor_is_a_422_problem(client: TestClient) -> None:
    response = client.get(
        "/v1/ingest/channels/hyperliquid.BTC.return_1h/values", params={"cursor": "eyJhIjoxfQ"}
    )

    assert_problem(response, 422, "invalid-cursor")
