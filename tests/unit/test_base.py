from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from aggregates.base import CommandContext, acting, derive_id
from aggregates.errors import MissingCommandContextError
from tests.support.counter import Counter, new_counter

NOON = datetime(2026, 11, 25, 12, tzinfo=UTC)
CONTEXT = CommandContext(
    actor="admin:RETRO", occurred_at=NOON, correlation_id="req-1", causation_id="evt-0"
)


def test_events_record_the_command_context() -> None:
    with acting(CONTEXT):
        counter = new_counter("RETRO-CLOCK")
        counter.increment(by=3)

    opened, incremented = counter.collect_events()

    assert (opened.actor, opened.correlation_id, opened.causation_id) == (
        "admin:RETRO",
        "req-1",
        "evt-0",
    )  # type: ignore[attr-defined]
    assert incremented.timestamp == NOON and counter.count == 3


def test_no_event_without_a_command() -> None:
    with pytest.raises(MissingCommandContextError):
        Counter(id=uuid4(), name="x", balance_minor=0, rate=0)


def test_replay_ignores_the_current_context() -> None:
    with acting(CONTEXT):
        counter = new_counter("RETRO-CLOCK")
        counter.increment(by=1)
    events = counter.collect_events()
    later = CommandContext(
        actor="other", occurred_at=datetime(2030, 1, 1, tzinfo=UTC), correlation_id="req-2"
    )

    with acting(later):
        replayed = None
        for event in events:
            replayed = event.mutate(replayed)

    assert replayed is not None and replayed.modified_on == NOON


def test_ids_from_the_same_key_are_the_same() -> None:
    assert derive_id("Purchase", "key-1") == derive_id("Purchase", "key-1")
    assert derive_id("Purchase", "key-1") != derive_id("Purchase", "key-2")
    assert derive_id("Purchase", "key-1") != derive_id("Claim", "key-1")
