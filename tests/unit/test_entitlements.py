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


# --- mutation gaps: ids, what the events record, revocation -----------------------------------


def test_an_entitlements_id_comes_from_its_purchase() -> None:
    from aggregates.base import derive_id
    from aggregates.entitlements import entitlement_id_for

    purchase = uuid4()

    assert entitlement_id_for(purchase) == derive_id("Entitlement", str(purchase))
    assert entitlement_id_for(purchase) != entitlement_id_for(uuid4())


def test_a_restore_records_the_audition_and_the_reason() -> None:
    entitlement = granted()
    with acting(CONTEXT):
        entitlement.consume(AUDITION)
        entitlement.collect_events()
        entitlement.restore(AUDITION, "audition voided")
    [restored] = entitlement.collect_events()

    assert isinstance(restored, Entitlement.Restored)
    assert (restored.audition_id, restored.reason) == (AUDITION, "audition voided")
    assert entitlement.consumed_by is None


def test_an_entitlement_is_revoked_once_with_its_reason() -> None:
    entitlement = granted()
    entitlement.collect_events()

    with acting(CONTEXT):
        entitlement.revoke("chargeback")
        with pytest.raises(EntitlementNotAvailableError):
            entitlement.revoke("again")
    [revoked] = entitlement.collect_events()

    assert isinstance(revoked, Entitlement.Revoked) and revoked.reason == "chargeback"
    assert entitlement.status is EntitlementStatus.REVOKED
    with acting(CONTEXT), pytest.raises(EntitlementNotAvailableError):
        entitlement.consume(AUDITION)


def test_a_revoked_entitlement_is_not_restored() -> None:
    entitlement = granted()
    with acting(CONTEXT):
        entitlement.consume(AUDITION)
        entitlement.revoke("chargeback")

    with acting(CONTEXT), pytest.raises(EntitlementNotConsumedError):
        entitlement.restore(AUDITION, "voided")
