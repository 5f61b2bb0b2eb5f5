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


# --- mutation gaps: what each event records, and which tokens a family issued ---------------


def test_a_family_starts_with_its_id_user_and_expiries() -> None:
    session_id, user_id = uuid4(), uuid4()
    with acting(CONTEXT):
        session = Session.start(
            id=session_id, user_id=user_id, token_hash="h1", now=NOW, ttl=TTL, lifetime=TTL * 3
        )

    assert (session.id, session.user_id, session.current_hash) == (session_id, user_id, "h1")
    assert session.refresh_expires_at == NOW + TTL
    assert session.absolute_expires_at == NOW + TTL * 3
    assert session.is_active and session.revoked_reason is None


def test_a_reuse_records_the_presented_token_and_why_the_family_was_revoked() -> None:
    session = started()
    with acting(CONTEXT):
        session.refresh("h1", "h2", NOW, TTL)
        session.collect_events()
        session.refresh("h1", "h3", NOW, TTL)
    reuse, revoked = session.collect_events()

    assert isinstance(reuse, Session.ReuseDetected) and reuse.presented_hash == "h1"
    assert isinstance(revoked, Session.Revoked) and revoked.reason == "refresh-token-reuse"
    assert session.revoked_reason == "refresh-token-reuse"


def test_a_family_knows_every_token_it_issued_and_no_other() -> None:
    session = started()
    with acting(CONTEXT):
        session.refresh("h1", "h2", NOW, TTL)

    assert session.issued("h2") and session.issued("h1")
    assert not session.issued("h3")


def test_revoking_records_the_reason_once() -> None:
    session = started()
    session.collect_events()

    with acting(CONTEXT):
        session.revoke("logout")
        session.revoke("again")
    [revoked] = session.collect_events()

    assert isinstance(revoked, Session.Revoked) and revoked.reason == "logout"
    assert session.revoked_reason == "logout" and not session.is_active
