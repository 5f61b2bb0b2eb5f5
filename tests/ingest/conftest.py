from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import HttpUrl

from ingest.ingestion import Ingestion
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from tests.ingest.servers import Servers, start_servers


class Naps:
    """Stands in for asyncio.sleep: records each backoff instead of waiting it out."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


@pytest.fixture
def servers() -> Iterator[Servers]:
    started = start_servers()
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def settings(settings: Settings, servers: Servers) -> Settings:
    """Live mode against the loopback servers, with a short timeout and few attempts; the
    services and the app of these tests see the same settings."""
    return settings.model_copy(
        update={
            "ingest_mode": "live",
            "hyperliquid_url": HttpUrl(servers.hyperliquid.url),
            "polymarket_url": HttpUrl(servers.polymarket_gamma.url),
            "polymarket_clob_url": HttpUrl(servers.polymarket_clob.url),
            "defillama_url": HttpUrl(servers.defillama_coins.url),
            "defillama_api_url": HttpUrl(servers.defillama_api.url),
            # Long enough that a loaded machine never times out a healthy answer (a retry
            # would take the recording's next line); a hanging one still ends in seconds.
            "ingest_timeout": 2.0,
            "ingest_attempts": 3,
            "ingest_backoff": 0.001,
            "ingest_backoff_max": 0.01,
            "ingest_retry_after_max": 30.0,
        }
    )


@pytest.fixture
def naps() -> Naps:
    return Naps()


@pytest.fixture
def ingestion(
    settings: Settings, services: Services, clock: FixedClock, naps: Naps
) -> Iterator[Ingestion]:
    opened = Ingestion(settings, services.datastore, clock=clock, sleep=naps)
    yield opened
    opened.close()
