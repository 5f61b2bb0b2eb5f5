"""The worker: runners and jobs in-process, and `pumpparty worker`/`serve` as processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from aggregates.base import CommandContext
from runtime.settings import Settings
from scripts.worker import JOB_ATTEMPTS, Worker
from services.bootstrap import Services, open_services
from tests.integration.test_cli import REPO, cli_env, pumpparty_command
from tests.integration.test_projections import append_events


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 20.0, every: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def heartbeats(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute("SELECT * FROM worker_heartbeats").fetchall()
    return {row["job"]: row for row in rows}


def digests(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM audit_digests").fetchone()
    return int(row[0]) if row else 0


def audit_log_positions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT position FROM audit_log ORDER BY position")]


@pytest.fixture
def quick_services(database_url: str, tmp_path: Path) -> Iterator[Services]:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, digest_interval=0.2, heartbeat_interval=0.1
    )
    opened = open_services(settings, run_migrations=False)
    yield opened
    opened.close()


# --- in-process ----------------------------------------------------------------------------


def test_worker_follows_the_log_records_digests_and_beats(
    quick_services: Services, context: CommandContext
) -> None:
    services = quick_services
    append_events(services, context, 60)
    worker = Worker(services, batch_size=7, idle_wait=0.1)

    worker.start()
    worker.start()  # a second start changes nothing
    wait_until(lambda: services.projections.status("audit_log").lag == 0)
    append_events(services, context, 10)  # followed live, woken by NOTIFY
    wait_until(lambda: services.projections.status("audit_log").position == 70)
    wait_until(lambda: {"projection:audit_log", "audit_digest"} <= set(heartbeats(services.url)))
    wait_until(lambda: digests(services.url) > 0)
    worker.stop()
    worker.stop()  # and so does a second stop

    beats = heartbeats(services.url)
    assert beats["audit_digest"]["last_error"] is None
    assert beats["audit_digest"]["interval_seconds"] == 0.2
    assert beats["projection:audit_log"]["process"] == f"{socket.gethostname()}:{os.getpid()}"
    assert not worker.running
    assert not [t for t in threading.enumerate() if t.name.startswith("projection:")]


def test_a_failing_job_is_retried_and_its_error_recorded(quick_services: Services) -> None:
    services = quick_services
    calls: list[int] = []
    healthy = threading.Event()

    def flaky() -> str:
        calls.append(1)
        if not healthy.is_set():
            raise RuntimeError("the node is down")
        return "moved 3 marks"

    worker = Worker(services, idle_wait=0.1)
    worker.start()
    worker.register_job("flaky", flaky, 0.3)  # added while running: scheduled at once
    try:
        wait_until(lambda: "flaky" in heartbeats(services.url))
        failed = heartbeats(services.url)["flaky"]
        assert (failed["last_error"], failed["last_outcome"]) == (
            "RuntimeError: the node is down",
            None,
        )
        assert len(calls) >= JOB_ATTEMPTS
        healthy.set()
        wait_until(lambda: heartbeats(services.url)["flaky"]["last_error"] is None)
        assert heartbeats(services.url)["flaky"]["last_outcome"] == "moved 3 marks"
        healthy.clear()  # failing again: the last good round's outcome stays
        wait_until(lambda: heartbeats(services.url)["flaky"]["last_error"] is not None)
        assert heartbeats(services.url)["flaky"]["last_outcome"] == "moved 3 marks"
    finally:
        worker.stop()


# --- as processes --------------------------------------------------------------------------


def start_process(
    database_url: str, data_dir: Path, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    """`pumpparty ARGS` in the background; its output goes to a log file in `data_dir`."""
    with (data_dir / "process.log").open("ab") as output:
        return subprocess.Popen(
            pumpparty_command(*args),
            cwd=REPO,
            env=cli_env(database_url, data_dir, **env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    process.send_signal(signum)
    try:
        return process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def output_of(data_dir: Path) -> str:
    return (data_dir / "process.log").read_text()


def test_worker_process_stops_cleanly_on_sigterm_after_beating(
    database_url: str, tmp_path: Path
) -> None:
    process = start_process(database_url, tmp_path, "worker", PUMPPARTY_HEARTBEAT_INTERVAL="0.2")
    try:
        wait_until(
            lambda: {"projection:audit_log", "audit_digest"} <= set(heartbeats(database_url)),
            timeout=30,
        )
    finally:
        started = time.monotonic()
        code = stop_process(process)

    assert code == 0, output_of(tmp_path)
    assert time.monotonic() - started < 5
    beats = heartbeats(database_url)
    assert beats["projection:audit_log"]["process"].endswith(f":{process.pid}")
    assert beats["audit_digest"]["last_error"] is None


def test_runner_process_killed_mid_catch_up_resumes_with_every_row_once(
    services: Services, context: CommandContext, database_url: str, tmp_path: Path
) -> None:
    append_events(services, context, 2000)
    head = services.projections.status("audit_log").head

    first = start_process(database_url, tmp_path, "worker", "--batch-size", "2")
    try:
        wait_until(
            lambda: 0 < services.projections.status("audit_log").position < head,
            timeout=30,
            every=0.005,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = services.projections.status("audit_log").position
    assert first.returncode == -signal.SIGKILL
    assert 0 < killed_at < head

    second = start_process(database_url, tmp_path, "worker", "--batch-size", "50")
    try:
        wait_until(lambda: services.projections.status("audit_log").lag == 0, timeout=60)
    finally:
        assert stop_process(second) == 0

    positions = audit_log_positions(database_url)
    assert positions == list(range(1, head + 1))  # every event, exactly once, none missing


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_runs_the_api_and_the_worker_and_stops_on_sigterm(
    services: Services, context: CommandContext, database_url: str, tmp_path: Path
) -> None:
    append_events(services, context, 25)
    port = free_port()
    monitor = '[{"name": "monitor", "scopes": ["health:read"], "secrets": ["monitor-secret"]}]'
    process = start_process(
        database_url, tmp_path, "serve", "--port", str(port), PUMPPARTY_SERVICE_TOKENS=monitor
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=30)
        wait_until(lambda: services.projections.status("audit_log").lag == 0)
        workers = httpx.get(
            f"{base}/v1/health/workers",
            headers={"Authorization": "Bearer monitor-secret"},
            timeout=5,
        ).json()
    finally:
        code = stop_process(process)

    assert code == 0, output_of(tmp_path)
    assert {w["job"] for w in workers} >= {"projection:audit_log", "audit_digest"}
    assert audit_log_positions(database_url) == list(range(1, 26))


def test_serve_keeps_the_worker_in_a_child_process_restarts_it_and_stops_it_on_ctrl_c(
    services: Services, context: CommandContext, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    process = start_process(
        database_url, tmp_path, "serve", "--port", str(port), PUMPPARTY_HEARTBEAT_INTERVAL="0.2"
    )

    def worker_pid() -> int | None:
        beat = heartbeats(database_url).get("projection:audit_log")
        return int(beat["process"].rsplit(":", 1)[1]) if beat else None

    try:
        wait_until(lambda: worker_pid() is not None, timeout=30)
        first = worker_pid()
        assert first is not None and first != process.pid  # its own interpreter, not the API's
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: worker_pid() not in (None, first), timeout=30)
        second = worker_pid()
        assert second is not None
        append_events(services, context, 5)  # the new worker follows the log
        wait_until(lambda: services.projections.status("audit_log").lag == 0)
    finally:
        code = stop_process(process, signal.SIGINT)  # Ctrl-C

    assert code == 0, output_of(tmp_path)
    assert audit_log_positions(database_url) == list(range(1, 6))
    assert not alive(second)  # stopped with serve


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
