"""The audition on its own: attempts, verdicts, the retry policy, voiding.

Given an audition, when a command, then its events, state or error. No database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from aggregates.audition_rules import AuditionRules, Verdict
from aggregates.auditions import (
    Audition,
    AuditionAlreadyVoidedError,
    AuditionNotRetryableError,
    AuditionNotRunningError,
    AuditionStatus,
    EndedBy,
)
from aggregates.base import CommandContext, acting
from aggregates.entitlements import ReasonRequiredError
from aggregates.prop_rules import rule_set

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RULES = AuditionRules.on(
    rule_set("audition", 1),  # its loss limits: 5% a day, 10% from the peak
    duration_seconds=2 * 24 * 3600,
    starting_equity=Decimal("10000"),
    profit_target=Decimal("0.05"),
    min_trades=2,
    min_active_days=2,
    free_retries=1,
    retry_window_seconds=24 * 3600,
)
PASSED = Verdict(passed=True, failed_rules=[], metrics={"total_return": Decimal("0.06")})
FAILED = Verdict(passed=False, failed_rules=["max-drawdown"], metrics={"trades": 3})


def at(moment: datetime) -> CommandContext:
    return CommandContext(actor="worker:test", occurred_at=moment, correlation_id="req-audition")


def started(entitlement_id: UUID | None = None) -> Audition:
    """An audition whose first attempt started at noon."""
    with acting(at(NOON)):
        audition = Audition.submit(
            uuid4(),
            owner_id=uuid4(),
            clone_id=uuid4(),
            version_hash="ab" * 32,
            rules=RULES,
            request_fingerprint="submit-1",
        )
        audition.start_attempt(
            prop_account_id=uuid4(),
            entitlement_id=entitlement_id or uuid4(),
            now=NOON,
            request_key=None,
        )
    return audition


def judged(audition: Audition, verdict: Verdict, when: datetime) -> Audition:
    with acting(at(when)):
        audition.record_verdict(verdict, when, EndedBy.DUE)
    return audition


def retried(audition: Audition, when: datetime, entitlement_id: UUID | None = None) -> Audition:
    with acting(at(when)):
        audition.start_attempt(
            prop_account_id=uuid4(), entitlement_id=entitlement_id, now=when, request_key="again"
        )
    return audition


def event_names(audition: Audition) -> list[str]:
    return [type(e).__name__ for e in audition.collect_events()]


def test_a_submitted_audition_runs_its_first_attempt_until_the_pinned_duration() -> None:
    audition = started()

    assert event_names(audition) == ["Submitted", "AttemptStarted"]
    assert audition.status is AuditionStatus.RUNNING
    assert (audition.current.number, audition.current.due_at) == (1, NOON + 2 * DAY)
    assert audition.rule_set == RULES


def test_an_attempt_is_due_at_its_due_time_and_not_before() -> None:
    audition = started()

    assert not audition.is_due(NOON + 2 * DAY - timedelta(seconds=1))
    assert audition.is_due(NOON + 2 * DAY)


def test_a_verdict_ends_the_attempt_with_its_metrics() -> None:
    audition = judged(started(), FAILED, NOON + 2 * DAY)

    attempt = audition.current
    assert audition.status is AuditionStatus.FAILED
    assert (attempt.status, attempt.failed_rules, attempt.metrics) == (
        AuditionStatus.FAILED,
        ("max-drawdown",),
        {"trades": 3},
    )
    assert (attempt.ended_by, attempt.evaluated_at) == ("due", NOON + 2 * DAY)


def test_a_judged_attempt_is_not_judged_again() -> None:
    audition = judged(started(), PASSED, NOON + 2 * DAY)

    with pytest.raises(AuditionNotRunningError), acting(at(NOON + 3 * DAY)):
        audition.record_verdict(FAILED, NOON + 3 * DAY, EndedBy.DUE)


def test_a_retry_inside_the_window_is_free() -> None:
    audition = judged(started(), FAILED, NOON + 2 * DAY)

    assert audition.retry_is_free(NOON + 3 * DAY)


def test_a_retry_after_the_window_needs_an_entitlement() -> None:
    audition = judged(started(), FAILED, NOON + 2 * DAY)

    assert not audition.retry_is_free(NOON + 3 * DAY + timedelta(seconds=1))


def test_free_retries_run_out() -> None:
    audition = retried(judged(started(), FAILED, NOON + 2 * DAY), NOON + 2 * DAY)
    judged(audition, FAILED, NOON + 4 * DAY)

    assert audition.free_retries_used() == 1
    assert not audition.retry_is_free(NOON + 4 * DAY)


def test_a_retry_keeps_every_attempt() -> None:
    audition = retried(judged(started(), FAILED, NOON + 2 * DAY), NOON + 2 * DAY)

    first, second = audition.attempts
    assert (first.status, second.status) == (AuditionStatus.FAILED, AuditionStatus.RUNNING)
    assert second.number == 2 and second.prop_account_id != first.prop_account_id
    assert second.due_at == NOON + 4 * DAY
    assert audition.attempt_for_key("again") == second


@pytest.mark.parametrize("verdict", [None, PASSED])
def test_only_a_failed_audition_may_be_retried(verdict: Verdict | None) -> None:
    audition = started() if verdict is None else judged(started(), verdict, NOON + 2 * DAY)

    with pytest.raises(AuditionNotRetryableError):
        retried(audition, NOON + 2 * DAY)


def test_voiding_ends_the_running_attempt_and_names_what_was_restored() -> None:
    entitlement_id = uuid4()
    audition = started(entitlement_id)

    with acting(at(NOON + DAY)):
        audition.void("data outage", entitlement_id)

    assert audition.status is AuditionStatus.VOIDED
    assert audition.current.status is AuditionStatus.VOIDED
    assert (audition.void_reason, audition.restored_entitlement_id) == (
        "data outage",
        entitlement_id,
    )


def test_voiding_twice_is_refused() -> None:
    audition = started()
    with acting(at(NOON + DAY)):
        audition.void("data outage", None)

    with pytest.raises(AuditionAlreadyVoidedError), acting(at(NOON + DAY)):
        audition.void("data outage", None)


def test_a_voided_audition_is_never_judged() -> None:
    audition = started()
    with acting(at(NOON + DAY)):
        audition.void("data outage", None)

    with pytest.raises(AuditionNotRunningError), acting(at(NOON + 2 * DAY)):
        audition.record_verdict(PASSED, NOON + 2 * DAY, EndedBy.DUE)


def test_voiding_needs_a_reason() -> None:
    with pytest.raises(ReasonRequiredError), acting(at(NOON)):
        started().void("  ", None)


def test_a_judged_attempt_keeps_its_verdict_when_voided_later() -> None:
    audition = judged(started(), FAILED, NOON + 2 * DAY)

    with acting(at(NOON + 3 * DAY)):
        audition.void("cheating found", None)

    assert audition.current.status is AuditionStatus.FAILED
    assert audition.status is AuditionStatus.VOIDED
