"""Withdrawals: each with its status and why, its approval, its custody lease (custodian,
fencing token, expiry), the transactions reported for it and how each was judged; for
their owners, admins, custody's lease queue, the deposit poller (reported transactions
still being verified) and reconciliation (when its ledger transfer posted)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from aggregates.ledger import PendingTransfer
from aggregates.withdrawals import Withdrawal, WithdrawalStatus, withdrawal_transfer_id
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class WithdrawalsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "withdrawals": """(
            withdrawal_id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            maker text NOT NULL,
            wallet text NOT NULL,
            amount_minor bigint NOT NULL,
            transfer_id uuid NOT NULL UNIQUE,
            required_approvals integer NOT NULL,
            status text NOT NULL,
            reason text,
            approved_by text,
            resolved_by text,
            custodian text,
            fencing_token integer NOT NULL DEFAULT 0,
            lease_expires_at timestamptz,
            tx_hash text,
            tx_status text,
            confirmations integer NOT NULL DEFAULT 0,
            block_number bigint,
            block_hash text,
            paid_minor bigint,
            attempts jsonb NOT NULL DEFAULT '[]',
            position bigint NOT NULL UNIQUE,
            status_position bigint NOT NULL,
            transfer_posted_position bigint,
            requested_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )"""
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "withdrawals": ["(user_id, position)", "(status, position)"]
    }

    def request(self, event: Withdrawal.Requested, transfer_id: UUID, position: int) -> None:
        required = event.required_approvals
        status = (
            WithdrawalStatus.AUTHORIZED if required == 0 else WithdrawalStatus.AWAITING_APPROVAL
        )
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (withdrawal_id, user_id, maker, wallet, amount_minor, transfer_id,"
                " required_approvals, status, position, status_position, requested_at,"
                " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("withdrawals")),
            (
                event.originator_id,
                event.user_id,
                event.maker,
                event.wallet,
                event.amount_minor,
                transfer_id,
                required,
                status.value,
                position,
                position,
                event.timestamp,
                event.timestamp,
            ),
        )

    def update(self, event: Any, position: int, **changes: Any) -> None:
        """Set these columns; a change of `status` moves `status_position` too."""
        if "status" in changes:
            changes["status_position"] = position
        self.update_row(
            "withdrawals",
            "withdrawal_id",
            event.originator_id,
            **changes,
            updated_at=event.timestamp,
        )

    def attempt(self, event: Withdrawal.Executed, position: int) -> None:
        """A reported transaction: the withdrawal is being verified, and the report is kept."""
        self.update(
            event,
            position,
            status=WithdrawalStatus.EXECUTED.value,
            reason=None,
            tx_hash=event.tx_hash,
            tx_status="pending_confirmations",
            confirmations=0,
        )
        attempt = {
            "tx_hash": event.tx_hash,
            "fencing_token": event.fencing_token,
            "custodian": event.actor,
            "reported_at": event.reported_at.isoformat(),
            "status": "pending_confirmations",
            "reason": None,
        }
        self.cursor.execute(
            SQL("UPDATE {} SET attempts = attempts || %s WHERE withdrawal_id = %s").format(
                self.table("withdrawals")
            ),
            (Jsonb([attempt]), event.originator_id),
        )

    def judge_attempt(self, withdrawal_id: UUID, status: str, reason: str | None) -> None:
        """How the last reported transaction was judged."""
        self.cursor.execute(
            SQL(
                "UPDATE {} SET attempts = jsonb_set(attempts,"
                " ARRAY[(jsonb_array_length(attempts) - 1)::text],"
                " (attempts -> -1) || jsonb_build_object('status', %s::text, 'reason', %s::text))"
                " WHERE withdrawal_id = %s"
            ).format(self.table("withdrawals")),
            (status, reason, withdrawal_id),
        )

    def transfer_posted(self, transfer_id: UUID, position: int) -> None:
        """The ledger posted a pending transfer; if it is a withdrawal's, note where (what
        reconciliation compares `treasury:outgoing`'s entries against)."""
        self.cursor.execute(
            SQL("UPDATE {} SET transfer_posted_position = %s WHERE transfer_id = %s").format(
                self.table("withdrawals")
            ),
            (position, transfer_id),
        )


