"""The composition root: one process's event log, projections and outside collaborators,
opened from settings. Everything below this module receives what it needs as arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import get_topic

from ingest.evm import EvmNode
from ingest.prices import PostgresPriceSource
from projections.reads import ProjectionReads
from projections.registry import PROJECTIONS
from projections.state import Projections
from runtime.clock import Clock, system_clock
from runtime.database import connection_params, database_urls, service_url_for
from runtime.recorder import SNAPSHOT_KEY_ENV, LedgerFactory, OrderedAppendRecorder, snapshot_key
from runtime.schema import apply_steps, refuse_code_of, secure_service_role
from runtime.settings import Settings
from services.economy import DepositPolicy
from services.eventlog import EventLog


def event_log_env(
    url: str,
    *,
    pool_size: int = 4,
    create_tables: bool = False,
    snapshot_key: bytes | None = None,
) -> dict[str, str]:
    params = connection_params(url)
    return {
        "PERSISTENCE_MODULE": get_topic(LedgerFactory),
        # Snapshots are sealed with this key (runtime/recorder.py); the database never sees it.
        SNAPSHOT_KEY_ENV: snapshot_key.hex() if snapshot_key else "",
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
        event_log_env(
            url, pool_size=settings.database_pool_size, snapshot_key=snapshot_key(settings)
        ),
        command_retries=settings.command_retries,
    )


def migrate(url: str, service_url: str | None = None) -> list[int]:
    """As the log's owner (`url`): create the library's tables, apply our schema steps, then
    set up the role the service runs as (`service_url`'s; by default `pumpparty_service`,
    see `runtime.database`) with its grants. Safe to run again; returns the steps applied."""
    service_url = service_url or service_url_for(url)
    refuse_code_of(url, service_url)
    EventLog(event_log_env(url, pool_size=1, create_tables=True)).close()
    applied = apply_steps(url)
    secure_service_role(url, service_url)
    return applied


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
        max_pending_per_user=settings.max_pending_purchases,
    )


@dataclass
class Services:
    """What one process has opened: commands and jobs take the parts they need."""

    settings: Settings
    url: str
    """The service role's: what the event log, read models, leases and audit reads use."""
    event_log: EventLog
    projections: Projections
    clock: Clock = system_clock
    evm: EvmNode = field(init=False)
    reads: ProjectionReads = field(init=False)

    def __post_init__(self) -> None:
        self.evm = open_evm_node(self.settings)
        self.reads = ProjectionReads(self.url, max_size=self.settings.database_pool_size)

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
    urls = database_urls(settings)
    if run_migrations and urls.owner is not None:
        migrate(urls.owner, urls.service)
    # Everything from here on runs as the service role: it may append to the log and read
    # it, never change it; it creates and owns the projections' tables.
    url = urls.service
    event_log = open_event_log(url, settings)
    datastore: PostgresDatastore = event_log.recorder.datastore  # type: ignore[attr-defined]
    projections = Projections(datastore, event_log.mapper, list(PROJECTIONS))
    if run_migrations:
        projections.ensure_created()
    return Services(settings, url, event_log, projections, clock)
