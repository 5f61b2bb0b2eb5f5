"""Log order never skips: many concurrent writers, one live follower, no event missed."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from eventsourcing.persistence import Tracking

from aggregates.base import CommandContext
from projections.audit_log import AuditLog
from projections.runner import ProjectionRunner
from services.bootstrap import Services
from tests.support.counter import Counter, new_counter

WRITERS = 32
COMMANDS_EACH = 15


def test_a_live_follower_sees_every_event_once_in_order_under_32_writers(
    services: Services, context: CommandContext
) -> None:
    seen: list[int] = []

    class Observed(AuditLog):
        """The audit log, noting every event handed to it, in the order it was handed."""

        def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
            seen.append(tracking.notification_id)
            super().process_event(domain_event, tracking)

    services.projections.classes["audit_log"] = Observed
    ids = [
        services.event_log.execute(
            context, lambda unit, n=n: unit.add(new_counter(f"w{n}")).id
        ).result
        for n in range(WRITERS)
    ]
    stop = threading.Event()
    # The follower reads in tiny batches while writers commit, so it is always at the head.
    follower = ProjectionRunner(services.projections, "audit_log", services.url, batch_size=3)
    following = threading.Thread(target=follower.run, args=(stop,), kwargs={"idle_wait": 0.01})
    following.start()

    together = threading.Barrier(WRITERS)
    written_by_halfway = WRITERS * (1 + COMMANDS_EACH // 2)
    caught_up_while_writing = threading.Event()

    def wait_for_the_follower() -> None:
        # Every writer is paused with work left: the follower must reach the head now, live.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(seen) >= written_by_halfway:
                caught_up_while_writing.set()
                return
            time.sleep(0.01)

    halfway = threading.Barrier(WRITERS, action=wait_for_the_follower)

    def increment(counter_id: object) -> None:
        services.event_log.execute(
            context, lambda unit: unit.get(Counter, counter_id).increment(by=1)
        )

    def write(counter_id: object) -> None:
        together.wait()
        for _ in range(COMMANDS_EACH // 2):
            increment(counter_id)
        halfway.wait()
        for _ in range(COMMANDS_EACH - COMMANDS_EACH // 2):
            increment(counter_id)

    writers = [threading.Thread(target=write, args=(counter_id,)) for counter_id in ids]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    following.join()
    follower.catch_up()  # what was appended after its last batch

    with psycopg.connect(services.url) as conn:
        logged = [
            r[0] for r in conn.execute("SELECT notification_id FROM pumpparty_events ORDER BY 1")
        ]
        projected = [r[0] for r in conn.execute("SELECT position FROM audit_log ORDER BY 1")]
    assert len(logged) == WRITERS * (COMMANDS_EACH + 1)
    assert seen == logged  # each event handed over once, in log order, none missed
    assert projected == logged
    assert caught_up_while_writing.is_set()  # it was following, not catching up afterwards


def test_concurrent_appends_leave_no_gaps_in_the_chain(
    services: Services, context: CommandContext
) -> None:
    services.event_log.execute(context, lambda unit: unit.add(new_counter("RETRO-CLOCK")))
    threads = [
        threading.Thread(
            target=lambda: [
                services.event_log.execute(context, lambda unit: unit.add(new_counter("x")))
                for _ in range(20)
            ]
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with psycopg.connect(services.url) as conn:
        # Commit order is visible through the chain: each link was made after the previous.
        rows = conn.execute("SELECT position FROM audit_chain ORDER BY position").fetchall()
    assert [r[0] for r in rows] == list(range(1, 82))


def test_a_large_save_completes(services: Services, context: CommandContext) -> None:
    big = "R" * (2 * 1024 * 1024)

    written = services.event_log.execute(
        context, lambda unit: [unit.add(new_counter(big)).id for _ in range(2)]
    )

    assert written.position == 2
    assert all(services.event_log.repository.get(i).name == big for i in written.result)
