from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from aggregates.base import CommandContext, acting
from aggregates.sessions import RefreshOutcome, Session

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
TTL = timedelta(days=30)
CONTEXT = CommandContext(actor="session:x", occurred_at=NOW, correlation_id="req-1")


def started(lifetime: timedelta = timedelta(days=90)) -> Session:
    with acting(CONTEXT):
        return Session.start(
            id=uuid4(), user_id=uuid4(), token_hash="h1", now=NOW, ttl=TTL, lifetime=lifetime
        )


def test_refresh_rotates_the_current_token() -> None:
    session = started()

    with acting(CONTEXT):
        outcome = session.refresh("h1", "h2", NOW, TTL)

    assert outcome is RefreshOutcome.ROTATED
    assert session.current_hash == "h2" and session.retired_hashes == ["h1"]


def test_a_retired_token_revokes_the_family() -> None:
    session = started()
    with acting(CONTEXT):
        session.refresh("h1", "h2", NOW, TTL)

    with acting(CONTEXT):
        outcome = session.refresh("h1", "h3", NOW, TTL)

    assert outcome is RefreshOutcome.REUSED
    assert not session.is_active
    assert [type(e).__name__ for e in session.collect_events()][-2:] == ["ReuseDetected", "Revoked"]
    with acting(CONTEXT):
        assert session.refresh("h2", "h4", NOW, TTL) is RefreshOutcome.REVOKED


def test_an_expired_token_does_not_rotate() -> None:
    session = started()

    with acting(CONTEXT):
        outcome = session.refresh("h1", "h2", NOW + TTL, TTL)

    assert outcome is RefreshOutcome.EXPIRED and session.current_hash == "h1"


def test_refresh_never_outlives_the_family() -> None:
    session = started(lifetime=timedelta(days=40))

    with acting(CONTEXT):
        session.refresh("h1", "h2", NOW + timedelta(days=29), TTL)

    assert session.refresh_expires_at == NOW + timedelta(days=40)


def test_an_unknown_token_changes_nothing() -> None:
    session = started()
    session.collect_events()

    with acting(CONTEXT):
        outcome = session.refresh("nope", "h2", NOW, TTL)

    assert outcome is RefreshOutcome.UNKNOWN and session.collect_events() == []
