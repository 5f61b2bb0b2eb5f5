from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from aggregates.base import CommandContext
from projections.audit_log import AuditLog
from projections.reads import ProjectionReads
from projections.rebuild import rebuild
from projections.registry import PROJECTIONS
from projections.runner import ProjectionRunner
from projections.state import ProjectionNotStalledError
from services.bootstrap import Services
from services.ledger import post_transfer
from tests.support.counter import new_counter
from tests.support.log import append_events, checksum

PROJECTION_NAMES = {cls.name for cls in PROJECTIONS}


def test_runner_projects_every_event_once(services: Services, context: CommandContext) -> None:
    append_events(services, context, 120)
    runner = ProjectionRunner(services.projections, "audit_log", services.url, batch_size=7)

    applied = runner.catch_up()

    assert applied == 120
    assert checksum(services.url)[0] == 120
    assert services.projections.status("audit_log").lag == 0


def test_audit_log_flattens_metadata(services: Services, context: CommandContext) -> None:
    counter_id = services.event_log.execute(
        context, lambda unit: unit.add(new_counter("RETRO-CLOCK")).id
    ).result
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()

    with psycopg.connect(services.url) as conn:
        row = conn.execute(
            "SELECT aggregate_id, aggregate_type, event_type, version, actor, correlation_id,"
            " occurred_at FROM audit_log"
        ).fetchone()

    assert row == (
        counter_id,
        "Counter",
        "Opened",
        1,
        "user:tester",
        "req-RETRO-CLOCK",
        context.occurred_at,
    )


def test_rebuild_matches_live_and_reads_never_fail(
    services: Services, context: CommandContext
) -> None:
    append_events(services, context, 5000)
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()
    live = checksum(services.url)
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read_all_the_time() -> None:
        with psycopg.connect(services.url, autocommit=True) as conn:
            while not done.is_set():
                try:
                    seen.append(conn.execute("SELECT count(*) FROM audit_log").fetchone()[0])  # type: ignore[index]
                except BaseException as error:
                    errors.append(error)

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    generation = rebuild(services.projections, "audit_log", batch_size=500)
    done.set()
    reader.join()

    assert generation == 2
    assert checksum(services.url) == live
    assert errors == []
    assert seen and set(seen) == {5000}


def test_live_runner_follows_the_new_generation_after_rebuild(
    services: Services, context: CommandContext
) -> None:
    append_events(services, context, 30)
    runner = ProjectionRunner(services.projections, "audit_log", services.url)
    runner.catch_up()
    rebuild(services.projections, "audit_log")

    append_events(services, context, 10)
    runner.catch_up()

    assert checksum(services.url)[0] == 40


class FailingOnIncrement(AuditLog):
    """The audit log with a handler bug on one event (position 3)."""

    def process_event(self, domain_event, tracking):  # type: ignore[no-untyped-def,override]
        if tracking.notification_id == 3 and self.view.generation == 1:  # type: ignore[attr-defined]
            raise ValueError("bug on position 3")
        return super().process_event(domain_event, tracking)


@pytest.fixture
def failing(services: Services) -> Services:
    services.projections.classes["audit_log"] = FailingOnIncrement  # type: ignore[assignment]
    return services


def test_failing_event_stalls_the_projection_there(
    failing: Services, context: CommandContext
) -> None:
    append_events(failing, context, 6)
    runner = ProjectionRunner(failing.projections, "audit_log", failing.url)

    runner.catch_up()

    status = failing.projections.status("audit_log")
    assert status.status == "stalled"
    assert status.stalled_position == 3 and status.position == 2
    assert "bug on position 3" in (status.stalled_error or "")
    assert checksum(failing.url)[0] == 2


def test_skip_records_the_reason_and_moves_past(failing: Services, context: CommandContext) -> None:
    append_events(failing, context, 6)
    runner = ProjectionRunner(failing.projections, "audit_log", failing.url)
    runner.catch_up()

    skipped = failing.projections.skip("audit_log", reason="known bad event, ticket 42")
    runner.catch_up()

    assert skipped == 3
    assert [s["reason"] for s in failing.projections.skips("audit_log")] == [
        "known bad event, ticket 42"
    ]
    assert checksum(failing.url)[0] == 5
    assert failing.projections.status("audit_log").status == "caught_up"


