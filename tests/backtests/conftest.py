"""Fixtures for the engine's tests: a service token that leases backtests, stored candles,
and a published clone version whose graph reads them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ingest.storage import Batch, CandleRow
from runtime.clock import FixedClock
from runtime.settings import ServiceTokenSpec, Settings
from services.bootstrap import Services
from tests.support.clones import create_clone, save_draft
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

BACKTEST_TOKEN = "backtest-lease-secret-RETRO-CLOCK"
FIVE_MINUTES = timedelta(minutes=5)

# Long while the hourly return's 6-bar mean is above 0.1%, short below -0.1%; half the
# equity at most, a 5% stop. Every channel and asset is in the default catalog.
TREND_GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "ret", "kind": "data_source", "channel": "hyperliquid.BTC.return_1h"},
        {"id": "trend", "kind": "feature_transform", "transform": "sma", "window": 6},
        {"id": "sig", "kind": "signal", "long_above": "0.001", "short_below": "-0.001"},
        {
            "id": "risk",
            "kind": "risk_rule",
            "asset": "BTC",
            "max_position_fraction": "0.5",
            "stop_loss_fraction": "0.05",
        },
        {"id": "act", "kind": "action", "asset": "BTC", "size_fraction": "1"},
    ],
    "edges": [
        {"from": "ret", "to": "trend"},
        {"from": "trend", "to": "sig"},
        {"from": "sig", "to": "risk"},
        {"from": "risk", "to": "act"},
    ],
}
TREND_LOOKBACK = 13 + 5  # return_1h reads 13 closes of 5m bars; the 6-bar SMA 5 more


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, and a worker's token that may lease backtests over HTTP."""
    worker = ServiceTokenSpec(
        name="backtester", scopes=["backtest:lease"], secrets=[SecretStr(BACKTEST_TOKEN)]
    )
    return settings.model_copy(update={"service_tokens": [*settings.service_tokens, worker]})


def candle(asset: str, opened: datetime, o: float, c: float) -> CandleRow:
    def price(x: float) -> Decimal:
        return Decimal(f"{x:.4f}")

    return CandleRow(
        source="hyperliquid",
        instrument=asset,
        interval="5m",
        open_time=opened,
        close_time=opened + FIVE_MINUTES - timedelta(milliseconds=1),
        open=price(o),
        high=price(max(o, c) * 1.001),
        low=price(min(o, c) * 0.999),
        close=price(c),
        volume=Decimal("12.5"),
        trades=40,
    )


def waves(n: int) -> list[float]:
    """Closes that rise and fall in long waves: a trend follower trades them."""
    return [100 * (1 + 0.06 * math.sin(i / 18) + 0.01 * math.sin(i / 3.7)) for i in range(n)]


def store_candles(
    services: Services, now: datetime, closes: list[float], asset: str = "BTC"
) -> None:
    """5-minute candles of `asset` whose last one closed just before `now`, and one more
    still forming (it opened at `now`): the executor must never read that one."""
    first = now - FIVE_MINUTES * len(closes)
    rows = [
        candle(asset, first + FIVE_MINUTES * i, closes[i - 1] if i else closes[0], close)
        for i, close in enumerate(closes)
    ]
    rows.append(candle(asset, now, closes[-1], closes[-1] * 5))
    with services.datastore.transaction(commit=True) as cursor:
        Batch(candles=rows).write(cursor)


@dataclass
class Published:
    owner: SignedIn
    stranger: SignedIn
    clone_id: str
    version_id: str

    def url(self, tail: str = "") -> str:
        return f"/v1/clones/{self.clone_id}/versions/{self.version_id}{tail}"


def publish_graph(
    client: TestClient, services: Services, graph: dict[str, Any], owner: SignedIn | None = None
) -> Published:
    owner = owner or sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, graph)
    published = client.post(f"/v1/clones/{clone_id}/versions", headers=owner.headers)
    assert published.status_code == 201, published.text
    catch_up(services)
    return Published(owner, sign_in(client), clone_id, published.json()["version_id"])


@pytest.fixture
def market(services: Services, clock: FixedClock) -> list[float]:
    closes = waves(400)
    store_candles(services, clock(), closes)
    return closes


@pytest.fixture
def published(client: TestClient, services: Services, market: list[float]) -> Published:
    return publish_graph(client, services, TREND_GRAPH)
