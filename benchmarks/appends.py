"""(a) Durable appends through the command path, against raw INSERT+COMMIT of the same bytes.

Two kinds of command, each writing exactly one event:

- *create*: a command that opens a new account (no read; the `Opened` event);
- *increment*: a command that loads an existing account with a short history and
  increments it (one read, the `Incremented` event). Each client cycles over its own
  accounts, so there are no version conflicts and histories stay a few events long.

The baseline is psycopg on its own connection per client: `INSERT` one row of the same
topic and state bytes into a plain table shaped like the events table (uuid, version,
topic, bytea state, bigserial with a unique index), then `COMMIT`. Both run on the same
server in the same run, alternating in short rounds, so both sides of a round see the
same background load; the ratio is the median of the rounds' ratios.

Creates are also measured with no command path at all: each client calls the log's insert
function directly with the same bytes (`INSERT_ALONE`). That is the append's own work in
PostgreSQL (the table lock, the NOTIFY, the hash-chain trigger's row), so it shows how much
of the raw rate the log's design leaves for Python.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from uuid import UUID, uuid4

import psycopg

from aggregates.base import acting
from benchmarks.aggregates import BenchAccount
from benchmarks.harness import CONTEXT, run_clients
from services.bootstrap import Services
from services.eventlog import EventLog, UnitOfWork

RAW_TABLE = "bench_raw_events"
INSERT_ALONE = "the log's insert function alone"
"""The variant of (a) that calls the insert function directly, with no command path."""
RATE = Decimal("0.000123456789")

Operation = tuple[Callable[[], None], Callable[[], None]]


@dataclass(frozen=True)
class AppendResult:
    kind: str
    clients: int
    payload_bytes: int
    raw_rounds: list[float]
    command_rounds: dict[str, list[float]]
    """Per command-path variant ("product", or a prototype's name): commands/s per round."""

    @property
    def raw_rate(self) -> float:
        return statistics.median(self.raw_rounds)

    def rate(self, variant: str) -> float:
        return statistics.median(self.command_rounds[variant])

    def ratios(self, variant: str) -> list[float]:
        """Each round's command rate over the raw rate measured just before it."""
        return [
            c / r for c, r in zip(self.command_rounds[variant], self.raw_rounds, strict=True) if r
        ]

    def ratio(self, variant: str) -> float:
        return statistics.median(self.ratios(variant))


def create_raw_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {RAW_TABLE} ("
            " originator_id uuid NOT NULL, originator_version bigint NOT NULL,"
            " topic text, state bytea, notification_id bigserial,"
            " PRIMARY KEY (originator_id, originator_version))"
        )
        conn.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {RAW_TABLE}_nid ON {RAW_TABLE} (notification_id)"
        )


def raw_insert(url: str, topic: str, state: bytes, *, new_ids: bool) -> Operation:
    """One client of the baseline: INSERT one row of these bytes, then COMMIT, on its own
    connection (a new aggregate each time, or the next version of one)."""
    conn = psycopg.connect(url)
    statement = (
        f"INSERT INTO {RAW_TABLE} (originator_id, originator_version, topic, state)"
        " VALUES (%s, %s, %s, %s)"
    )
    originator_id = uuid4()
    versions = itertools.count(1)

    def operation() -> None:
        if new_ids:
            conn.execute(statement, (uuid4(), 1, topic, state))
        else:
            conn.execute(statement, (originator_id, next(versions), topic, state))
        conn.commit()

    return operation, conn.close


def insert_alone(url: str, statement: bytes, topic: str, state: bytes) -> Operation:
    """One client calling the log's insert function (the recorder's own statement) for one
    new aggregate at a time, on its own autocommit connection, as the recorder does."""
    conn = psycopg.connect(url, autocommit=True)

    def operation() -> None:
        conn.execute(statement, ([uuid4()], [1], [topic], [state]), prepare=True).fetchall()

    return operation, conn.close


def new_account(name: str) -> BenchAccount:
    return BenchAccount(id=uuid4(), name=name, balance_minor=25_000_000, rate=RATE)


def stored_payload(services: Services, position: int) -> tuple[str, bytes]:
    """The topic and state bytes the command path stored at this position."""
    with psycopg.connect(services.url) as conn:
        row = conn.execute(
            f"SELECT topic, state FROM {services.event_log.events_table} WHERE notification_id = %s",
            (position,),
        ).fetchone()
    assert row is not None
    return str(row[0]), bytes(row[1])


