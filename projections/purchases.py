"""Audition purchases: status, reason and confirmations, for their owners and the poller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL

from aggregates.purchases import Purchase
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.reads import ProjectionReads, columns


class PurchasesView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "purchases": """(
            purchase_id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            quote_id uuid NOT NULL,
            tx_hash text NOT NULL,
            status text NOT NULL,
            reason text,
            confirmations integer NOT NULL DEFAULT 0,
            paid_minor bigint,
            block_number bigint,
            submitted_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )"""
    }
    indexes: ClassVar[dict[str, list[str]]] = {"purchases": ["(status, submitted_at)", "(user_id)"]}

    def submit(
        self, purchase_id: UUID, user_id: UUID, quote_id: UUID, tx_hash: str, at: datetime
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (purchase_id, user_id, quote_id, tx_hash, status, submitted_at, updated_at)"
                " VALUES (%s, %s, %s, %s, 'pending_confirmations', %s, %s)"
            ).format(self.table("purchases")),
            (purchase_id, user_id, quote_id, tx_hash, at, at),
        )

    def update(self, purchase_id: UUID, at: datetime, **changes: Any) -> None:
        self.update_row("purchases", "purchase_id", purchase_id, **changes, updated_at=at)


class Purchases(ReadModel[PurchasesView]):
    name = "purchases"
    view_class = PurchasesView
    topics = topics_of(
        Purchase.Submitted, Purchase.StillPending, Purchase.Verified, Purchase.Rejected
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Purchase.Submitted, tracking: Tracking) -> None:
        self.view.submit(
            event.originator_id, event.user_id, event.quote_id, event.tx_hash, event.timestamp
        )

    @process_event.register
    def _(self, event: Purchase.StillPending, tracking: Tracking) -> None:
        self.view.update(
            event.originator_id,
            event.timestamp,
            reason=event.reason,
            confirmations=event.confirmations,
        )

    @process_event.register
    def _(self, event: Purchase.Verified, tracking: Tracking) -> None:
        self.view.update(
            event.originator_id,
            event.timestamp,
            status="verified",
            reason=None,
            confirmations=event.confirmations,
            paid_minor=event.paid_minor,
            block_number=event.block_number,
        )

    @process_event.register
    def _(self, event: Purchase.Rejected, tracking: Tracking) -> None:
        self.view.update(
            event.originator_id, event.timestamp, status="rejected", reason=event.reason
        )


POLL_ROUND = 500
"""At most this many purchases are checked in one round of the deposit poller."""
POLL_PER_USER = 5
"""At most this many of one user's purchases are checked in one round."""


def pending_purchases(
    datastore: PostgresDatastore, limit: int | None = None, per_user: int | None = None
) -> list[UUID]:
    """Purchases the deposit poller should look at again, shared fairly across users:
    round robin (every user's oldest pending first, then every user's second, ...), at
    most `per_user` of one user's, oldest first within each user. One user's many
    pending purchases never starve another's."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT purchase_id FROM ("
            "  SELECT purchase_id, submitted_at, row_number() OVER ("
            "    PARTITION BY user_id ORDER BY submitted_at, purchase_id) AS turn"
            "  FROM purchases WHERE status = 'pending_confirmations'"
            ") pending WHERE turn <= %s ORDER BY turn, submitted_at, purchase_id LIMIT %s",
            (per_user or POLL_PER_USER, limit or POLL_ROUND),
        )
        return [row["purchase_id"] for row in cursor.fetchall()]


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurchaseRow:
    purchase_id: UUID
    user_id: UUID
    quote_id: UUID
    tx_hash: str
    status: str
    reason: str | None
    confirmations: int
    paid_minor: int | None
    submitted_at: datetime
    updated_at: datetime


async def purchase_by_id(reads: ProjectionReads, purchase_id: UUID) -> PurchaseRow | None:
    query = SQL("SELECT {} FROM purchases WHERE purchase_id = %s").format(columns(PurchaseRow))
    return await reads.one(PurchaseRow, query, (purchase_id,))
