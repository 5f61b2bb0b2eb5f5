"""The worker: a thread per projection runner, and scheduled jobs, each with a heartbeat.

`pumpparty worker` runs one on its own; `pumpparty serve` runs one beside the API. Every
job and every runner loop upserts a row in `worker_heartbeats` (job, process, interval,
time, last error), which `/v1/health/workers` turns into alive or late.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from tenacity import Retrying, stop_after_attempt, stop_when_event_set, wait_exponential

from projections.runner import ProjectionRunner
from services.bootstrap import Services
from services.schedule import scheduled_jobs

log = logging.getLogger(__name__)

Job = Callable[[], object]
"""A scheduled job: one round of its work, with its collaborators built in."""

JOB_ATTEMPTS = 3
"""A failing job is tried this many times per round, with exponential backoff between."""


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    func: Job
    seconds: float


class Heartbeats:
    """Upserts one row per job: the last beat, from which process, and the last error."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.process = process_name()

    def beat(self, job: str, interval: float, error: str | None = None) -> None:
        with self.services.projections.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "INSERT INTO worker_heartbeats"
                " (job, process, interval_seconds, beat_at, last_error)"
                " VALUES (%s, %s, %s, clock_timestamp(), %s)"
                " ON CONFLICT (job) DO UPDATE SET process = excluded.process,"
                " interval_seconds = excluded.interval_seconds, beat_at = excluded.beat_at,"
                " last_error = excluded.last_error",
                (job, self.process, interval, error),
            )

    def try_beat(self, job: str, interval: float, error: str | None = None) -> None:
        """A beat that never takes its job down with it (the database may be away)."""
        try:
            self.beat(job, interval, error)
        except Exception as failure:
            log.warning("heartbeat for %s failed: %s", job, failure)


class BeatingRunner(ProjectionRunner):
    """A projection runner that beats (at most once per interval) as its loop turns."""

    def __init__(
        self,
        services: Services,
        name: str,
        heartbeats: Heartbeats,
        *,
        batch_size: int,
        interval: float,
    ) -> None:
        super().__init__(services.projections, name, services.url, batch_size=batch_size)
        self.job = f"projection:{name}"
        self.heartbeats = heartbeats
        self.interval = interval
        self._last_beat = float("-inf")

    def step(self) -> int:
        applied = super().step()
        now = time.monotonic()
        if now - self._last_beat >= self.interval:
            self.heartbeats.try_beat(self.job, self.interval)
            self._last_beat = now
        return applied


class Worker:
    """Projection runners plus an APScheduler of jobs, started and stopped together."""

    def __init__(
        self, services: Services, *, batch_size: int = 500, idle_wait: float = 1.0
    ) -> None:
        self.services = services
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.heartbeats = Heartbeats(services)
        self.jobs: dict[str, ScheduledJob] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._scheduler: BackgroundScheduler | None = None
        self._lock = threading.Lock()
        for name, (job, seconds) in scheduled_jobs(services).items():
            self.register_job(name, job, seconds)

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    def register_job(self, name: str, func: Job, seconds: float) -> None:
        """Run `func()` every `seconds` (first run at start), with heartbeats."""
        job = ScheduledJob(name, func, seconds)
        self.jobs[name] = job
        if self._scheduler is not None:
            self._schedule(self._scheduler, job)

    def start(self) -> None:
        with self._lock:
            if self._scheduler is not None:
                return
            self._stopping.clear()
            for name in sorted(self.services.projections.classes):
                runner = BeatingRunner(
                    self.services,
                    name,
                    self.heartbeats,
                    batch_size=self.batch_size,
                    interval=self.services.settings.heartbeat_interval,
                )
                thread = threading.Thread(
                    target=self._run_projection, args=(runner,), name=runner.job, daemon=True
                )
                thread.start()
                self._threads.append(thread)
            scheduler = BackgroundScheduler(
                timezone=UTC,
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            )
            for job in self.jobs.values():
                self._schedule(scheduler, job)
            scheduler.start()
            self._scheduler = scheduler
            log.info("worker started: %d projections, jobs %s", len(self._threads), list(self.jobs))

    def stop(self) -> None:
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
            if scheduler is None:
                return
            self._stopping.set()
            scheduler.shutdown(wait=True)
            for thread in self._threads:
                thread.join()
            self._threads.clear()
            log.info("worker stopped")

    def _schedule(self, scheduler: BackgroundScheduler, job: ScheduledJob) -> None:
        scheduler.add_job(
            self._run_job,
            "interval",
            args=(job,),
            seconds=job.seconds,
            id=job.name,
            name=job.name,
            replace_existing=True,
            next_run_time=datetime.now(UTC),
        )

    def _run_job(self, job: ScheduledJob) -> None:
        """One round of a job: retried with backoff, then its outcome is the heartbeat."""
        retrying = Retrying(
            stop=stop_after_attempt(JOB_ATTEMPTS) | stop_when_event_set(self._stopping),
            wait=wait_exponential(multiplier=min(job.seconds / 10, 1.0), max=job.seconds),
            sleep=self._pause,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    job.func()
        except Exception as error:
            log.exception("job %s failed", job.name)
            self.heartbeats.try_beat(job.name, job.seconds, f"{type(error).__name__}: {error}")
        else:
            self.heartbeats.try_beat(job.name, job.seconds)

    def _pause(self, seconds: float) -> None:
        """Backoff that ends early when the worker stops."""
        self._stopping.wait(seconds)

    def _run_projection(self, runner: BeatingRunner) -> None:
        """Keep a runner going: an unexpected error is recorded, then it restarts, slower."""
        delay = self.idle_wait
        while not self._stopping.is_set():
            try:
                runner.run(self._stopping, idle_wait=self.idle_wait)
            except Exception as error:
                log.exception("projection runner %s failed", runner.name)
                self.heartbeats.try_beat(
                    runner.job, runner.interval, f"{type(error).__name__}: {error}"
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, 60.0)