def open_accounts(event_log: EventLog, count: int, *, batch: int = 500) -> list[UUID]:
    """Accounts opened ahead of the run, saved many per transaction."""
    ids: list[UUID] = []
    with acting(CONTEXT):
        for start in range(0, count, batch):
            accounts = [new_account(f"a{n}") for n in range(start, min(start + batch, count))]
            event_log.save(*accounts)
            ids.extend(a.id for a in accounts)
    return ids


class AppendBenchmark:
    """Runs every variant of the command path against the baseline, alternating in rounds."""

    def __init__(
        self,
        services: Services,
        ledgers: dict[str, EventLog],
        *,
        seconds: float,
        warmup: float,
        rounds: int,
    ) -> None:
        self.services = services
        self.ledgers = ledgers  # "product" is services.event_log; others are prototypes
        self.seconds = seconds
        self.warmup = warmup
        self.rounds = rounds
        create_raw_table(services.url)

    # The command path -------------------------------------------------------------------

    @staticmethod
    def create_command(event_log: EventLog, _: int) -> Operation:
        def operation() -> None:
            event_log.execute(CONTEXT, lambda unit: unit.add(new_account("bench")))

        return operation, lambda: None

    @staticmethod
    def increment_command(
        event_log: EventLog, accounts: list[list[UUID]], client: int
    ) -> Operation:
        cycle = itertools.cycle(accounts[client])

        def increment(unit: UnitOfWork, account_id: UUID) -> None:
            unit.get(BenchAccount, account_id).increment(by=1)

        def operation() -> None:
            account_id = next(cycle)
            event_log.execute(CONTEXT, lambda unit: increment(unit, account_id))

        return operation, lambda: None

    # The baseline -----------------------------------------------------------------------

    def raw_insert(self, topic: str, state: bytes, *, new_ids: bool) -> Operation:
        return raw_insert(self.services.url, topic, state, new_ids=new_ids)

    # Runs ---------------------------------------------------------------------------------

    def measure(
        self,
        kind: str,
        clients: int,
        commands: Mapping[str, Callable[[int], Operation]],
        raw: Callable[[int], Operation],
        payload: bytes,
    ) -> AppendResult:
        raw_rounds: list[float] = []
        command_rounds: dict[str, list[float]] = {variant: [] for variant in commands}
        for _ in range(self.rounds):
            raw_rounds.append(self._rate(clients, raw))
            for variant, command in commands.items():
                command_rounds[variant].append(self._rate(clients, command))
        return AppendResult(kind, clients, len(payload), raw_rounds, command_rounds)

    def _rate(self, clients: int, operation: Callable[[int], Operation]) -> float:
        return run_clients(clients, operation, seconds=self.seconds, warmup=self.warmup).rate

    def run_create(self, clients: int) -> AppendResult:
        written = self.services.event_log.execute(
            CONTEXT, lambda unit: unit.add(new_account("bench"))
        )
        topic, state = stored_payload(self.services, written.position)
        commands: dict[str, Callable[[int], Operation]] = {
            variant: partial(self.create_command, event_log)
            for variant, event_log in self.ledgers.items()
        }
        statement = self.services.event_log.recorder.insert_function_call  # type: ignore[attr-defined]
        commands[INSERT_ALONE] = lambda _: insert_alone(self.services.url, statement, topic, state)
        return self.measure(
            "create",
            clients,
            commands,
            lambda _: self.raw_insert(topic, state, new_ids=True),
            state,
        )

    def run_increment(self, clients: int, *, accounts: int) -> AppendResult:
        event_log = self.services.event_log
        ids = open_accounts(event_log, accounts)
        mine = [ids[i::clients] for i in range(clients)]
        written = event_log.execute(
            CONTEXT, lambda unit: unit.get(BenchAccount, ids[0]).increment(by=1)
        )
        topic, state = stored_payload(self.services, written.position)
        commands = {
            variant: partial(self.increment_command, event_log, mine)
            for variant, event_log in self.ledgers.items()
        }
        return self.measure(
            "increment",
            clients,
            commands,
            lambda _: self.raw_insert(topic, state, new_ids=False),
            state,
        )
