"""Prometheus: request latency, projection lag and the log's head, per app instance."""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import health_reader
from api.routing import APIRouter
from ingest.metrics import IngestionCollector
from projections import arena, reconciliation
from services.backups import backup_checks
from services.bootstrap import Services
from services.dead_letters import dead_letter_counts
from services.monitoring import heartbeat_ages


class LedgerCollector(Collector):
    """Read at scrape time, so every process reports the shared database's truth."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        statuses = self.services.projections.statuses()
        lag = GaugeMetricFamily(
            "pumpparty_projection_lag_events",
            "Log head minus projection position",
            labels=["projection"],
        )
        stalled = GaugeMetricFamily(
            "pumpparty_projection_stalled",
            "1 while a projection is stopped on a failed event",
            labels=["projection"],
        )
        for status in statuses:
            lag.add_metric([status.name], status.lag)
            stalled.add_metric([status.name], 1 if status.stalled_position is not None else 0)
        appended = CounterMetricFamily(
            "pumpparty_events_appended", "Log positions handed out (the head of the log)"
        )
        appended.add_metric([], statuses[0].head if statuses else 0)
        breaches = GaugeMetricFamily(
            "pumpparty_reconciliation_breaches",
            "Breaches found by the latest ledger reconciliation",
        )
        latest = reconciliation.latest(self.services.projections.datastore)
        breaches.add_metric([], len(latest.breaches) if latest else 0)
        by_check = GaugeMetricFamily(
            "pumpparty_reconciliation_check_breaches",
            "Breaches found by each check of the latest ledger reconciliation",
            labels=["check"],
        )
        for check in latest.checks if latest else []:
            by_check.add_metric([check.name], check.breach_count)
        yield from (lag, stalled, appended, breaches, by_check)
        yield from self.arena()

    def arena(self) -> Iterator[Metric]:
        now = arena.gauges(self.services.projections.datastore)
        capacity = (
            now.capacity if now.capacity is not None else self.services.settings.arena_capacity
        )
        for name, help_text, value in (
            ("queue_depth", "Clones queued for the arena, eligible or not", now.queue_depth),
            ("queue_eligible", "Queued clones an admission round would admit", now.eligible),
            ("members", "Arena members (admitted or suspended)", now.members),
            ("capacity", "Arena seats (an admin's capacity, or the setting)", capacity),
        ):
            gauge = GaugeMetricFamily(f"pumpparty_arena_{name}", help_text)
            gauge.add_metric([], value)
            yield gauge


class OperationsCollector(Collector):
    """Worker heartbeats, dead letters and backup checks, for the alert rules in
    ops/prometheus/ (`pumpparty_dead_letters{kind}`: `DeadLettersPresent`)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "pumpparty_worker_heartbeat_age_seconds",
            "Seconds since a job's (or projection runner's) last heartbeat",
            labels=["job"],
        )
        interval = GaugeMetricFamily(
            "pumpparty_worker_heartbeat_interval_seconds",
            "Seconds a job (or projection runner) means to beat within",
            labels=["job"],
        )
        failing = GaugeMetricFamily(
            "pumpparty_worker_job_failing", "1 while a job's last round failed", labels=["job"]
        )
        for beat in heartbeat_ages(self.services.datastore):
            age.add_metric([beat.job], beat.age_seconds)
            interval.add_metric([beat.job], beat.interval_seconds)
            failing.add_metric([beat.job], 1 if beat.failing else 0)
        yield from (age, interval, failing)
        letters = GaugeMetricFamily(
            "pumpparty_dead_letters",
            "Work items that ran out of retries and wait for an operator",
            labels=["kind"],
        )
        for kind, count in sorted(dead_letter_counts(self.services).items()):
            letters.add_metric([kind], count)
        yield letters
        yield from self.backups()

    def backups(self) -> Iterator[Metric]:
        checks = backup_checks(self.services.event_log)
        failures = GaugeMetricFamily(
            "pumpparty_backup_consecutive_failures", "Backup checks failed since the last verified"
        )
        failures.add_metric([], checks.consecutive_failures if checks else 0)
        yield failures
        if checks is None:
            return
        if checks.last_verified_at is not None:
            verified = GaugeMetricFamily(
                "pumpparty_backup_last_verified_timestamp_seconds",
                "Unix time of the last backup that restored and verified",
            )
            verified.add_metric([], checks.last_verified_at.timestamp())
            yield verified
        ok = GaugeMetricFamily(
            "pumpparty_backup_last_check_ok", "1 if the latest backup check verified, else 0"
        )
        ok.add_metric([], 1 if checks.last_ok else 0)
        yield ok


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "pumpparty_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def watch(self, services: Services) -> None:
        self.registry.register(LedgerCollector(services))
        self.registry.register(IngestionCollector(services.settings, services.datastore))
        self.registry.register(OperationsCollector(services))


class MetricsMiddleware:
    """Times every request, labelled by route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    include_in_schema=False,
    operation_id="metrics",
    dependencies=[Depends(health_reader)],  # admins and the `health:read` scope (a scraper)
)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
