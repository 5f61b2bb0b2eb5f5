"""Retries and dead letters of background work on the one job queue (issue 20, item 1):
a scheduled job's failing rounds back off, then are dead-lettered, replayed or discarded;
a stalled projection is a dead letter too; `pumpparty dead-letters` run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import orjson
import psycopg
import pytest

from aggregates.base import CommandContext
from aggregates.dead_letters import (
    DeadLetter,
    DeadLetterDiscardedError,
    DiscardReasonMissingError,
    dead_letter_id,
    stall_id,
)
from projections.audit_log import AuditLog
from projections.runner import ProjectionRunner
from runtime.clock import FixedClock
from scripts.worker import JOB_ATTEMPTS, Worker
from services import dead_letters
from services.bootstrap import Services
from services.dead_letters import DeadLetterNotFoundError, ScheduledRounds
from services.eventlog import UnitOfWork
from services.job_queue import JobQueue, QueuePolicy
from tests.support.log import append_events, checksum

REPO = Path(__file__).resolve().parents[2]
POLICY = QueuePolicy(
    lease=timedelta(seconds=30), max_attempts=4, backoff_base=10.0, backoff_max=30.0
)
JOB = "flaky_job"
KIND = f"scheduled.{JOB}"


class Flaky:
    """A scheduled job's round that fails while `broken`, counting its runs."""

    def __init__(self) -> None:
        self.broken = True
        self.runs = 0

    def __call__(self) -> str:
        self.runs += 1
        if self.broken:
            raise RuntimeError(f"upstream down (run {self.runs})")
        return "all good"


def rounds_of(services: Services, clock: FixedClock) -> ScheduledRounds:
    # Jitter 0.5 puts every delay at three quarters of its uncapped-or-capped value.
    return ScheduledRounds(JobQueue(services.datastore, clock, POLICY, jitter=lambda: 0.5))


def operator(clock: FixedClock, name: str = "operator:test") -> CommandContext:
    return CommandContext(actor=name, occurred_at=clock(), correlation_id="ops-RETRO-CLOCK")


def kill(rounds: ScheduledRounds, clock: FixedClock, job: Flaky) -> None:
    """Fail the job's rounds until it is dead: 4 attempts, each when its retry is due."""
    for _ in range(POLICY.max_attempts):
        rounds.run(JOB, job)
        clock.advance(seconds=POLICY.backoff_max)


def test_a_failing_round_backs_off_then_is_dead_then_a_replay_runs_it_once_fixed(
    services: Services, clock: FixedClock
) -> None:
    rounds = rounds_of(services, clock)
    job = Flaky()
    started = clock()
    retry_times = []

    for expected_delay in (7.5, 15.0, 22.5):  # 10 x 2^(n-1), capped at 30, x 0.75
        outcome = rounds.run(JOB, job)
        [retry] = rounds.queue.open_items(KIND, [JOB]).values()
        assert outcome.ran and outcome.error and "upstream down" in outcome.error
        assert retry.state == "queued"
        assert retry.run_at == clock() + timedelta(seconds=expected_delay)
        retry_times.append(retry.run_at)
        too_early = rounds.run(JOB, job)  # the next tick, before the retry is due
        assert not too_early.ran and too_early.error == outcome.error
        clock.advance(seconds=expected_delay)
    last = rounds.run(JOB, job)
    after_death = clock()
    held = rounds.run(JOB, job)
    [view] = dead_letters.list_dead_letters(services, kind=KIND)
    clock.advance(seconds=POLICY.backoff_max - 1)
    still_held = rounds.run(JOB, job)
    clock.advance(seconds=1)
    probe = rounds.run(JOB, job)  # once per backoff cap, a dead job is tried again

    assert job.runs == 5, "a tick before the retry (or probe) is due never runs the round"
    assert last.ran and not held.ran and held.error and "held: dead letter" in held.error
    assert not still_held.ran and probe.ran
    assert (view.kind, view.subject, view.state, view.attempts) == (KIND, JOB, "dead", 4)
    assert (view.first_failed_at, view.last_failed_at) == (started, after_death)
    assert view.error == "RuntimeError: upstream down (run 4)"
    probed = dead_letters.show_dead_letter(services, view.id)
    assert (probed.state, probed.attempts, probed.last_failed_at) == ("dead", 5, clock())
    assert probed.first_failed_at == started
    assert dead_letters.dead_letter_counts(services) == {KIND: 1}

    job.broken = False
    replayed = dead_letters.replay_dead_letter(
        services, operator(clock), view.id, "upstream is back"
    )
    ran = rounds.run(JOB, job)  # the worker's next tick of the job

    assert replayed.state == "replayed"
    assert ran.ran and ran.error is None and ran.outcome == "all good" and job.runs == 6
    assert dead_letters.list_dead_letters(services) == []
    assert dead_letters.dead_letter_counts(services) == {}
    [closed] = dead_letters.list_dead_letters(services, include_closed=True)
    assert (closed.id, closed.state) == (view.id, "replayed")
    row = rounds.queue.get(UUID(view.id))
    assert row is not None and row.state == "succeeded" and row.replays == 1
    letter = services.event_log.read(DeadLetter, dead_letter_id(row.id))
    assert letter is not None and (letter.replays, letter.last_reason) == (1, "upstream is back")
    assert retry_times == sorted(retry_times)


