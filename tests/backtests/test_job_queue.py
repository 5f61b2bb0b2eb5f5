"""The job queue on real PostgreSQL: leases under concurrency, expired leases, fencing
tokens, backoff, dead jobs and their replay (an event), from the API of
`services/job_queue.py` and from `pumpparty jobs` run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from aggregates.base import CommandContext
from aggregates.dead_letters import DeadLetter, JobNotDeadError, dead_letter_id
from runtime.clock import FixedClock
from runtime.job_queue import backoff
from services.bootstrap import Services
from services.job_queue import (
    JobConsumer,
    JobQueue,
    Lease,
    PermanentJobError,
    QueuePolicy,
    StaleLeaseError,
)

REPO = Path(__file__).resolve().parents[2]
KIND = "test-work"
POLICY = QueuePolicy(
    lease=timedelta(seconds=30), max_attempts=3, backoff_base=10.0, backoff_max=15.0
)


def queue_of(services: Services, clock: FixedClock, jitter: float = 0.5) -> JobQueue:
    return JobQueue(services.datastore, clock, POLICY, jitter=lambda: jitter)


def test_two_workers_never_run_one_job_at_once(services: Services, clock: FixedClock) -> None:
    queue = queue_of(services, clock)
    jobs = {queue.enqueue(KIND, {"n": n}).id for n in range(40)}
    running: set[UUID] = set()
    ran: Counter[UUID] = Counter()
    overlaps: list[UUID] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        start.wait()
        while (lease := queue.lease([KIND], name)) is not None:
            with lock:
                if lease.job_id in running:
                    overlaps.append(lease.job_id)
                running.add(lease.job_id)
                ran[lease.job_id] += 1
            time.sleep(0.002)
            with lock:
                running.discard(lease.job_id)
            queue.complete(lease.job_id, lease.token, {"by": name})

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert overlaps == []
    assert set(ran) == jobs and set(ran.values()) == {1}
    rows = queue.find(kind=KIND, limit=100)
    assert {row.state for row in rows} == {"succeeded"} and {row.attempts for row in rows} == {1}
    assert len({row.result["by"] for row in rows if row.result}) > 1, "one worker did it all"


def test_of_workers_racing_for_one_job_exactly_one_gets_it(
    services: Services, clock: FixedClock
) -> None:
    queue = queue_of(services, clock)
    queue.enqueue(KIND, {})
    start = threading.Barrier(8)
    leases: list[Lease | None] = []

    def race() -> None:
        start.wait()
        leases.append(queue.lease([KIND], threading.current_thread().name))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len([lease for lease in leases if lease is not None]) == 1


def test_a_dead_worker_loses_its_lease_and_the_job_completes_once_elsewhere(
    services: Services, clock: FixedClock
) -> None:
    queue = queue_of(services, clock)
    job = queue.enqueue(KIND, {"n": 1})
    first = queue.lease([KIND], "doomed")
    assert first is not None and first.job_id == job.id
    assert queue.lease([KIND], "other") is None  # held: nobody else gets it

    clock.advance(seconds=31)  # the first worker died: no heartbeat for a whole lease
    second = queue.lease([KIND], "other")

    assert second is not None and second.job_id == job.id
    assert second.token != first.token and second.attempt == 2
    for stale in (
        lambda: queue.heartbeat(job.id, first.token),
        lambda: queue.complete(job.id, first.token, {"by": "doomed"}),
        lambda: queue.fail(job.id, first.token, "late"),
    ):
        with pytest.raises(StaleLeaseError):
            stale()
    done = queue.complete(job.id, second.token, {"by": "other"})
    assert (done.state, done.result) == ("succeeded", {"by": "other"})
    assert done.last_error is not None and "doomed" in done.last_error
    # The same completion again (a retried request) answers the same; the stale one never.
    assert queue.complete(job.id, second.token, {"by": "other"}).result == {"by": "other"}
    with pytest.raises(StaleLeaseError):
        queue.complete(job.id, first.token, {"by": "doomed"})
    assert queue.get(job.id).result == {"by": "other"}  # type: ignore[union-attr]


def test_a_stale_lease_token_cannot_complete_a_job(services: Services, clock: FixedClock) -> None:
    queue = queue_of(services, clock)
    job = queue.enqueue(KIND, {})
    lease = queue.lease([KIND], "w")
    assert lease is not None
    forged = UUID(int=lease.token.int ^ 1)

    with pytest.raises(StaleLeaseError):
        queue.complete(job.id, forged, {"forged": True})
    assert queue.get(job.id).state == "leased"  # type: ignore[union-attr]

    # A heartbeat keeps the lease past its first expiry: nobody can take it then.
    clock.advance(seconds=20)
    queue.heartbeat(job.id, lease.token, {"done": 0.5})
    clock.advance(seconds=20)
    assert queue.lease([KIND], "thief") is None
    assert queue.complete(job.id, lease.token, {"ok": True}).state == "succeeded"


def test_backoff_doubles_within_its_jitter_and_is_capped() -> None:
    assert [backoff(a, 5.0, 60.0, 1.0) for a in (1, 2, 3, 4, 5, 6)] == [5, 10, 20, 40, 60, 60]
    assert [backoff(a, 5.0, 60.0, 0.0) for a in (1, 2, 3)] == [2.5, 5, 10]
    assert 7.5 <= backoff(2, 5.0, 60.0, 0.5) <= 10


def test_a_job_that_keeps_failing_goes_dead_after_max_attempts_and_can_be_replayed(
    services: Services, clock: FixedClock, context: CommandContext
) -> None:
    queue = queue_of(services, clock, jitter=1.0)
    job = queue.enqueue(KIND, {"feed": "BTC"})
    broken = {"yes": True}

    def handler(lease: Lease) -> dict[str, Any]:
        if broken["yes"]:
            raise RuntimeError(f"feed {lease.payload['feed']} is down")
        return {"ok": True}

    consumer = JobConsumer(queue, KIND, handler, worker="w")
    delays = []
    for attempt in (1, 2):
        assert consumer() == "1 retried"
        row = queue.get(job.id)
        assert row is not None and row.state == "queued" and row.attempts == attempt
        delays.append((row.run_at - clock()).total_seconds())
        assert consumer() == "idle"  # not before its time
        clock.advance(seconds=delays[-1])
    assert delays == [10.0, 15.0]  # 10 x 2^(a-1), capped at 15 (jitter 1: the full delay)
    assert consumer() == "1 dead"
    dead = queue.get(job.id)
    assert dead is not None and (dead.state, dead.attempts) == ("dead", 3)
    assert dead.last_error == "RuntimeError: feed BTC is down"
    assert dead.first_failed_at is not None and dead.last_failed_at == clock()
    clock.advance(hours=1)
    assert consumer() == "idle"  # dead stays dead

    broken["yes"] = False
    written = queue.replay(services.event_log, context, job.id, "the feed is back")

    assert (written.result.state, written.result.attempts, written.result.replays) == (
        "queued",
        0,
        1,
    )
    letter = services.event_log.read(DeadLetter, dead_letter_id(job.id))
    assert letter is not None and (letter.replays, letter.last_reason) == (1, "the feed is back")
    assert services.event_log.position_of([dead_letter_id(job.id)]) == written.position
    with pytest.raises(JobNotDeadError):
        queue.replay(services.event_log, context, job.id, "again")
    assert consumer() == "1 succeeded"
    assert queue.get(job.id).result == {"ok": True}  # type: ignore[union-attr]


def test_a_handler_that_cannot_succeed_goes_dead_at_once(
    services: Services, clock: FixedClock
) -> None:
    queue = queue_of(services, clock)
    job = queue.enqueue(KIND, {})

    def handler(lease: Lease) -> dict[str, Any]:
        raise PermanentJobError("the graph no longer exists")

    assert JobConsumer(queue, KIND, handler, worker="w")() == "1 dead"
    row = queue.get(job.id)
    assert row is not None and (row.state, row.attempts) == ("dead", 1)


def test_a_lease_that_expires_on_the_last_attempt_makes_the_job_dead(
    services: Services, clock: FixedClock
) -> None:
    queue = queue_of(services, clock)
    job = queue.enqueue(KIND, {}, max_attempts=1)
    assert queue.lease([KIND], "crashes-every-time") is not None
    clock.advance(seconds=31)

    assert queue.lease([KIND], "next") is None
    row = queue.get(job.id)
    assert row is not None and row.state == "dead"
    assert row.last_error == "the lease of crashes-every-time expired on the last attempt"


def test_pumpparty_jobs_replays_a_dead_job_with_a_reason(
    services: Services, clock: FixedClock, database_url: str, tmp_path: Path
) -> None:
    queue = queue_of(services, clock)
    job = queue.enqueue(KIND, {}, max_attempts=1)
    lease = queue.lease([KIND], "w")
    assert lease is not None
    queue.fail(job.id, lease.token, "boom")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPPARTY_")}
    env |= {"PUMPPARTY_DATABASE_URL": database_url, "PUMPPARTY_DATA_DIR": str(tmp_path)}

    def pumpparty(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scripts.cli", "jobs", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = pumpparty("list", "--state", "dead")
    assert listed.returncode == 0, listed.stderr
    assert str(job.id) in listed.stdout and "boom" in listed.stdout
    refused = pumpparty("replay", str(job.id), "--reason", " ")
    assert refused.returncode == 1 and "reason" in refused.stderr

    replayed = pumpparty("replay", str(job.id), "--reason", "fixed upstream")

    assert replayed.returncode == 0, replayed.stderr
    assert queue.get(job.id).state == "queued"  # type: ignore[union-attr]
    letter = services.event_log.read(DeadLetter, dead_letter_id(job.id))
    assert letter is not None and letter.last_reason == "fixed upstream"
    again = pumpparty("replay", str(job.id), "--reason", "twice")
    assert again.returncode == 1 and "only a dead job" in again.stderr
    shown = pumpparty("show", str(job.id))
    assert shown.returncode == 0 and '"replays": 1' in shown.stdout