def test_resume_after_a_fix_retries_the_event(failing: Services, context: CommandContext) -> None:
    append_events(failing, context, 6)
    runner = ProjectionRunner(failing.projections, "audit_log", failing.url)
    runner.catch_up()
    failing.projections.classes["audit_log"] = AuditLog  # the fix is deployed
    runner = ProjectionRunner(failing.projections, "audit_log", failing.url)

    failing.projections.resume("audit_log")
    runner.catch_up()

    assert checksum(failing.url)[0] == 6


def test_resume_without_a_stall_is_refused(services: Services) -> None:
    with pytest.raises(ProjectionNotStalledError):
        services.projections.resume("audit_log")


# --- one reader for every projection -------------------------------------------------------


def test_one_reader_gives_a_transaction_only_to_projections_with_events_to_apply(
    services: Services, context: CommandContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_events(services, context, 60)  # counters: only the audit log handles them
    commits: list[str] = []
    commit = ProjectionRunner._commit

    def counting(
        self: ProjectionRunner, connection: Any, track: Any, *args: Any, **kw: Any
    ) -> None:
        commits.append(track.name)
        commit(self, connection, track, *args, **kw)

    monkeypatch.setattr(ProjectionRunner, "_commit", counting)
    runner = ProjectionRunner(services.projections, None, services.url, batch_size=7)

    assert runner.catch_up() == 60  # each event read once, for all fourteen
    assert commits == ["audit_log"] * 9  # ceil(60 / 7) batches, no one else's
    statuses = services.projections.statuses()
    assert len(statuses) == len(PROJECTIONS)
    assert {s.name: s.position for s in statuses} == {s.name: 60 for s in statuses}
    assert checksum(services.url)[0] == 60


def test_quiet_projections_reach_the_head_so_read_your_writes_waits_finish(
    services: Services, context: CommandContext
) -> None:
    runner = ProjectionRunner(services.projections, None, services.url)
    stop = threading.Event()
    following = threading.Thread(target=runner.run, args=(stop,), kwargs={"idle_wait": 5.0})
    following.start()
    try:
        for _ in range(3):  # while it follows: each time, every projection reaches the head
            append_events(services, context, 20)
            head = services.projections.status("audit_log").head

            async def wait_for_all(head: int = head) -> list[bool]:
                reads = ProjectionReads(services.url)
                try:
                    return [await reads.wait_until(n, head, 5.0) for n in sorted(PROJECTION_NAMES)]
                finally:
                    await reads.close()

            assert all(asyncio.run(wait_for_all()))
    finally:
        stop.set()
        following.join()
    assert all(s.lag == 0 for s in services.projections.statuses())


def test_a_commit_the_database_lost_is_replayed_never_skipped(
    services: Services, context: CommandContext
) -> None:
    """What a crash does to commits made without fsync: rows and position go back together.
    The runner remembers only which events a projection does not handle, never a position."""
    runner = ProjectionRunner(services.projections, ["audit_log", "ledger"], services.url)
    append_events(services, context, 10)
    runner.catch_up()
    user = uuid4()
    services.event_log.execute(
        context, lambda unit: post_transfer(unit, "lost-in-a-crash", "house", f"user:{user}", 7)
    )
    runner.catch_up()
    expected = checksum(services.url, "ledger_entries")
    append_events(services, context, 10)  # nothing for the ledger: it only moves its position
    runner.catch_up()
    assert services.projections.position("ledger") == services.projections.status("ledger").head

    with psycopg.connect(services.url) as conn:  # the crash: back to before the transfer
        conn.execute("DELETE FROM ledger_entries__g1")
        conn.execute("DELETE FROM ledger_balances__g1")
        conn.execute(
            "UPDATE ledger__g1_tracking SET notification_id = 10 WHERE application_name <> '__migration__'"
        )
    runner.catch_up()

    assert expected[0] > 0 and checksum(services.url, "ledger_entries") == expected
    rebuild(services.projections, "ledger")
    assert checksum(services.url, "ledger_entries") == expected


def test_rebuild_takes_only_its_topics_and_ends_at_the_head(
    services: Services, context: CommandContext
) -> None:
    append_events(services, context, 30)
    user = uuid4()
    services.event_log.execute(
        context, lambda unit: post_transfer(unit, "rebuilt", "house", f"user:{user}", 3)
    )
    append_events(services, context, 5)
    runner = ProjectionRunner(services.projections, "ledger", services.url)
    runner.catch_up()
    live = checksum(services.url, "ledger_entries")
    head = services.projections.status("ledger").head

    assert rebuild(services.projections, "ledger", batch_size=2) == 2

    assert checksum(services.url, "ledger_entries") == live
    assert services.projections.status("ledger").position == head
