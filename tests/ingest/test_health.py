"""Ingestion health at /v1/health/ingestion and in /metrics, driven by a fixed clock."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from ingest.ingestion import Ingestion
from ingest.metrics import IngestionCollector
from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.ingest.servers import Servers
from tests.support.monitor import monitor_headers


def source(client: TestClient, name: str) -> dict[str, Any]:
    body = client.get("/v1/health/ingestion", headers=monitor_headers(client)).json()
    return next(s for s in body["sources"] if s["name"] == name)


def channel(client: TestClient, name: str) -> dict[str, Any]:
    body = client.get("/v1/health/ingestion", headers=monitor_headers(client)).json()
    return next(c for c in body["channels"] if c["name"] == name)


def test_health_goes_ok_stale_failing_ok_as_the_host_stops_and_restarts(
    client: TestClient,
    ingestion: Ingestion,
    services: Services,
    servers: Servers,
    clock: FixedClock,
) -> None:
    cadence = ingestion.cadence("hyperliquid")
    statuses = []

    ingestion.hyperliquid()
    statuses.append(source(client, "hyperliquid")["status"])
    servers.hyperliquid.stop()
    clock.advance(seconds=3 * cadence + 1)
    statuses.append(source(client, "hyperliquid")["status"])
    ingestion.hyperliquid()
    statuses.append(source(client, "hyperliquid")["status"])
    servers.hyperliquid.start()
    ingestion.hyperliquid()
    statuses.append(source(client, "hyperliquid")["status"])

    assert statuses == ["ok", "stale", "failing", "ok"]


def test_a_failing_source_shows_its_error_and_staleness(
    client: TestClient,
    ingestion: Ingestion,
    services: Services,
    servers: Servers,
    clock: FixedClock,
) -> None:
    ingestion.hyperliquid()
    succeeded_at = clock()
    servers.hyperliquid.stop()
    clock.advance(seconds=90)

    ingestion.hyperliquid()

    health = source(client, "hyperliquid")
    assert health["status"] == "failing"
    assert health["last_error"].startswith("unreachable: POST /info")
    assert health["last_success_at"] == succeeded_at.isoformat().replace("+00:00", "Z")
    assert health["staleness_seconds"] == 90.0
    assert health["stale_after_seconds"] == 3 * ingestion.cadence("hyperliquid")
    assert health["consecutive_failures"] == 1


def test_sources_and_channels_never_run_are_stale(client: TestClient) -> None:
    body = client.get("/v1/health/ingestion", headers=monitor_headers(client)).json()

    assert body["mode"] == "live"
    assert {s["name"]: s["status"] for s in body["sources"]} == {
        "defillama": "stale",
        "hyperliquid": "stale",
        "polymarket": "stale",
    }
    assert {c["status"] for c in body["channels"]} == {"stale"}
    assert len(body["channels"]) == 21


def test_a_channel_without_enough_data_is_failing_with_the_reason(
    client: TestClient, ingestion: Ingestion, services: Services
) -> None:
    ingestion.channels()

    health = channel(client, "hyperliquid.BTC.return_1h")

    assert health["status"] == "failing"
    assert health["last_error"] == "no closed 5m candle of BTC yet"


def test_metrics_carry_a_status_gauge_per_source_and_channel(
    client: TestClient, ingestion: Ingestion, services: Services
) -> None:
    ingestion.hyperliquid()

    text = client.get("/metrics", headers=monitor_headers(client)).text

    assert 'pumpparty_ingest_status{kind="source",name="hyperliquid",status="ok"}' in text
    assert (
        'pumpparty_ingest_status{kind="channel",name="hyperliquid.BTC.return_1h",status="stale"}'
        in text
    )


def test_the_collector_reports_staleness_against_its_clock(
    ingestion: Ingestion, services: Services, servers: Servers, clock: FixedClock
) -> None:
    ingestion.hyperliquid()
    servers.hyperliquid.stop()
    clock.advance(seconds=30)
    ingestion.hyperliquid()

    metrics = {
        (metric.name, sample.labels.get("name"), sample.labels.get("status")): sample.value
        for metric in IngestionCollector(services.settings, services.datastore, clock).collect()
        for sample in metric.samples
    }

    assert metrics[("pumpparty_ingest_staleness_seconds", "hyperliquid", None)] == 30.0
    assert metrics[("pumpparty_ingest_status", "hyperliquid", "failing")] == 1
    assert metrics[("pumpparty_ingest_status", "hyperliquid", "ok")] == 0
    assert metrics[("pumpparty_ingest_consecutive_failures", "hyperliquid", None)] == 1
