"""Payouts awaiting authorization and their history: each race payout with its table's
digest, total, the approvals it holds, and the pending transfers that carry it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from aggregates.payouts import PayoutStatus, RacePayout
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns
from runtime.transcoder import jsonable


class PayoutsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "payouts": """(
            payout_id uuid PRIMARY KEY,
            race_id uuid NOT NULL,
            settlement integer NOT NULL,
            status text NOT NULL,
            maker text NOT NULL,
            table_digest text NOT NULL,
            total_minor bigint NOT NULL,
            transfers uuid[] NOT NULL,
            required_approvals integer NOT NULL,
            approval_ttl_seconds integer NOT NULL,
            approvals jsonb NOT NULL DEFAULT '[]',
            requested_at timestamptz NOT NULL,
            resolved_at timestamptz,
            resolved_by text,
            reason text,
            position bigint NOT NULL UNIQUE,
            resolved_position bigint
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {"payouts": ["(status, position)"]}

    def request(self, event: RacePayout.Requested, position: int) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (payout_id, race_id, settlement, status, maker, table_digest,"
                " total_minor, transfers, required_approvals, approval_ttl_seconds,"
                " requested_at, position)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("payouts")),
            (
                event.originator_id,
                event.race_id,
                event.settlement,
                PayoutStatus.AWAITING_APPROVAL.value,
                event.maker,
                event.table_digest,
                event.total_minor,
                event.transfers,
                event.required_approvals,
                event.approval_ttl_seconds,
                event.timestamp,
                position,
            ),
        )

    def approve(self, event: RacePayout.Approved, position: int) -> None:
        approval = {
            "approver": event.approver,
            "digest": event.digest,
            "approved_at": event.approved_at,
            "position": position,
        }
        self.cursor.execute(
            SQL("UPDATE {} SET approvals = approvals || %s WHERE payout_id = %s").format(
                self.table("payouts")
            ),
            (Jsonb([jsonable(approval)]), event.originator_id),
        )

    def resolve(self, event: Any, status: PayoutStatus, position: int) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %s, resolved_at = %s, resolved_by = %s, reason = %s,"
                " resolved_position = %s WHERE payout_id = %s"
            ).format(self.table("payouts")),
            (
                status.value,
                event.timestamp,
                event.actor,
                event.reason,
                position,
                event.originator_id,
            ),
        )


class Payouts(ReadModel[PayoutsView]):
    name = "payouts"
    view_class = PayoutsView
    topics = topics_of(
        RacePayout.Requested, RacePayout.Approved, RacePayout.Posted, RacePayout.Rejected
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: RacePayout.Requested, tracking: Tracking) -> None:
        self.view.request(event, tracking.notification_id)

    @process_event.register
    def _(self, event: RacePayout.Approved, tracking: Tracking) -> None:
        self.view.approve(event, tracking.notification_id)

    @process_event.register
    def _(self, event: RacePayout.Posted, tracking: Tracking) -> None:
        self.view.resolve(event, PayoutStatus.POSTED, tracking.notification_id)

    @process_event.register
    def _(self, event: RacePayout.Rejected, tracking: Tracking) -> None:
        self.view.resolve(event, PayoutStatus.REJECTED, tracking.notification_id)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayoutRow:
    payout_id: UUID
    race_id: UUID
    settlement: int
    status: str
    maker: str
    table_digest: str
    total_minor: int
    required_approvals: int
    approval_ttl_seconds: int
    approvals: list[dict[str, Any]]
    requested_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    reason: str | None
    position: int


@dataclass(frozen=True, slots=True)
class HeldTransferRow:
    """One pending transfer a payout holds (from the ledger's model)."""

    transfer_id: UUID
    debit_account: str
    credit_account: str
    amount_minor: int
    cause: str
    status: str


async def payouts(reads: ProjectionReads, status: str | None, page: Page) -> list[PayoutRow]:
    query = SQL(
        "SELECT {} FROM payouts WHERE (%s::text IS NULL OR status = %s) AND position > %s"
        " ORDER BY position LIMIT %s"
    ).format(columns(PayoutRow))
    return await reads.all(PayoutRow, query, (status, status, page.position(), page.fetch))


async def payout_by_id(reads: ProjectionReads, payout_id: UUID) -> PayoutRow | None:
    query = SQL("SELECT {} FROM payouts WHERE payout_id = %s").format(columns(PayoutRow))
    return await reads.one(PayoutRow, query, (payout_id,))


async def held_transfers(reads: ProjectionReads, payout_id: UUID) -> list[HeldTransferRow]:
    """The pending transfers a payout holds, as the ledger has them, in cause order."""
    query = SQL(
        "SELECT {} FROM ledger_pending WHERE transfer_id = ANY("
        "SELECT unnest(transfers) FROM payouts WHERE payout_id = %s) ORDER BY cause"
    ).format(columns(HeldTransferRow))
    return await reads.all(HeldTransferRow, query, (payout_id,))