def test_a_discard_needs_a_reason_and_the_dead_round_never_runs_again(
    services: Services, clock: FixedClock
) -> None:
    rounds = rounds_of(services, clock)
    job = Flaky()
    kill(rounds, clock, job)
    [view] = dead_letters.list_dead_letters(services)

    with pytest.raises(DiscardReasonMissingError):
        dead_letters.discard_dead_letter(services, operator(clock), view.id, "  ")
    discarded = dead_letters.discard_dead_letter(
        services, operator(clock), view.id, "  the feed was retired  "
    )
    with pytest.raises(DeadLetterDiscardedError) as replay_refused:
        dead_letters.replay_dead_letter(services, operator(clock), view.id, "try anyway")
    with pytest.raises(DeadLetterDiscardedError):
        dead_letters.discard_dead_letter(services, operator(clock), view.id, "twice")
    runs_before = job.runs
    rounds.run(JOB, job)  # the job is back on its schedule: a new round, new work

    assert discarded.state == "discarded"
    assert replay_refused.value.code == "dead-letter-discarded"
    assert job.runs == runs_before + 1
    row = rounds.queue.get(UUID(view.id))
    assert row is not None and row.state == "discarded" and row.attempts == 4
    [fresh] = rounds.queue.open_items(KIND, [JOB]).values()
    assert fresh.id != row.id and fresh.attempts == 1
    letter = services.event_log.read(DeadLetter, dead_letter_id(row.id))
    assert letter is not None and letter.discarded
    assert letter.last_reason == "the feed was retired"
    assert dead_letters.list_dead_letters(services) == []
    assert {v.state for v in dead_letters.list_dead_letters(services, include_closed=True)} == {
        "discarded"
    }


def test_a_discard_whose_row_change_was_lost_is_applied_again_without_a_second_event(
    services: Services, clock: FixedClock
) -> None:
    rounds = rounds_of(services, clock)
    kill(rounds, clock, Flaky())
    [view] = dead_letters.list_dead_letters(services)
    job_id = UUID(view.id)

    def recorded_only(unit: UnitOfWork) -> None:
        # What the log holds when the decision committed and the row's commit then failed.
        letter = unit.add(DeadLetter(dead_letter_id(job_id), job_id, KIND))
        letter.discard("the feed was retired", view.attempts, view.error)

    services.event_log.execute(operator(clock), recorded_only)
    assert dead_letters.list_dead_letters(services)[0].state == "dead"  # the row lost it

    again = dead_letters.discard_dead_letter(services, operator(clock), view.id, "retired")

    assert again.state == "discarded"
    with psycopg.connect(services.url) as conn:
        decisions = conn.execute(
            "SELECT count(*) FROM pumpparty_events WHERE topic LIKE %s",
            ("%DeadLetter.Discarded",),
        ).fetchone()
    assert decisions == (1,)


