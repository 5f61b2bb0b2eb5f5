from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aggregates.base import CommandContext
from api.app import create_app
from runtime.clock import FixedClock
from runtime.settings import ServiceTokenSpec, Settings
from services.bootstrap import Services, open_services
from tests.support.database import fresh_database, prepare_template, server_url


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = server_url(Path(tmp_path_factory.mktemp("pg")))
    prepare_template(url)
    return url


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A fresh database; the URL is the log's owner's. `services` (and every process given
    this URL) runs as the service role derived from it: `services.url`."""
    with fresh_database(postgres_url) as url:
        yield url


AUDITOR_TOKEN = "auditor-secret-RETRO-CLOCK"
ENGINE_TOKEN = "engine-secret-RETRO-CLOCK"
PROP_READER_TOKEN = "prop-reader-secret-RETRO-CLOCK"
ARENA_SYNC_TOKEN = "arena-sync-secret-RETRO-CLOCK"
CUSTODY_TOKEN = "custody-secret-RETRO-CLOCK"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        read_wait_timeout=0.5,
        service_tokens=[
            ServiceTokenSpec(name="auditor", scopes=["audit:read"], secrets=[AUDITOR_TOKEN]),
            ServiceTokenSpec(
                name="engine", scopes=["prop:write"], secrets=[ENGINE_TOKEN, "engine-old"]
            ),
            ServiceTokenSpec(name="prop-reader", scopes=["prop:read"], secrets=[PROP_READER_TOKEN]),
            ServiceTokenSpec(name="arena-sync", scopes=["arena:sync"], secrets=[ARENA_SYNC_TOKEN]),
            ServiceTokenSpec(name="custody", scopes=["payout:execute"], secrets=[CUSTODY_TOKEN]),
        ],
    )


@pytest.fixture
def services(settings: Settings, clock: FixedClock) -> Iterator[Services]:
    """The process's services; its jobs (a live worker's too) run on the test's clock."""
    opened = open_services(settings, run_migrations=False, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def context() -> CommandContext:
    return CommandContext(
        actor="user:tester",
        occurred_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        correlation_id="req-RETRO-CLOCK",
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))


@pytest.fixture
def client(services: Services, clock: FixedClock) -> Iterator[TestClient]:
    with TestClient(create_app(services=services, clock=clock)) as test_client:
        yield test_client
