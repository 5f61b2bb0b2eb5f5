"""Balance deposits: status, reason, confirmations, what is on its way and what was credited,
for their owners, the balance's pending part, and the deposit poller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL

from aggregates.deposits import Deposit
from projections import purchases
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class DepositsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "deposits": """(
            deposit_id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            tx_hash text NOT NULL,
            status text NOT NULL,
            reason text,
            confirmations integer NOT NULL DEFAULT 0,
            incoming_minor bigint NOT NULL DEFAULT 0,
            amount_minor bigint,
            block_number bigint,
            position bigint NOT NULL,
            submitted_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )"""
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "deposits": ["(status, submitted_at)", "(user_id, position)"]
    }

    def submit(
        self, deposit_id: UUID, user_id: UUID, tx_hash: str, position: int, at: datetime
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (deposit_id, user_id, tx_hash, status, position, submitted_at,"
                " updated_at) VALUES (%s, %s, %s, 'pending_confirmations', %s, %s, %s)"
            ).format(self.table("deposits")),
            (deposit_id, user_id, tx_hash, position, at, at),
        )

    def update(self, deposit_id: UUID, at: datetime, **changes: Any) -> None:
        self.update_row("deposits", "deposit_id", deposit_id, **changes, updated_at=at)


class Deposits(ReadModel[DepositsView]):
    name = "deposits"
    view_class = DepositsView
    topics = topics_of(
        Deposit.Submitted,
        Deposit.Incoming,
        Deposit.StillPending,
        Deposit.Verified,
        Deposit.Rejected,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Deposit.Submitted, tracking: Tracking) -> None:
        self.view.submit(
            event.originator_id,
            event.user_id,
            event.tx_hash,
            tracking.notification_id,
            event.timestamp,
        )

    @process_event.register
    def _(self, event: Deposit.Incoming, tracking: Tracking) -> None:
        self.view.update(event.originator_id, event.timestamp, incoming_minor=event.amount_minor)

    @process_event.register
    def _(self, event: Deposit.StillPending, tracking: Tracking) -> None:
        self.view.update(
            event.originator_id,
            event.timestamp,
            reason=event.reason,
            confirmations=event.confirmations,
        )

    @process_event.register
    def _(self, event: Deposit.Verified, tracking: Tracking) -> None:
        self.view.update(
            event.originator_id,
            event.timestamp,
            status="verified",
            reason=None,
            confirmations=event.confirmations,
            incoming_minor=0,
            amount_minor=event.paid_minor,
            block_number=event.block_number,
        )

    @process_event.register
    def _(self, event: Deposit.Rejected, tracking: Tracking) -> None:
        self.view.update(
            event.originator_id,
            event.timestamp,
            status="rejected",
            reason=event.reason,
            incoming_minor=0,
        )


def pending_payments(
    datastore: PostgresDatastore, limit: int | None = None, per_user: int | None = None
) -> list[UUID]:
    """Purchases and deposits the deposit poller should look at again, in one round shared
    fairly across users as `purchases.pending_purchases` shares purchases: every user's
    oldest pending payment first, then every user's second, ..., at most `per_user` of one
    user's (`purchases.POLL_PER_USER`) and `limit` in all (`purchases.POLL_ROUND`)."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT payment_id FROM ("
            "  SELECT payment_id, submitted_at, row_number() OVER ("
            "    PARTITION BY user_id ORDER BY submitted_at, payment_id) AS turn"
            "  FROM ("
            "    SELECT purchase_id AS payment_id, user_id, submitted_at FROM purchases"
            "    WHERE status = 'pending_confirmations'"
            "    UNION ALL"
            "    SELECT deposit_id, user_id, submitted_at FROM deposits"
            "    WHERE status = 'pending_confirmations'"
            "  ) payments"
            ") pending WHERE turn <= %s ORDER BY turn, submitted_at, payment_id LIMIT %s",
            (per_user or purchases.POLL_PER_USER, limit or purchases.POLL_ROUND),
        )
        return [row["payment_id"] for row in cursor.fetchall()]


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepositRow:
    deposit_id: UUID
    user_id: UUID
    tx_hash: str
    status: str
    reason: str | None
    confirmations: int
    incoming_minor: int
    amount_minor: int | None
    position: int
    submitted_at: datetime
    updated_at: datetime


async def deposit_by_id(reads: ProjectionReads, deposit_id: UUID) -> DepositRow | None:
    query = SQL("SELECT {} FROM deposits WHERE deposit_id = %s").format(columns(DepositRow))
    return await reads.one(DepositRow, query, (deposit_id,))


async def deposits_of_user(reads: ProjectionReads, user_id: UUID, page: Page) -> list[DepositRow]:
    """A page of the user's deposits, oldest first (cursor: position)."""
    query = SQL(
        "SELECT {} FROM deposits WHERE user_id = %s AND position > %s ORDER BY position LIMIT %s"
    ).format(columns(DepositRow))
    return await reads.all(DepositRow, query, (user_id, page.position(), page.fetch))