def test_a_dead_job_whose_probe_succeeds_clears_its_dead_letter(
    services: Services, clock: FixedClock
) -> None:
    rounds = rounds_of(services, clock)
    job = Flaky()
    kill(rounds, clock, job)
    [view] = dead_letters.list_dead_letters(services)
    job.broken = False  # the outage ends; nobody replayed

    probe = rounds.run(JOB, job)

    assert probe.ran and probe.error is None and job.runs == POLICY.max_attempts + 1
    assert dead_letters.list_dead_letters(services) == []
    assert dead_letters.dead_letter_counts(services) == {}
    row = rounds.queue.get(UUID(view.id))
    assert row is not None and row.state == "succeeded" and row.attempts == 4


def test_a_success_before_the_last_attempt_closes_the_retry(
    services: Services, clock: FixedClock
) -> None:
    rounds = rounds_of(services, clock)
    job = Flaky()
    rounds.run(JOB, job)
    clock.advance(seconds=POLICY.backoff_max)
    job.broken = False

    ran = rounds.run(JOB, job)

    assert ran.error is None and rounds.queue.open_items(KIND, [JOB]) == {}
    assert dead_letters.list_dead_letters(services, include_closed=True) == []


class FailingOnPosition3(AuditLog):
    """The audit log with a handler bug on one event (position 3)."""

    def process_event(self, domain_event, tracking):  # type: ignore[no-untyped-def,override]
        if tracking.notification_id == 3:
            raise ValueError("bug on position 3")
        return super().process_event(domain_event, tracking)


