"""The worker's ingestion jobs: registered per mode, and running for real in replay mode."""

from __future__ import annotations

from runtime.settings import Settings
from scripts.worker import Worker
from services.bootstrap import Services
from tests.integration.test_worker import wait_until


def test_the_worker_schedules_ingestion_per_source_channels_and_retention(
    services: Services, settings: Settings
) -> None:
    worker = Worker(services)

    jobs = {name: job.seconds for name, job in worker.jobs.items() if name.startswith("ingest_")}

    assert jobs == {
        "ingest_hyperliquid": settings.ingest_hyperliquid_interval,
        "ingest_polymarket": settings.ingest_polymarket_interval,
        "ingest_defillama": settings.ingest_defillama_interval,
        "ingest_channels": settings.ingest_channels_interval,
        "ingest_retention": settings.ingest_retention_interval,
    }


def test_with_ingestion_off_the_worker_schedules_none(
    services: Services, settings: Settings
) -> None:
    services.settings = settings.model_copy(update={"ingest_mode": "off"})

    worker = Worker(services)

    assert not [name for name in worker.jobs if name.startswith("ingest_")]


def test_a_replaying_worker_ingests_every_source_and_computes_the_channels(
    services: Services, settings: Settings
) -> None:
    # Channels first run beside the sources' first rounds, so they come round again soon.
    replay = {"ingest_mode": "replay", "ingest_channels_interval": 0.2}
    services.settings = settings.model_copy(update=replay)
    worker = Worker(services, idle_wait=0.1)

    worker.start()
    try:
        wait_until(lambda: len(healthy(services)) == 3 + 21)
    finally:
        worker.stop()

    assert {name for kind, name in healthy(services) if kind == "source"} == {
        "hyperliquid",
        "polymarket",
        "defillama",
    }


def healthy(services: Services) -> set[tuple[str, str]]:
    with services.projections.datastore.transaction() as cursor:
        cursor.execute(
            "SELECT kind, name FROM ingest_health WHERE consecutive_failures = 0"
            " AND last_success_at IS NOT NULL"
        )
        return {(row["kind"], row["name"]) for row in cursor.fetchall()}
