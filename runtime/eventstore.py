"""Opening the event store: the library's PostgreSQL persistence, configured from settings."""

from __future__ import annotations

from eventsourcing.utils import get_topic

from aggregates.application import Ledger
from runtime.database import connection_params
from runtime.recorder import OrderedAppendRecorder
from runtime.schema import apply_steps
from runtime.settings import Settings


def ledger_env(url: str, *, pool_size: int = 4, create_tables: bool = False) -> dict[str, str]:
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


def open_ledger(url: str, settings: Settings) -> Ledger:
    return Ledger(
        ledger_env(url, pool_size=settings.database_pool_size),
        command_retries=settings.command_retries,
    )


def migrate(url: str) -> list[int]:
    """Create the library's tables, then apply our schema steps. Safe to run again."""
    Ledger(ledger_env(url, pool_size=1, create_tables=True)).close()
    return apply_steps(url)
