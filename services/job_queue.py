"""The job queue: background work that can fail, leased with fencing tokens.

One queue for every kind of such work (the table and its statements: runtime/job_queue.py).
A job is a `kind` and a JSON payload; what it is about (`subject`) lets its owner's reads
find it. The API:

    queue = JobQueue(datastore, clock, queue_policy(settings))
    row = queue.enqueue("backtest", payload, subject=..., job_id=..., fingerprint=...)
    lease = queue.lease(["backtest"], worker="host:pid")   # None: nothing is ready
    queue.heartbeat(lease.job_id, lease.token)             # StaleLeaseError: the lease is lost
    queue.complete(lease.job_id, lease.token, result)      # or:
    queue.fail(lease.job_id, lease.token, "what went wrong", retry=True)
    queue.replay(event_log, context, job_id, reason)       # an operator: dead -> queued
    queue.discard(event_log, context, job_id, reason)      # an operator: dead -> discarded

Work that is not leased (a scheduled job's round, one payment's verification) keeps running
where it runs and records only its failures here, through `RetriedWork`: one open row per
work item (`kind`, `subject`), whose attempts, backoff and dead state are the same as a
leased job's, so operators see and decide about every kind of background work alike.

A failed attempt is queued again after a capped, jittered exponential backoff
(`runtime.job_queue.backoff`); after `max_attempts` (or when the handler says retrying
cannot help) the job is dead, with its last error, until an operator replays it (an event,
`aggregates.dead_letters`). `JobConsumer` runs a handler over the jobs of one kind as a
scheduled job, beating the lease while it works; remote workers do the same over HTTP
(`/v1/engine/jobs/...`). Delivery is at least once: handlers must be idempotent.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.postgres import PostgresDatastore

from aggregates.base import CommandContext
from aggregates.dead_letters import (
    DeadLetter,
    DeadLetterDiscardedError,
    DiscardReasonMissingError,
    JobNotDeadError,
    dead_letter_id,
)
from aggregates.errors import ConflictError, IdempotencyKeyReusedError, NotFoundError
from runtime import job_queue as sql
from runtime.clock import Clock
from runtime.job_queue import JobRow
from runtime.settings import Settings
from services.eventlog import EventLog, UnitOfWork, Written

log = logging.getLogger(__name__)


class StaleLeaseError(ConflictError):
    """The lease token presented no longer holds the job: it expired and another worker
    leased the job, or the job was finished with another token."""

    code = "lease-stale"


class JobNotFoundError(NotFoundError):
    code = "job-not-found"


class PermanentJobError(Exception):
    """A handler's failure that retrying cannot fix: the job goes dead at once."""


@dataclass(frozen=True)
class QueuePolicy:
    lease: timedelta
    max_attempts: int
    backoff_base: float
    backoff_max: float

    @property
    def heartbeat_seconds(self) -> float:
        """How often a worker beats: three times per lease."""
        return self.lease.total_seconds() / 3


def queue_policy(settings: Settings) -> QueuePolicy:
    return QueuePolicy(
        lease=timedelta(seconds=settings.job_lease_seconds),
        max_attempts=settings.job_max_attempts,
        backoff_base=settings.job_backoff_base,
        backoff_max=settings.job_backoff_max,
    )


@dataclass(frozen=True)
class Lease:
    """A job held by one worker until `until`, as long as it presents `token`."""

    job_id: UUID
    kind: str
    payload: dict[str, Any]
    token: UUID
    until: datetime
    attempt: int
    max_attempts: int

    @classmethod
    def of(cls, row: JobRow) -> Lease:
        assert row.lease_token is not None and row.lease_until is not None
        return cls(
            row.id,
            row.kind,
            row.payload,
            row.lease_token,
            row.lease_until,
            row.attempts,
            row.max_attempts,
        )


