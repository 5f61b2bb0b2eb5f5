"""Log order never skips: many concurrent writers, one live follower, no event missed."""

from __future__ import annotations

import threading

import psycopg

from aggregates.base import CommandContext
from projections.runner import ProjectionRunner
from services.bootstrap import Services
from tests.support.counter import Counter, new_counter

WRITERS = 8
COMMANDS_EACH = 60


def test_a_live_follower_misses_nothing_under_concurrent_writers(
    services: Services, context: CommandContext
) -> None:
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

    def write(counter_id: object) -> None:
        for _ in range(COMMANDS_EACH):
            services.event_log.execute(
                context, lambda unit: unit.get(Counter, counter_id).increment(by=1)
            )

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
    assert projected == logged


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