def test_a_stalled_projection_is_a_dead_letter_and_discard_skips_it_with_the_reason(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    append_events(services, context, 6)
    services.projections.classes["audit_log"] = FailingOnPosition3  # type: ignore[assignment]
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()

    [view] = dead_letters.list_dead_letters(services)
    counts = dead_letters.dead_letter_counts(services)
    with pytest.raises(DiscardReasonMissingError):
        dead_letters.discard_dead_letter(services, operator(clock), view.id, "")
    discarded = dead_letters.discard_dead_letter(
        services, operator(clock, "admin:0xabc"), "projection.audit_log", "known bad, ticket 42"
    )
    services.projections.classes["audit_log"] = AuditLog
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()

    assert (view.id, view.kind, view.state) == ("projection.audit_log",) * 2 + ("dead",)
    assert view.subject is not None and view.subject.startswith("position 3:")
    assert view.error is not None and "bug on position 3" in view.error
    assert counts == {"projection.audit_log": 1}
    assert discarded.state == "discarded"
    assert [s["reason"] for s in services.projections.skips("audit_log")] == [
        "known bad, ticket 42"
    ]
    assert services.projections.status("audit_log").status == "caught_up"
    assert dead_letters.list_dead_letters(services) == []
    with pytest.raises(DeadLetterNotFoundError):
        dead_letters.show_dead_letter(services, "projection.audit_log")
    letter_id = dead_letter_id(stall_id("audit_log", 3))
    letter = services.event_log.read(DeadLetter, letter_id)
    assert letter is not None and letter.last_reason == "known bad, ticket 42"
    with psycopg.connect(services.url) as conn:
        audited = conn.execute(
            "SELECT event_type, actor FROM audit_log WHERE aggregate_id = %s ORDER BY position",
            (letter_id,),
        ).fetchall()
    assert audited == [("Opened", "admin:0xabc"), ("Discarded", "admin:0xabc")]
    assert checksum(services.url)[0] == 5 + 2  # six events less the skipped, plus two


def test_replaying_a_stalled_projection_retries_the_event(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    append_events(services, context, 6)
    services.projections.classes["audit_log"] = FailingOnPosition3  # type: ignore[assignment]
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()
    services.projections.classes["audit_log"] = AuditLog  # the fix is deployed

    replayed = dead_letters.replay_dead_letter(
        services, operator(clock), "projection.audit_log", "fix deployed"
    )
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()

    assert replayed.state == "replayed"
    assert checksum(services.url)[0] == 6 + 2
    with pytest.raises(DeadLetterNotFoundError):
        dead_letters.replay_dead_letter(services, operator(clock), "projection.audit_log", "again")


def test_pumpparty_dead_letters_lists_shows_replays_and_discards(
    services: Services, clock: FixedClock, database_url: str, tmp_path: Path
) -> None:
    rounds = rounds_of(services, clock)
    kill(rounds, clock, Flaky())
    [first] = dead_letters.list_dead_letters(services)
    other = "other_job"
    for _ in range(POLICY.max_attempts):
        rounds.run(other, Flaky())
        clock.advance(seconds=POLICY.backoff_max)
    [second] = dead_letters.list_dead_letters(services, kind=f"scheduled.{other}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPPARTY_")}
    env |= {"PUMPPARTY_DATABASE_URL": database_url, "PUMPPARTY_DATA_DIR": str(tmp_path)}

    def pumpparty(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scripts.cli", "dead-letters", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = pumpparty("list")
    shown = pumpparty("show", first.id)
    missing = pumpparty("show", "projection.audit_log")
    no_reason = pumpparty("discard", second.id, "--reason", "   ")
    discarded = pumpparty("discard", second.id, "--reason", "job retired")
    replayed = pumpparty("replay", first.id, "--reason", "fixed upstream")
    refused = pumpparty("replay", second.id, "--reason", "try it anyway")
    unexplained = pumpparty("replay", first.id)
    closed = pumpparty("list", "--all", "--kind", KIND)

    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [second.id, first.id]
    assert KIND in listed.stdout and "upstream down" in listed.stdout
    assert shown.returncode == 0, shown.stderr
    body = orjson.loads(shown.stdout)
    assert (body["id"], body["kind"], body["attempts"], body["state"]) == (
        first.id,
        KIND,
        4,
        "dead",
    )
    assert missing.returncode == 1 and "not stalled" in missing.stderr
    assert no_reason.returncode == 1 and "needs a reason" in no_reason.stderr
    assert discarded.returncode == 0, discarded.stderr
    assert replayed.returncode == 0, replayed.stderr
    assert refused.returncode == 1 and "discarded" in refused.stderr
    assert unexplained.returncode == 2 and "--reason" in unexplained.stderr
    assert closed.returncode == 0 and first.id in closed.stdout and "replayed" in closed.stdout
    states = {v.id: v.state for v in dead_letters.list_dead_letters(services, include_closed=True)}
    assert states == {first.id: "replayed", second.id: "discarded"}
    letter = services.event_log.read(DeadLetter, dead_letter_id(UUID(second.id)))
    assert letter is not None and letter.last_reason == "job retired"


def test_the_worker_records_a_failed_round_on_the_queue_and_waits_for_its_retry(
    services: Services, clock: FixedClock
) -> None:
    worker = Worker(services)
    runs: list[int] = []

    def broken() -> None:
        runs.append(1)
        raise RuntimeError("feed down")

    worker.register_job("feed", broken, 0.001)  # in-round retries wait a thousandth of that
    worker._run_job(worker.jobs["feed"])
    worker._run_job(worker.jobs["feed"])  # the next tick, on the same clock: not due yet

    assert len(runs) == JOB_ATTEMPTS, "one round of in-round retries, then the tick waited"
    [retry] = worker.rounds.queue.open_items("scheduled.feed", ["feed"]).values()
    assert (retry.state, retry.attempts, retry.last_error) == (
        "queued",
        1,
        "RuntimeError: feed down",
    )
    with psycopg.connect(services.url) as conn:
        beat = conn.execute(
            "SELECT last_error FROM worker_heartbeats WHERE job = 'feed'"
        ).fetchone()
    assert beat == ("RuntimeError: feed down",)
