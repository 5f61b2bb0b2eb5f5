from __future__ import annotations

import threading
from decimal import Decimal
from uuid import uuid4

import psycopg
import pytest

from aggregates.base import CommandContext, derive_id
from aggregates.errors import ConcurrencyConflictError, IdempotencyKeyReusedError
from aggregates.ledger import TREASURY, user_account
from projections.audit_chain import verify
from services.bootstrap import Services
from services.ledger import post_transfer
from tests.support.counter import Counter, new_counter
from tests.support.log import append_events

RATE = Decimal("0.000123456789012345678901")


def open_counter(services: Services, context: CommandContext, name: str = "RETRO-CLOCK") -> Counter:
    written = services.event_log.execute(
        context, lambda unit: unit.add(new_counter(name, 25_000_000, RATE))
    )
    return written.result


@pytest.mark.parametrize(
    "statement", ["UPDATE {t} SET topic = 'x'", "DELETE FROM {t}", "TRUNCATE {t}"]
)
def test_events_table_refuses_changes(
    services: Services, context: CommandContext, statement: str
) -> None:
    open_counter(services, context)
    # The service's role has no right to change the log; its owner is stopped by the trigger.
    refusals = [
        (services.url, "permission denied"),
        (services.settings.database_url, "append-only"),
    ]

    for url, refusal in refusals:
        with (
            psycopg.connect(url, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal),
        ):
            conn.execute(statement.format(t=services.event_log.events_table))


def test_money_round_trips_exactly(services: Services, context: CommandContext) -> None:
    counter = open_counter(services, context)

    loaded = services.event_log.repository.get(counter.id)

    assert loaded.balance_minor == 25_000_000
    assert loaded.rate == RATE and isinstance(loaded.rate, Decimal)


def test_events_carry_command_metadata(services: Services, context: CommandContext) -> None:
    counter = open_counter(services, context)

    [opened] = list(services.event_log.events.get(counter.id))

    assert opened.actor == "user:tester"  # type: ignore[attr-defined]
    assert opened.correlation_id == "req-RETRO-CLOCK"  # type: ignore[attr-defined]
    assert opened.timestamp == context.occurred_at
    assert opened.schema_version == 1  # type: ignore[attr-defined]


def test_command_returns_the_position_it_wrote(services: Services, context: CommandContext) -> None:
    counter = open_counter(services, context)

    written = services.event_log.execute(
        context, lambda unit: unit.get(Counter, counter.id).increment(by=1)
    )

    assert written.position == services.event_log.recorder.max_notification_id()


def test_one_command_saves_several_aggregates_atomically(
    services: Services, context: CommandContext
) -> None:
    first = open_counter(services, context, "first")
    taken = open_counter(services, context, "taken")
    second_id = derive_id("Counter", "second")

    def touch_both(unit):  # type: ignore[no-untyped-def]
        unit.get(Counter, first.id).increment(by=5)
        unit.add(Counter(id=second_id, name="second", balance_minor=0, rate=RATE))
        # A stale copy of another aggregate makes the whole save conflict.
        stale = services.event_log.repository.get(taken.id)
        services.event_log.execute(
            context, lambda other: other.get(Counter, taken.id).increment(by=1)
        )
        unit.add(stale).increment(by=1)

    services.event_log.command_retries = 0
    with pytest.raises(ConcurrencyConflictError):
        services.event_log.execute(context, touch_both)

    assert services.event_log.repository.get(first.id).count == 0
    assert list(services.event_log.events.get(second_id)) == []


def test_idempotent_create_returns_the_first_result(
    services: Services, context: CommandContext
) -> None:
    def create(unit):  # type: ignore[no-untyped-def]
        return unit.create_once(
            Counter,
            "key-1",
            "body-A",
            lambda id: Counter(
                id=id, name="once", balance_minor=1, rate=RATE, request_fingerprint="body-A"
            ),
        ).id

    first = services.event_log.execute(context, create)
    again = services.event_log.execute(context, create)

    assert first.result == again.result == derive_id("Counter", "key-1")
    assert again.position == first.position
    assert len(list(services.event_log.events.get(first.result))) == 1


def test_same_key_with_another_body_is_refused(services: Services, context: CommandContext) -> None:
    def create(body: str):  # type: ignore[no-untyped-def]
        return lambda unit: unit.create_once(
            Counter,
            "key-2",
            body,
            lambda id: Counter(
                id=id, name="once", balance_minor=1, rate=RATE, request_fingerprint=body
            ),
        )

    services.event_log.execute(context, create("body-A"))

    with pytest.raises(IdempotencyKeyReusedError):
        services.event_log.execute(context, create("body-B"))


def test_concurrent_commands_on_one_aggregate_lose_no_update(
    services: Services, context: CommandContext
) -> None:
    counter = open_counter(services, context)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def increment() -> None:
        barrier.wait()
        try:
            services.event_log.execute(
                context, lambda unit: unit.get(Counter, counter.id).increment(by=1)
            )
            outcomes.append("applied")
        except ConcurrencyConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=increment) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert services.event_log.repository.get(counter.id).count == outcomes.count("applied")
    assert len(outcomes) == 8 and outcomes.count("applied") >= 1


def test_retries_exhausted_is_a_clean_conflict(services: Services, context: CommandContext) -> None:
    counter = open_counter(services, context)
    services.event_log.command_retries = 0

    def lose_the_race(unit):  # type: ignore[no-untyped-def]
        loaded = unit.get(Counter, counter.id)
        # Another writer commits between our load and our save.
        services.event_log.execute(
            context, lambda other: other.get(Counter, counter.id).increment(by=10)
        )
        loaded.increment(by=1)

    with pytest.raises(ConcurrencyConflictError):
        services.event_log.execute(context, lose_the_race)

    assert services.event_log.repository.get(counter.id).count == 10


# --- the audit chain covers every column that says what happened ---------------------------


def tamper_event(services: Services, assignment: str, position: int) -> None:
    """What the append-only trigger stops: only the tables' owner (here the superuser the
    tests migrate with, not the service's role) can disable it and do this."""
    table = services.event_log.events_table
    with psycopg.connect(services.settings.database_url) as conn:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        changed = conn.execute(
            f"UPDATE {table} SET {assignment} WHERE notification_id = %s", (position,)
        ).rowcount
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    assert changed == 1


def credit_a_user(services: Services, context: CommandContext) -> int:
    """A deposit on a user's balance; answers the position of the `Credited` event."""
    user_id = uuid4()
    services.event_log.execute(
        context,
        lambda unit: post_transfer(unit, f"deposit:{user_id}", TREASURY, user_account(user_id), 7),
    )
    append_events(services, context, 3)  # the tampered event is not the chain's head
    with psycopg.connect(services.url) as conn:
        row = conn.execute(
            f"SELECT notification_id FROM {services.event_log.events_table}"
            " WHERE topic LIKE '%%UserAccount.Credited'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "assignment",
    [
        pytest.param("topic = replace(topic, 'Credited', 'Debited')", id="credited-relabelled"),
        pytest.param("originator_id = gen_random_uuid()", id="originator-id"),
        pytest.param("originator_version = originator_version + 100", id="version"),
    ],
)
def test_the_audit_chain_catches_a_changed_topic_originator_or_version(
    services: Services, context: CommandContext, assignment: str
) -> None:
    position = credit_a_user(services, context)
    assert verify(services.url).ok

    tamper_event(services, assignment, position)
    verification = verify(services.url)

    assert (verification.first_bad_position, verification.problem) == (
        position,
        "the event was altered",
    )
