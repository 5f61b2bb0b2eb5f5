"""The job queue's table and statements (schema step 51): background work as rows.

One queue for every kind of background work that can fail: a job is a `kind` and a JSON
`payload`. Backtests are leased by workers; other work (a scheduled job's round, one
payment's verification) runs where it always ran and only records its failures here, as one
open row per `(kind, subject)` (`record_failure`, `close_open`), so its retries, backoff and
dead letters are the same rows, states and operator commands. Its states:

    queued --lease--> leased --complete--> succeeded
       ^                 |  \\--fail (attempts left)--> queued (run_at = now + backoff)
       |                 |   \\-fail (none left, or not worth retrying)--> dead
       |                 \\--lease expired, another worker leases it--> leased (attempt + 1)
       \\------------------------- replay (an operator) --------------------- dead
                                                                          |
                                                   discard (an operator) -+--> discarded

A lease picks the first ready job (`priority, run_at, id`) `FOR UPDATE SKIP LOCKED`, so
concurrent workers never wait for nor take the same row, and sets a fresh `lease_token`:
heartbeat, complete and fail must present it, so a worker whose lease expired and was
taken by another (a fencing token) can no longer touch the job. A lease that expires on the
last attempt makes the job dead. Every statement takes the caller's time (`now`): the
service's clock, as everywhere; lease durations must dwarf the clock skew between hosts.

Working state, not the record: what operators decide about a job (a replay) is an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from runtime.reads import Reads, columns

TABLE = "job_queue"
STATES = ("queued", "leased", "succeeded", "dead", "discarded")
OPEN_STATES = ("queued", "leased", "dead")
"""A row in one of these is work not yet done nor given up."""


@dataclass(frozen=True, slots=True)
class JobRow:
    id: UUID
    kind: str
    subject: str | None
    payload: dict[str, Any]
    fingerprint: str | None
    state: str
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    lease_token: UUID | None
    leased_by: str | None
    lease_until: datetime | None
    heartbeat_at: datetime | None
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    last_error: str | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    replays: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


_COLUMNS = ", ".join(f.name for f in fields(JobRow))
_RETURNING = ", ".join(f"j.{f.name}" for f in fields(JobRow))


def _row(row: Any) -> JobRow | None:
    return None if row is None else JobRow(**row)


def insert(
    cursor: Cursor[Any],
    *,
    job_id: UUID,
    kind: str,
    payload: dict[str, Any],
    subject: str | None,
    fingerprint: str | None,
    priority: int,
    run_at: datetime,
    max_attempts: int,
    now: datetime,
) -> bool:
    """Add a queued job; False (and nothing changed) when the id is taken."""
    cursor.execute(
        "INSERT INTO job_queue (id, kind, subject, payload, fingerprint, state, priority,"
        " run_at, max_attempts, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, 'queued', %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (
            job_id,
            kind,
            subject,
            Jsonb(payload),
            fingerprint,
            priority,
            run_at,
            max_attempts,
            now,
            now,
        ),
    )
    return cursor.rowcount == 1


def get(cursor: Cursor[Any], job_id: UUID, *, lock: bool = False) -> JobRow | None:
    cursor.execute(
        f"SELECT {_COLUMNS} FROM job_queue WHERE id = %s" + (" FOR UPDATE" if lock else ""),
        (job_id,),
    )
    return _row(cursor.fetchone())


def bury_expired(cursor: Cursor[Any], kinds: Sequence[str], now: datetime) -> int:
    """Jobs whose lease expired on their last attempt are dead (a worker that keeps dying
    on a job must not pass it on for ever)."""
    cursor.execute(
        "UPDATE job_queue SET state = 'dead', finished_at = %(now)s, updated_at = %(now)s,"
        " last_error = 'the lease of ' || coalesce(leased_by, 'a worker')"
        "  || ' expired on the last attempt',"
        " first_failed_at = coalesce(first_failed_at, %(now)s), last_failed_at = %(now)s"
        " WHERE kind = ANY(%(kinds)s) AND state = 'leased' AND lease_until < %(now)s"
        " AND attempts >= max_attempts",
        {"kinds": list(kinds), "now": now},
    )
    return cursor.rowcount


def lease_next(
    cursor: Cursor[Any],
    kinds: Sequence[str],
    *,
    worker: str,
    token: UUID,
    now: datetime,
    until: datetime,
) -> JobRow | None:
    """Lease the first ready job of these kinds: queued and due, or leased by a worker whose
    lease has expired (that attempt counts as failed). Skips rows others hold."""
    cursor.execute(
        "WITH next AS ("
        " SELECT id FROM job_queue WHERE kind = ANY(%(kinds)s)"
        " AND ((state = 'queued' AND run_at <= %(now)s)"
        "  OR (state = 'leased' AND lease_until < %(now)s AND attempts < max_attempts))"
        " ORDER BY priority, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " UPDATE job_queue j SET state = 'leased', lease_token = %(token)s,"
        " leased_by = %(worker)s, lease_until = %(until)s, heartbeat_at = %(now)s,"
        " attempts = j.attempts + 1, progress = NULL, updated_at = %(now)s,"
        " last_error = CASE WHEN j.state = 'leased' THEN 'the lease of '"
        "  || coalesce(j.leased_by, 'a worker') || ' expired' ELSE j.last_error END,"
        " first_failed_at = CASE WHEN j.state = 'leased'"
        "  THEN coalesce(j.first_failed_at, %(now)s) ELSE j.first_failed_at END,"
        " last_failed_at = CASE WHEN j.state = 'leased' THEN %(now)s ELSE j.last_failed_at END"
        f" FROM next WHERE j.id = next.id RETURNING {_RETURNING}",
        {"kinds": list(kinds), "now": now, "token": token, "worker": worker, "until": until},
    )
    return _row(cursor.fetchone())


def heartbeat(
    cursor: Cursor[Any],
    job_id: UUID,
    token: UUID,
    *,
    now: datetime,
    until: datetime,
    progress: dict[str, Any] | None,
) -> JobRow | None:
    """Extend the lease this token holds (None: it holds none)."""
    cursor.execute(
        "UPDATE job_queue j SET lease_until = %s, heartbeat_at = %s,"
        " progress = coalesce(%s, j.progress), updated_at = %s"
        " WHERE id = %s AND lease_token = %s AND state = 'leased'"
        f" RETURNING {_RETURNING}",
        (until, now, None if progress is None else Jsonb(progress), now, job_id, token),
    )
    return _row(cursor.fetchone())


def complete(
    cursor: Cursor[Any], job_id: UUID, token: UUID, *, now: datetime, result: dict[str, Any]
) -> JobRow | None:
    """Mark the job this token holds succeeded with `result` (None: it holds none)."""
    cursor.execute(
        "UPDATE job_queue j SET state = 'succeeded', result = %s, finished_at = %s,"
        " updated_at = %s, lease_until = NULL WHERE id = %s AND lease_token = %s"
        f" AND state = 'leased' RETURNING {_RETURNING}",
        (Jsonb(result), now, now, job_id, token),
    )
    return _row(cursor.fetchone())


def fail(
    cursor: Cursor[Any],
    job_id: UUID,
    *,
    now: datetime,
    error: str,
    run_at: datetime | None,
) -> JobRow:
    """Record a failed attempt of a job the caller holds locked: queued again at `run_at`,
    or dead when that is None."""
    cursor.execute(
        "UPDATE job_queue j SET state = CASE WHEN %(run_at)s::timestamptz IS NULL"
        "  THEN 'dead' ELSE 'queued' END,"
        " run_at = coalesce(%(run_at)s, j.run_at), lease_until = NULL, last_error = %(error)s,"
        " first_failed_at = coalesce(j.first_failed_at, %(now)s), last_failed_at = %(now)s,"
        " finished_at = CASE WHEN %(run_at)s::timestamptz IS NULL THEN %(now)s END,"
        f" updated_at = %(now)s WHERE id = %(id)s RETURNING {_RETURNING}",
        {"run_at": run_at, "error": error, "now": now, "id": job_id},
    )
    row = _row(cursor.fetchone())
    assert row is not None
    return row


def requeue_dead(cursor: Cursor[Any], job_id: UUID, *, now: datetime) -> JobRow | None:
    """A dead job queued again from its first attempt (None: it is not dead)."""
    cursor.execute(
        "UPDATE job_queue j SET state = 'queued', attempts = 0, run_at = %(now)s,"
        " replays = j.replays + 1, lease_token = NULL, leased_by = NULL, lease_until = NULL,"
        " finished_at = NULL, updated_at = %(now)s WHERE id = %(id)s AND state = 'dead'"
        f" RETURNING {_RETURNING}",
        {"now": now, "id": job_id},
    )
    return _row(cursor.fetchone())


def open_for(
    cursor: Cursor[Any], kind: str, subjects: Sequence[str], *, discarded: bool = False
) -> list[JobRow]:
    """The open rows (queued, leased or dead) of these subjects of one kind, and with
    `discarded` their discarded rows too."""
    states = [*OPEN_STATES, "discarded"] if discarded else list(OPEN_STATES)
    cursor.execute(
        f"SELECT {_COLUMNS} FROM job_queue WHERE kind = %s AND subject = ANY(%s)"
        " AND state = ANY(%s)",
        (kind, list(subjects), states),
    )
    return [JobRow(**row) for row in cursor.fetchall()]


def lock_subject(cursor: Cursor[Any], kind: str, subject: str) -> None:
    """Serialize the writers of one subject's open row for the rest of the transaction, so
    two processes failing at once bump one row instead of opening two."""
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"job_queue:{kind}:{subject}",))


def record_attempt_failed(
    cursor: Cursor[Any],
    job_id: UUID,
    *,
    now: datetime,
    error: str,
    dead: bool,
    run_at: datetime | None,
) -> JobRow:
    """One more failed attempt of an unleased row (a leased job's attempt was counted when
    it was leased: `fail`): queued again at `run_at`, or dead (its `run_at` then, if any,
    when its owner may probe it again)."""
    cursor.execute(
        "UPDATE job_queue j SET attempts = j.attempts + 1,"
        " state = CASE WHEN %(dead)s THEN 'dead' ELSE 'queued' END,"
        " run_at = coalesce(%(run_at)s, j.run_at), last_error = %(error)s,"
        " first_failed_at = coalesce(j.first_failed_at, %(now)s), last_failed_at = %(now)s,"
        " finished_at = CASE WHEN %(dead)s THEN %(now)s END,"
        f" updated_at = %(now)s WHERE id = %(id)s RETURNING {_RETURNING}",
        {"dead": dead, "run_at": run_at, "error": error, "now": now, "id": job_id},
    )
    row = _row(cursor.fetchone())
    assert row is not None
    return row


def close_open(
    cursor: Cursor[Any], kind: str, subject: str, *, now: datetime, result: dict[str, Any]
) -> JobRow | None:
    """The subject's work went through: its open row (a retry that was due, or a dead one
    probed) succeeds."""
    cursor.execute(
        "UPDATE job_queue j SET state = 'succeeded', result = %s, finished_at = %s,"
        " updated_at = %s WHERE kind = %s AND subject = %s AND state IN ('queued', 'dead')"
        f" RETURNING {_RETURNING}",
        (Jsonb(result), now, now, kind, subject),
    )
    return _row(cursor.fetchone())


def discard_dead(cursor: Cursor[Any], job_id: UUID, *, now: datetime) -> JobRow | None:
    """A dead job given up for good (None: it is not dead)."""
    cursor.execute(
        "UPDATE job_queue j SET state = 'discarded', finished_at = %(now)s,"
        " updated_at = %(now)s WHERE id = %(id)s AND state = 'dead'"
        f" RETURNING {_RETURNING}",
        {"now": now, "id": job_id},
    )
    return _row(cursor.fetchone())


def dead_letters(
    cursor: Cursor[Any],
    *,
    kind: str | None,
    include_closed: bool,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> list[JobRow]:
    """Dead jobs (and with `include_closed`, discarded and replayed ones), the latest
    failure first (then the id, descending); `before`: only those after that
    (last failure, id) in this order, a page's keyset cursor."""
    cursor.execute(
        f"SELECT {_COLUMNS} FROM job_queue WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)"
        " AND (state = 'dead' OR (%(closed)s AND (state = 'discarded' OR replays > 0)))"
        " AND (%(at)s::timestamptz IS NULL"
        "  OR (coalesce(last_failed_at, '-infinity'), id::text COLLATE \"C\")"
        '  < (%(at)s, %(id)s::text COLLATE "C"))'
        " ORDER BY coalesce(last_failed_at, '-infinity') DESC, id::text COLLATE \"C\" DESC"
        " LIMIT %(limit)s",
        {
            "kind": kind,
            "closed": include_closed,
            "limit": limit,
            "at": before[0] if before else None,
            "id": before[1] if before else None,
        },
    )
    return [JobRow(**row) for row in cursor.fetchall()]


