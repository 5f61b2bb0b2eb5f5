"""Ingestion health: one row per source and per channel, and the table of recorded errors.

A round writes its success in the same transaction as its data, or its failure (with the
error) when it wrote nothing. Status is read against a clock:
- `failing`: the latest attempt failed;
- `stale`: nothing has succeeded for STALE_AFTER_INTERVALS cadences (or ever);
- `ok`: otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

from ingest.client import FetchError
from runtime.reads import Reads, columns

STALE_AFTER_INTERVALS = 3

Kind = Literal["source", "channel"]
Status = Literal["ok", "stale", "failing"]


@dataclass(frozen=True)
class Watched:
    """Something ingestion is expected to keep fresh, and how often it runs."""

    kind: Kind
    name: str
    cadence_seconds: float


@dataclass(frozen=True)
class Health:
    kind: Kind
    name: str
    cadence_seconds: float
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    staleness_seconds: float | None
    stale_after_seconds: float
    status: Status


def record_success(cursor: Cursor[DictRow], watched: Watched, at: datetime) -> None:
    cursor.execute(
        "INSERT INTO ingest_health"
        " (kind, name, cadence_seconds, last_attempt_at, last_success_at, consecutive_failures)"
        " VALUES (%s, %s, %s, %s, %s, 0)"
        " ON CONFLICT (kind, name) DO UPDATE SET cadence_seconds = EXCLUDED.cadence_seconds,"
        " last_attempt_at = EXCLUDED.last_attempt_at,"
        " last_success_at = EXCLUDED.last_success_at, consecutive_failures = 0",
        (watched.kind, watched.name, watched.cadence_seconds, at, at),
    )


def record_failure(cursor: Cursor[DictRow], watched: Watched, at: datetime, message: str) -> None:
    cursor.execute(
        "INSERT INTO ingest_health (kind, name, cadence_seconds, last_attempt_at,"
        " last_error_at, last_error, consecutive_failures) VALUES (%s, %s, %s, %s, %s, %s, 1)"
        " ON CONFLICT (kind, name) DO UPDATE SET cadence_seconds = EXCLUDED.cadence_seconds,"
        " last_attempt_at = EXCLUDED.last_attempt_at, last_error_at = EXCLUDED.last_error_at,"
        " last_error = EXCLUDED.last_error,"
        " consecutive_failures = ingest_health.consecutive_failures + 1",
        (watched.kind, watched.name, watched.cadence_seconds, at, at, message),
    )


def record_error(cursor: Cursor[DictRow], source: str, error: FetchError, at: datetime) -> None:
    cursor.execute(
        "INSERT INTO ingest_errors (source, request, kind, message, excerpt, occurred_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (source, error.request, error.kind, error.message, error.excerpt, at),
    )


@dataclass(frozen=True, slots=True)
class HealthRow:
    """A stored `ingest_health` row."""

    kind: Kind
    name: str
    cadence_seconds: float
    last_attempt_at: datetime
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    consecutive_failures: int


_READ_HEALTH = SQL("SELECT {} FROM ingest_health").format(columns(HealthRow))


def read_health(cursor: Cursor[DictRow], watched: list[Watched], now: datetime) -> list[Health]:
    """Every watched source and channel, plus any other with a stored row, by kind and name."""
    cursor.execute(_READ_HEALTH)
    return report(watched, [HealthRow(**row) for row in cursor.fetchall()], now)


async def health_report(reads: Reads, watched: list[Watched], now: datetime) -> list[Health]:
    """`read_health` for HTTP reads, on the async read pool."""
    return report(watched, await reads.all(HealthRow, _READ_HEALTH, ()), now)


def report(watched: list[Watched], stored: Iterable[HealthRow], now: datetime) -> list[Health]:
    rows = {(row.kind, row.name): row for row in stored}
    cadences = {(w.kind, w.name): w.cadence_seconds for w in watched}
    for key, row in rows.items():
        cadences.setdefault(key, row.cadence_seconds)
    return [
        assess(kind, name, cadence, rows.get((kind, name)), now)
        for (kind, name), cadence in sorted(cadences.items())
    ]


def assess(kind: Kind, name: str, cadence: float, row: HealthRow | None, now: datetime) -> Health:
    stale_after = STALE_AFTER_INTERVALS * cadence
    success = row.last_success_at if row else None
    staleness = None if success is None else max((now - success).total_seconds(), 0.0)
    failures = row.consecutive_failures if row else 0
    status: Status
    if failures > 0:
        status = "failing"
    elif staleness is None or staleness > stale_after:
        status = "stale"
    else:
        status = "ok"
    return Health(
        kind=kind,
        name=name,
        cadence_seconds=cadence,
        last_attempt_at=row.last_attempt_at if row else None,
        last_success_at=success,
        last_error_at=row.last_error_at if row else None,
        last_error=row.last_error if row else None,
        consecutive_failures=failures,
        staleness_seconds=staleness,
        stale_after_seconds=stale_after,
        status=status,
    )
