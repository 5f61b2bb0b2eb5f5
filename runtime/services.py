"""The composition root: one process's event store and projections, opened from settings."""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.postgres import PostgresDatastore

from aggregates.application import Ledger
from projections.registry import PROJECTIONS
from projections.state import Projections
from runtime.database import database_url
from runtime.eventstore import migrate, open_ledger
from runtime.settings import Settings


@dataclass
class Services:
    settings: Settings
    url: str
    ledger: Ledger
    projections: Projections

    def close(self) -> None:
        self.ledger.close()


def open_services(settings: Settings, *, run_migrations: bool = True) -> Services:
    url = database_url(settings)
    if run_migrations:
        migrate(url)
    ledger = open_ledger(url, settings)
    datastore: PostgresDatastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    projections = Projections(datastore, ledger.mapper, list(PROJECTIONS))
    if run_migrations:
        projections.ensure_created()
    return Services(settings=settings, url=url, ledger=ledger, projections=projections)