def dead_counts(cursor: Cursor[Any]) -> dict[str, int]:
    cursor.execute("SELECT kind, count(*) AS n FROM job_queue WHERE state = 'dead' GROUP BY kind")
    return {row["kind"]: int(row["n"]) for row in cursor.fetchall()}


def find(cursor: Cursor[Any], *, state: str | None, kind: str | None, limit: int) -> list[JobRow]:
    """Jobs in a state and of a kind (either may be None: any), newest first."""
    cursor.execute(
        f"SELECT {_COLUMNS} FROM job_queue WHERE (%(state)s::text IS NULL OR state = %(state)s)"
        " AND (%(kind)s::text IS NULL OR kind = %(kind)s) ORDER BY created_at DESC, id LIMIT %(limit)s",
        {"state": state, "kind": kind, "limit": limit},
    )
    return [JobRow(**row) for row in cursor.fetchall()]


def backoff(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Seconds before attempt `attempt + 1`: base x 2^(attempt-1), at most `cap`, then
    scaled into its upper half by `jitter` in [0, 1) ("equal jitter"), so retries of jobs
    that failed together spread out but none comes back sooner than half its delay."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return delay * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


# --- reads for HTTP ------------------------------------------------------------------------


async def job_by_id(reads: Reads, job_id: UUID) -> JobRow | None:
    query = SQL("SELECT {} FROM job_queue WHERE id = %s").format(columns(JobRow))
    return await reads.one(JobRow, query, (job_id,))
