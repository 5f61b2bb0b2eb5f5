"""Prometheus gauges for ingestion health, read from the database at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

from eventsourcing.postgres import PostgresDatastore
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest.health import Status, read_health
from ingest.ingestion import watched
from runtime.clock import Clock, system_clock
from runtime.settings import Settings

LABELS = ["kind", "name"]


class IngestionCollector(Collector):
    def __init__(
        self, settings: Settings, datastore: PostgresDatastore, clock: Clock = system_clock
    ) -> None:
        self.settings = settings
        self.datastore = datastore
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        with self.datastore.transaction() as cursor:
            report = read_health(cursor, watched(self.settings), self.clock())
        status = GaugeMetricFamily(
            "pumpparty_ingest_status",
            "1 for the current status (ok, stale, failing) of a source or channel",
            labels=[*LABELS, "status"],
        )
        staleness = GaugeMetricFamily(
            "pumpparty_ingest_staleness_seconds",
            "Seconds since the last success of a source or channel",
            labels=LABELS,
        )
        last_success = GaugeMetricFamily(
            "pumpparty_ingest_last_success_timestamp_seconds",
            "Unix time of the last success",
            labels=LABELS,
        )
        last_error = GaugeMetricFamily(
            "pumpparty_ingest_last_error_timestamp_seconds",
            "Unix time of the last recorded error",
            labels=LABELS,
        )
        failures = GaugeMetricFamily(
            "pumpparty_ingest_consecutive_failures",
            "Failed attempts since the last success",
            labels=LABELS,
        )
        for health in report:
            labels = [health.kind, health.name]
            for name in get_args(Status):
                status.add_metric([*labels, name], 1 if health.status == name else 0)
            failures.add_metric(labels, health.consecutive_failures)
            if health.staleness_seconds is not None:
                staleness.add_metric(labels, health.staleness_seconds)
            if health.last_success_at is not None:
                last_success.add_metric(labels, health.last_success_at.timestamp())
            if health.last_error_at is not None:
                last_error.add_metric(labels, health.last_error_at.timestamp())
        yield from (status, staleness, last_success, last_error, failures)