class JobQueue:
    def __init__(
        self,
        datastore: PostgresDatastore,
        clock: Clock,
        policy: QueuePolicy,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.datastore = datastore
        self.clock = clock
        self.policy = policy
        self.jitter = jitter

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        job_id: UUID | None = None,
        subject: str | None = None,
        fingerprint: str | None = None,
        priority: int = 100,
        delay: timedelta = timedelta(0),
        max_attempts: int | None = None,
    ) -> JobRow:
        """Queue a job. Given an id that is taken (a retried request), the job already there
        is returned if it is the same request (kind and fingerprint), else refused (409)."""
        now = self.clock()
        job_id = job_id or uuid4()
        with self.datastore.transaction(commit=True) as cursor:
            inserted = sql.insert(
                cursor,
                job_id=job_id,
                kind=kind,
                payload=payload,
                subject=subject,
                fingerprint=fingerprint,
                priority=priority,
                run_at=now + delay,
                max_attempts=max_attempts or self.policy.max_attempts,
                now=now,
            )
            row = sql.get(cursor, job_id)
        assert row is not None
        if not inserted and (row.kind, row.fingerprint) != (kind, fingerprint):
            raise IdempotencyKeyReusedError("this key was used for another job")
        return row

    def lease(self, kinds: Sequence[str], worker: str) -> Lease | None:
        """Lease the next ready job of these kinds, or None when none is ready."""
        now = self.clock()
        with self.datastore.transaction(commit=True) as cursor:
            sql.bury_expired(cursor, kinds, now)
            row = sql.lease_next(
                cursor,
                kinds,
                worker=worker[:200],
                token=uuid4(),
                now=now,
                until=now + self.policy.lease,
            )
        return None if row is None else Lease.of(row)

    def heartbeat(
        self, job_id: UUID, token: UUID, progress: dict[str, Any] | None = None
    ) -> JobRow:
        """Extend the lease (and record progress); StaleLeaseError when it is lost."""
        now = self.clock()
        with self.datastore.transaction(commit=True) as cursor:
            row = sql.heartbeat(
                cursor, job_id, token, now=now, until=now + self.policy.lease, progress=progress
            )
            if row is None:
                self._refuse(cursor, job_id)
        assert row is not None
        return row

    def complete(self, job_id: UUID, token: UUID, result: dict[str, Any]) -> JobRow:
        """Finish the job with its result. The same completion again (a retried request)
        returns the job; any other token is refused (StaleLeaseError)."""
        with self.datastore.transaction(commit=True) as cursor:
            row = sql.complete(cursor, job_id, token, now=self.clock(), result=result)
            if row is None:
                existing = sql.get(cursor, job_id)
                if existing and existing.state == "succeeded" and existing.lease_token == token:
                    return existing
                self._refuse(cursor, job_id)
        assert row is not None
        return row

    def fail(self, job_id: UUID, token: UUID, error: str, *, retry: bool = True) -> JobRow:
        """Record a failed attempt: queued again after the backoff while attempts remain
        and `retry` holds, else dead with `error`."""
        now = self.clock()
        with self.datastore.transaction(commit=True) as cursor:
            row = sql.get(cursor, job_id, lock=True)
            if row is None or row.state != "leased" or row.lease_token != token:
                self._refuse(cursor, job_id)
            assert row is not None
            run_at = None
            if retry and row.attempts < row.max_attempts:
                delay = sql.backoff(
                    row.attempts, self.policy.backoff_base, self.policy.backoff_max, self.jitter()
                )
                run_at = now + timedelta(seconds=delay)
            return sql.fail(cursor, job_id, now=now, error=error[:2000], run_at=run_at)

    def get(self, job_id: UUID) -> JobRow | None:
        with self.datastore.transaction(commit=False) as cursor:
            return sql.get(cursor, job_id)

    def find(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[JobRow]:
        with self.datastore.transaction(commit=False) as cursor:
            return sql.find(cursor, state=state, kind=kind, limit=limit)

    def replay(
        self, event_log: EventLog, context: CommandContext, job_id: UUID, reason: str
    ) -> Written[JobRow]:
        """An operator runs a dead job again from its first attempt (`DeadLetter.Replayed`);
        two at once replay the job once."""
        return self._decide_on_dead(event_log, context, job_id, reason, replay=True)

    def discard(
        self, event_log: EventLog, context: CommandContext, job_id: UUID, reason: str
    ) -> Written[JobRow]:
        """An operator gives a dead job up for good: it never runs again
        (`DeadLetter.Discarded`)."""
        if not reason.strip():
            raise DiscardReasonMissingError("a discard needs a reason")
        return self._decide_on_dead(event_log, context, job_id, reason, replay=False)

    def _decide_on_dead(
        self,
        event_log: EventLog,
        context: CommandContext,
        job_id: UUID,
        reason: str,
        *,
        replay: bool,
    ) -> Written[JobRow]:
        """The operator's decision is an event (with the actor and the reason) appended
        while the job's row is locked, then the row changes. The log commits on its own
        connection, before the row: should the row's commit fail, the decision is on record
        and the same discard again applies it without a second event (a replay again is
        a second replay, as it would be anyway)."""
        verb = "replayed" if replay else "discarded"
        with self.datastore.transaction(commit=True) as cursor:
            row = sql.get(cursor, job_id, lock=True)
            if row is None:
                raise JobNotFoundError(f"job {job_id} not found")
            if row.state == "discarded":
                raise DeadLetterDiscardedError(f"job {job_id} was discarded; it never runs again")
            if row.state != "dead":
                raise JobNotDeadError(f"job {job_id} is {row.state}; only a dead job is {verb}")
            dead = row

            def decide(unit: UnitOfWork) -> None:
                letter_id = dead_letter_id(job_id)
                letter = unit.find(DeadLetter, letter_id) or unit.add(
                    DeadLetter(letter_id, job_id, dead.kind)
                )
                if replay:
                    letter.replay(reason, dead.attempts, dead.last_error)
                elif not letter.discarded:  # else: a discard whose row change was lost
                    letter.discard(reason, dead.attempts, dead.last_error)

            written = event_log.execute(context, decide)
            now = self.clock()
            changed = (
                sql.requeue_dead(cursor, job_id, now=now)
                if replay
                else sql.discard_dead(cursor, job_id, now=now)
            )
        assert changed is not None
        return Written(changed, written.position)

    # --- work that is not leased: its failures only --------------------------------------

    def open_items(
        self, kind: str, subjects: Sequence[str], *, discarded: bool = False
    ) -> dict[str, JobRow]:
        """The open row (queued for a retry, or dead) of each of these subjects that has one;
        with `discarded`, a discarded row counts too."""
        if not subjects:
            return {}
        with self.datastore.transaction(commit=False) as cursor:
            rows = sql.open_for(cursor, kind, subjects, discarded=discarded)
        return {row.subject: row for row in rows if row.subject is not None}

    def record_failure(
        self,
        kind: str,
        subject: str,
        error: str,
        payload: dict[str, Any] | None = None,
        *,
        probe_dead: bool = False,
    ) -> JobRow:
        """One more failed attempt of a work item: its open row is opened (first failure)
        or bumped, queued again after the backoff while attempts remain, else dead. With
        `probe_dead`, a dead row's `run_at` is when its owner may try it again (the backoff's
        cap from now); without, it stays where it was."""
        now = self.clock()
        with self.datastore.transaction(commit=True) as cursor:
            sql.lock_subject(cursor, kind, subject)
            rows = sql.open_for(cursor, kind, [subject])
            if rows:
                row = rows[0]
            else:
                job_id = uuid4()
                sql.insert(
                    cursor,
                    job_id=job_id,
                    kind=kind,
                    payload=payload or {},
                    subject=subject,
                    fingerprint=None,
                    priority=100,
                    run_at=now,
                    max_attempts=self.policy.max_attempts,
                    now=now,
                )
                opened = sql.get(cursor, job_id)
                assert opened is not None
                row = opened
            dead = row.state == "dead" or row.attempts + 1 >= row.max_attempts
            run_at = None
            if not dead:
                delay = sql.backoff(
                    row.attempts + 1,
                    self.policy.backoff_base,
                    self.policy.backoff_max,
                    self.jitter(),
                )
                run_at = now + timedelta(seconds=delay)
            elif probe_dead:
                run_at = now + timedelta(seconds=self.policy.backoff_max)
            return sql.record_attempt_failed(
                cursor, row.id, now=now, error=error[:2000], dead=dead, run_at=run_at
            )

    def record_success(self, kind: str, subject: str, result: dict[str, Any]) -> JobRow | None:
        """The work item went through: its open retry (if any) is done."""
        with self.datastore.transaction(commit=True) as cursor:
            return sql.close_open(cursor, kind, subject, now=self.clock(), result=result)

    @staticmethod
    def _refuse(cursor: Any, job_id: UUID) -> None:
        if sql.get(cursor, job_id) is None:
            raise JobNotFoundError(f"job {job_id} not found")
        raise StaleLeaseError("this lease token no longer holds the job")


# --- consumers -----------------------------------------------------------------------------


class _Beating:
    """Beats a lease in a thread every `seconds` until stopped or the lease is lost."""

    def __init__(self, queue: JobQueue, lease: Lease, seconds: float) -> None:
        self.queue = queue
        self.lease = lease
        self.seconds = seconds
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease:{lease.job_id}", daemon=True)

    def __enter__(self) -> _Beating:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.queue.heartbeat(self.lease.job_id, self.lease.token)
            except StaleLeaseError:
                self.lost = True
                log.warning("lost the lease of job %s", self.lease.job_id)
                return
            except Exception as error:  # the database away: the next beat tries again
                log.warning("heartbeat of job %s failed: %s", self.lease.job_id, error)


Handler = Callable[[Lease], dict[str, Any]]
"""Does a job's work and returns its result; raises PermanentJobError when retrying cannot
help (anything else is retried)."""


@dataclass(frozen=True)
class JobConsumer:
    """A scheduled job: one round leases and runs jobs of `kind`, one at a time, until none
    is ready or `max_jobs` ran."""

    queue: JobQueue
    kind: str
    handler: Handler
    worker: str
    max_jobs: int = 8

    def __call__(self) -> str:
        outcomes: Counter[str] = Counter()
        for _ in range(self.max_jobs):
            lease = self.queue.lease([self.kind], self.worker)
            if lease is None:
                break
            outcomes[self.run(lease)] += 1
        return ", ".join(f"{count} {what}" for what, count in sorted(outcomes.items())) or "idle"

    def run(self, lease: Lease) -> str:
        """One leased job: its handler under a beating lease, then complete or fail."""
        with _Beating(self.queue, lease, self.queue.policy.heartbeat_seconds):
            try:
                result = self.handler(lease)
            except PermanentJobError as error:
                return self._fail(lease, str(error), retry=False)
            except Exception as error:
                log.exception("job %s (%s) failed", lease.job_id, lease.kind)
                return self._fail(lease, f"{type(error).__name__}: {error}", retry=True)
        try:
            self.queue.complete(lease.job_id, lease.token, result)
        except StaleLeaseError:
            log.warning("job %s finished after its lease was lost; result dropped", lease.job_id)
            return "lost"
        return "succeeded"

    def _fail(self, lease: Lease, error: str, *, retry: bool) -> str:
        try:
            row = self.queue.fail(lease.job_id, lease.token, error, retry=retry)
        except StaleLeaseError:
            return "lost"
        return "dead" if row.state == "dead" else "retried"


# --- work that is not leased -----------------------------------------------------------------


@dataclass(frozen=True)
class RetriedWork:
    """The retries of work items of one kind that run where they always ran (a scheduled
    job's round, one payment's check): before running an item, ask whether it is `held`
    (its retry is not due yet, or it is dead, waiting for an operator); after, report
    `failed` or `succeeded`. A replayed item is queued and due at once, so the next pass
    runs it.

    `probe_dead`: a dead item is still tried once per backoff cap (a success clears the
    dead letter, a failure keeps it), for work that must not stop for good on an outage
    nobody fixed yet (a scheduled job); without, it waits for an operator (a payment).
    `discard_is_final`: a discarded item's subject stays held for good (a payment's check);
    without, the discarded run is closed and the subject's next run is new work (a
    scheduled job's next round)."""

    queue: JobQueue
    kind: str
    probe_dead: bool = False
    discard_is_final: bool = False

    def open(self, subjects: Sequence[str]) -> dict[str, JobRow]:
        """The subjects that failed before, each with its open (or final) row."""
        return self.queue.open_items(self.kind, subjects, discarded=self.discard_is_final)

    def is_held(self, row: JobRow) -> bool:
        """Not to run now: its retry (or probe) is not due yet, it is dead, discarded, or
        leased by someone."""
        due = row.run_at <= self.queue.clock()
        if row.state == "queued" or (row.state == "dead" and self.probe_dead):
            return not due
        return True

    def held(self, subjects: Sequence[str]) -> dict[str, JobRow]:
        """The subjects not to run now, each with its open row."""
        return {s: row for s, row in self.open(subjects).items() if self.is_held(row)}

    def failed(self, subject: str, error: str, payload: dict[str, Any] | None = None) -> JobRow:
        row = self.queue.record_failure(
            self.kind, subject, error, payload, probe_dead=self.probe_dead
        )
        if row.state == "dead" and row.attempts == row.max_attempts:  # it just died
            log.error("%s %s is a dead letter after %d attempts", self.kind, subject, row.attempts)
        return row

    def succeeded(self, subject: str, result: dict[str, Any] | None = None) -> None:
        self.queue.record_success(self.kind, subject, result or {})
