"""An audition entitlement: granted by a verified purchase, consumed by an audition,
restored when that audition is voided, or revoked by an admin."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import ConflictError, InvalidCommandError


class EntitlementStatus(StrEnum):
    AVAILABLE = "available"
    CONSUMED = "consumed"
    REVOKED = "revoked"


def entitlement_id_for(purchase_id: UUID) -> UUID:
    return derive_id("Entitlement", str(purchase_id))


class EntitlementNotAvailableError(ConflictError):
    code = "entitlement-not-available"


class EntitlementNotConsumedError(ConflictError):
    code = "entitlement-not-consumed"


class ReasonRequiredError(InvalidCommandError):
    code = "reason-required"


class Entitlement(DomainAggregate):
    class Granted(DomainAggregate.Created):
        user_id: UUID
        purchase_id: UUID
        kind: str

    class Consumed(DomainAggregate.Event):
        audition_id: UUID

    class Restored(DomainAggregate.Event):
        audition_id: UUID
        reason: str

    class Revoked(DomainAggregate.Event):
        reason: str

    @event(Granted)
    def __init__(self, id: UUID, user_id: UUID, purchase_id: UUID, kind: str) -> None:
        self.user_id = user_id
        self.purchase_id = purchase_id
        self.kind = kind
        self.status = EntitlementStatus.AVAILABLE
        self.consumed_by: UUID | None = None

    def consume(self, audition_id: UUID) -> None:
        if self.status is not EntitlementStatus.AVAILABLE:
            raise EntitlementNotAvailableError(f"the entitlement is {self.status.value}")
        self._consumed(audition_id=audition_id)

    def restore(self, audition_id: UUID, reason: str) -> None:
        if self.status is not EntitlementStatus.CONSUMED or self.consumed_by != audition_id:
            raise EntitlementNotConsumedError("the entitlement is not held by that audition")
        self._restored(audition_id=audition_id, reason=reason)

    def revoke(self, reason: str) -> None:
        if not reason.strip():
            raise ReasonRequiredError("a revocation needs a reason")
        if self.status is EntitlementStatus.REVOKED:
            raise EntitlementNotAvailableError("the entitlement is already revoked")
        self._revoked(reason=reason)

    @event(Consumed)
    def _consumed(self, audition_id: UUID) -> None:
        self.status = EntitlementStatus.CONSUMED
        self.consumed_by = audition_id

    @event(Restored)
    def _restored(self, audition_id: UUID, reason: str) -> None:
        self.status = EntitlementStatus.AVAILABLE
        self.consumed_by = None

    @event(Revoked)
    def _revoked(self, reason: str) -> None:
        self.status = EntitlementStatus.REVOKED
