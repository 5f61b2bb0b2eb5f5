"""What the metrics scrape reads for the alert rules (`ops/prometheus/alerts.yml`) that no
read model answers: worker heartbeats, read synchronously at scrape time."""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.postgres import PostgresDatastore


@dataclass(frozen=True)
class HeartbeatAge:
    job: str
    interval_seconds: float
    age_seconds: float
    """By the database's clock, which wrote the beat: no skew between hosts."""
    failing: bool
    """The job's last round ended in an error."""


_HEARTBEATS = """
    SELECT job, interval_seconds,
           greatest(extract(epoch FROM clock_timestamp() - beat_at), 0) AS age_seconds,
           last_error IS NOT NULL AS failing
    FROM worker_heartbeats ORDER BY job
"""


def heartbeat_ages(datastore: PostgresDatastore) -> list[HeartbeatAge]:
    """Every job's (and projection runner's) time since its last beat."""
    with datastore.transaction() as cursor:
        cursor.execute(_HEARTBEATS)
        rows = cursor.fetchall()
    return [
        HeartbeatAge(
            job=row["job"],
            interval_seconds=float(row["interval_seconds"]),
            age_seconds=float(row["age_seconds"]),
            failing=bool(row["failing"]),
        )
        for row in rows
    ]
