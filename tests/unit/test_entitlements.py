from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from aggregates.base import CommandContext, acting
from aggregates.entitlements import (
    Entitlement,
    EntitlementNotAvailableError,
    EntitlementNotConsumedError,
    EntitlementStatus,
    ReasonRequiredError,
)

CONTEXT = CommandContext(
    actor="t", occurred_at=datetime(2026, 11, 25, tzinfo=UTC), correlation_id="c"
)
AUDITION = uuid4()


def granted() -> Entitlement:
    with acting(CONTEXT):
        return Entitlement(id=uuid4(), user_id=uuid4(), purchase_id=uuid4(), kind="audition")


def test_consume_then_restore_makes_it_available_again() -> None:
    entitlement = granted()

    with acting(CONTEXT):
        entitlement.consume(AUDITION)
        entitlement.restore(AUDITION, "audition voided")

    assert entitlement.status is EntitlementStatus.AVAILABLE


def test_it_is_consumed_once() -> None:
    entitlement = granted()
    with acting(CONTEXT):
        entitlement.consume(AUDITION)

    with acting(CONTEXT), pytest.raises(EntitlementNotAvailableError):
        entitlement.consume(uuid4())


def test_only_the_consuming_audition_restores_it() -> None:
    entitlement = granted()
    with acting(CONTEXT):
        entitlement.consume(AUDITION)

    with acting(CONTEXT), pytest.raises(EntitlementNotConsumedError):
        entitlement.restore(uuid4(), "voided")


def test_revoking_needs_a_reason() -> None:
    with acting(CONTEXT), pytest.raises(ReasonRequiredError):
        granted().revoke("  ")
