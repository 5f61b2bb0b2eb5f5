"""The composition root: one process's event log, projections and outside collaborators,
opened from settings. Everything below this module receives what it needs as arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import get_topic

from ingest.evm import EvmNode
from ingest.prices import PostgresPriceSource
from projections.reads import ReadModels
from projections.registry import PROJECTIONS
from projections.state import Projections
from runtime.clock import Clock, system_clock
from runtime.database import connection_params, database_url
from runtime.recorder import OrderedAppendRecorder
from runtime.schema import apply_steps
from runtime.settings import Settings
from services.economy import DepositPolicy
from services.eventlog import EventLog


def event_log_env(url: str, *, pool_size: int = 4, create_tables: bool = False) -> dict[str, str]:
    params = connection_params(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params["dbname"],
        "POSTGRES_HOST": params["host"],
        "POSTGRES_PORT": params["port"],
        "POSTGRES_USER": params["user"],
        "POSTGRES_PASSWORD": params["password"],
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        # A dead pooled connection fails the save, which the recorder retries; pinging on
        # every checkout would cost a round trip per command.
        "POSTGRES_PRE_PING": "n",
        "APPLICATION_RECORDER_TOPIC": get_topic(OrderedAppendRecorder),
        "POSTGRES_LOCK_TIMEOUT": "10",
        "CREATE_TABLE": "y" if create_tables else "n",
    }


def open_event_log(url: str, settings: Settings) -> EventLog:
    return EventLog(
        event_log_env(url, pool_size=settings.database_pool_size),
        command_retries=settings.command_retries,
    )


def migrate(url: str) -> list[int]:
    """Create the library's tables, then apply our schema steps. Safe to run again."""
    EventLog(event_log_env(url, pool_size=1, create_tables=True)).close()
    return apply_steps(url)


def open_evm_node(settings: Settings) -> EvmNode:
    return EvmNode(
        str(settings.evm_rpc_url),
        timeout=settings.evm_rpc_timeout,
        attempts=settings.evm_rpc_attempts,
        backoff=settings.evm_rpc_backoff,
    )


def deposit_policy(settings: Settings) -> DepositPolicy:
    return DepositPolicy(
        min_confirmations=settings.min_confirmations,
        pending_timeout=timedelta(seconds=settings.deposit_pending_timeout),
    )


@dataclass
class Services:
    """What one process has opened: commands and jobs take the parts they need."""

    settings: Settings
    url: str
    event_log: EventLog
    projections: Projections
    clock: Clock = system_clock
    evm: EvmNode = field(init=False)
    reads: ReadModels = field(init=False)

    def __post_init__(self) -> None:
        self.evm = open_evm_node(self.settings)
        self.reads = ReadModels(self.url, max_size=self.settings.database_pool_size)

    @property
    def datastore(self) -> PostgresDatastore:
        return self.projections.datastore

    @property
    def prices(self) -> PostgresPriceSource:
        return PostgresPriceSource(self.datastore)

    @property
    def deposit_policy(self) -> DepositPolicy:
        return deposit_policy(self.settings)

    def close(self) -> None:
        self.evm.close()
        self.event_log.close()


def open_services(
    settings: Settings, *, run_migrations: bool = True, clock: Clock = system_clock
) -> Services:
    url = database_url(settings)
    if run_migrations:
        migrate(url)
    event_log = open_event_log(url, settings)
    datastore: PostgresDatastore = event_log.recorder.datastore  # type: ignore[attr-defined]
    projections = Projections(datastore, event_log.mapper, list(PROJECTIONS))
    if run_migrations:
        projections.ensure_created()
    return Services(settings, url, event_log, projections, clock)