class Withdrawals(ReadModel[WithdrawalsView]):
    name = "withdrawals"
    view_class = WithdrawalsView
    topics = topics_of(
        Withdrawal.Requested,
        Withdrawal.Approved,
        Withdrawal.Rejected,
        Withdrawal.Leased,
        Withdrawal.Executed,
        Withdrawal.StillPending,
        Withdrawal.Verified,
        Withdrawal.TxRejected,
        Withdrawal.Cancelled,
        PendingTransfer.Posted,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Withdrawal.Requested, tracking: Tracking) -> None:
        transfer_id = withdrawal_transfer_id(event.originator_id)
        self.view.request(event, transfer_id, tracking.notification_id)

    @process_event.register
    def _(self, event: Withdrawal.Approved, tracking: Tracking) -> None:
        self.view.update(
            event,
            tracking.notification_id,
            status=WithdrawalStatus.AUTHORIZED.value,
            approved_by=event.approver,
            reason=event.reason,
        )

    @process_event.register
    def _(self, event: Withdrawal.Rejected, tracking: Tracking) -> None:
        self.view.update(
            event,
            tracking.notification_id,
            status=WithdrawalStatus.REJECTED.value,
            resolved_by=event.actor,
            reason=event.reason,
        )

    @process_event.register
    def _(self, event: Withdrawal.Leased, tracking: Tracking) -> None:
        self.view.update(
            event,
            tracking.notification_id,
            status=WithdrawalStatus.LEASED.value,
            custodian=event.custodian,
            fencing_token=event.fencing_token,
            lease_expires_at=event.lease_expires_at,
        )

    @process_event.register
    def _(self, event: Withdrawal.Executed, tracking: Tracking) -> None:
        self.view.attempt(event, tracking.notification_id)

    @process_event.register
    def _(self, event: Withdrawal.StillPending, tracking: Tracking) -> None:
        self.view.update(
            event, tracking.notification_id, reason=event.reason, confirmations=event.confirmations
        )

    @process_event.register
    def _(self, event: Withdrawal.Verified, tracking: Tracking) -> None:
        self.view.update(
            event,
            tracking.notification_id,
            status=WithdrawalStatus.POSTED.value,
            reason=None,
            tx_status="verified",
            confirmations=event.confirmations,
            block_number=event.block_number,
            block_hash=event.block_hash,
            paid_minor=event.paid_minor,
        )
        self.view.judge_attempt(event.originator_id, "verified", None)

    @process_event.register
    def _(self, event: Withdrawal.TxRejected, tracking: Tracking) -> None:
        self.view.update(
            event,
            tracking.notification_id,
            status=WithdrawalStatus.AUTHORIZED.value,
            reason=event.reason,
            tx_status="rejected",
            confirmations=event.confirmations,
            custodian=None,
            lease_expires_at=None,
        )
        self.view.judge_attempt(event.originator_id, "rejected", event.reason)

    @process_event.register
    def _(self, event: Withdrawal.Cancelled, tracking: Tracking) -> None:
        self.view.update(
            event,
            tracking.notification_id,
            status=WithdrawalStatus.CANCELLED.value,
            resolved_by=event.actor,
            reason=event.reason,
        )

    @process_event.register
    def _(self, event: PendingTransfer.Posted, tracking: Tracking) -> None:
        self.view.transfer_posted(event.originator_id, tracking.notification_id)


def leasable_withdrawals(
    datastore: PostgresDatastore, now: datetime, limit: int = 10
) -> list[UUID]:
    """The oldest withdrawals custody may lease now, as far as this model has read: the
    authorized, and the leased whose lease ran out. The lease itself decides on the
    aggregate, so a stale row costs a skipped candidate, never a double lease."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT withdrawal_id FROM withdrawals WHERE status = 'authorized'"
            " OR (status = 'leased' AND lease_expires_at <= %s) ORDER BY position LIMIT %s",
            (now, limit),
        )
        return [row["withdrawal_id"] for row in cursor.fetchall()]


def withdrawals_to_verify(datastore: PostgresDatastore, limit: int = 500) -> list[UUID]:
    """Withdrawals whose reported transaction the deposit poller should look at again,
    oldest report first."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT withdrawal_id FROM withdrawals WHERE status = 'executed'"
            " ORDER BY status_position LIMIT %s",
            (limit,),
        )
        return [row["withdrawal_id"] for row in cursor.fetchall()]


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WithdrawalRow:
    withdrawal_id: UUID
    user_id: UUID
    maker: str
    wallet: str
    amount_minor: int
    transfer_id: UUID
    required_approvals: int
    status: str
    reason: str | None
    approved_by: str | None
    resolved_by: str | None
    custodian: str | None
    fencing_token: int
    lease_expires_at: datetime | None
    tx_hash: str | None
    tx_status: str | None
    confirmations: int
    block_number: int | None
    paid_minor: int | None
    attempts: list[dict[str, Any]]
    position: int
    requested_at: datetime
    updated_at: datetime


async def withdrawal_by_id(reads: ProjectionReads, withdrawal_id: UUID) -> WithdrawalRow | None:
    query = SQL("SELECT {} FROM withdrawals WHERE withdrawal_id = %s").format(
        columns(WithdrawalRow)
    )
    return await reads.one(WithdrawalRow, query, (withdrawal_id,))


async def withdrawals_of_user(
    reads: ProjectionReads, user_id: UUID, page: Page
) -> list[WithdrawalRow]:
    """A page of the user's withdrawals, oldest first (cursor: position)."""
    query = SQL(
        "SELECT {} FROM withdrawals WHERE user_id = %s AND position > %s ORDER BY position LIMIT %s"
    ).format(columns(WithdrawalRow))
    return await reads.all(WithdrawalRow, query, (user_id, page.position(), page.fetch))


async def withdrawals(
    reads: ProjectionReads, status: str | None, page: Page
) -> list[WithdrawalRow]:
    """A page of every withdrawal, oldest first, narrowed by status (cursor: position)."""
    query = SQL(
        "SELECT {} FROM withdrawals WHERE (%s::text IS NULL OR status = %s) AND position > %s"
        " ORDER BY position LIMIT %s"
    ).format(columns(WithdrawalRow))
    return await reads.all(WithdrawalRow, query, (status, status, page.position(), page.fetch))
