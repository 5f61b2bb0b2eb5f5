"""Payout authorization: maker-checker approval of money held in pending transfers.

A `RacePayout` is requested by whoever settled the race (the maker), with the SHA-256
digest of the payout table and the pending transfers that carry it. Admins other than the
maker approve it, each approval bound to the digest the approver saw (a different one is
refused: the table changed). It posts only with enough approvals still within their time
to live (two distinct approvers at or above the dual-approval amount, else one); an
approval that lapsed counts for nothing and never moves money by itself. Rejected, its
pending transfers are voided. The aggregate never reads the clock: times are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import ConflictError, NotPermittedError


class PayoutStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    POSTED = "posted"
    REJECTED = "rejected"


def payout_id_for(race_id: UUID, settlement: int) -> UUID:
    """One payout per settlement of a race (a rejected one may be settled again)."""
    return derive_id("RacePayout", f"{race_id}:{settlement}")


class MakerCannotApproveError(NotPermittedError):
    code = "maker-cannot-approve"


class PayoutTableChangedError(ConflictError):
    code = "payout-table-changed"


class PayoutNotAwaitingError(ConflictError):
    code = "payout-not-awaiting-approval"


class ApprovalsMissingError(ConflictError):
    code = "approvals-missing"


@dataclass(frozen=True)
class Approval:
    approver: str
    digest: str
    approved_at: datetime

    def valid(self, digest: str, now: datetime, ttl: timedelta) -> bool:
        return self.digest == digest and now < self.approved_at + ttl


class RacePayout(DomainAggregate):
    class Requested(DomainAggregate.Created):
        race_id: UUID
        settlement: int
        maker: str
        table_digest: str
        total_minor: int
        transfers: list[UUID]
        required_approvals: int
        approval_ttl_seconds: int

    class Approved(DomainAggregate.Event):
        approver: str
        digest: str
        approved_at: datetime

    class Posted(DomainAggregate.Event):
        approvers: list[str]
        reason: str

    class Rejected(DomainAggregate.Event):
        reason: str

    @event(Requested)
    def __init__(
        self,
        id: UUID,
        race_id: UUID,
        settlement: int,
        maker: str,
        table_digest: str,
        total_minor: int,
        transfers: list[UUID],
        required_approvals: int,
        approval_ttl_seconds: int,
    ) -> None:
        self.race_id = race_id
        self.settlement = settlement
        self.maker = maker
        self.table_digest = table_digest
        self.total_minor = total_minor
        self.transfers = transfers
        self.required_approvals = required_approvals
        self.approval_ttl_seconds = approval_ttl_seconds
        self.status: str = PayoutStatus.AWAITING_APPROVAL.value
        self.approvals: list[dict[str, Any]] = []

    @classmethod
    def request(
        cls,
        *,
        race_id: UUID,
        settlement: int,
        maker: str,
        table_digest: str,
        total_minor: int,
        transfers: list[UUID],
        dual_approval_minor: int,
        approval_ttl: timedelta,
    ) -> RacePayout:
        return cls(
            id=payout_id_for(race_id, settlement),
            race_id=race_id,
            settlement=settlement,
            maker=maker,
            table_digest=table_digest,
            total_minor=total_minor,
            transfers=transfers,
            required_approvals=2 if total_minor >= dual_approval_minor else 1,
            approval_ttl_seconds=int(approval_ttl.total_seconds()),
        )

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.approval_ttl_seconds)

    def valid_approvers(self, now: datetime) -> list[str]:
        """The distinct approvers whose approval of this table is still within its TTL."""
        approvals = [Approval(**a) for a in self.approvals]
        return sorted({a.approver for a in approvals if a.valid(self.table_digest, now, self.ttl)})

    def approve(self, approver: str, digest: str, now: datetime) -> None:
        """An admin other than the maker approves the table they saw; the same approver
        again (while their approval stands) changes nothing."""
        self.check_awaiting()
        if approver == self.maker:
            raise MakerCannotApproveError("the maker of a payout cannot approve it")
        if digest != self.table_digest:
            raise PayoutTableChangedError("this is not the payout table awaiting approval")
        if approver in self.valid_approvers(now):
            return
        self._approved(approver=approver, digest=digest, approved_at=now)

    def post(self, now: datetime, reason: str) -> None:
        self.check_awaiting()
        approvers = self.valid_approvers(now)
        if len(approvers) < self.required_approvals:
            raise ApprovalsMissingError(
                f"{len(approvers)} of {self.required_approvals} approvals are in force"
            )
        self._posted(approvers=approvers, reason=reason)

    def reject(self, reason: str) -> None:
        self.check_awaiting()
        self._rejected(reason=reason)

    def check_awaiting(self) -> None:
        if self.status != PayoutStatus.AWAITING_APPROVAL:
            raise PayoutNotAwaitingError(f"the payout is {self.status}")

    @event(Approved)
    def _approved(self, approver: str, digest: str, approved_at: datetime) -> None:
        self.approvals = [
            *self.approvals,
            {"approver": approver, "digest": digest, "approved_at": approved_at},
        ]

    @event(Posted)
    def _posted(self, approvers: list[str], reason: str) -> None:
        self.status = PayoutStatus.POSTED.value

    @event(Rejected)
    def _rejected(self, reason: str) -> None:
        self.status = PayoutStatus.REJECTED.value
