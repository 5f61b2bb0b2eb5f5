"""Ledger entries and balances: two entries per posted transfer (one per side), summing to
zero, and every pending (two-phase) transfer with its status: the amounts reserved out of
an account and on their way into it. A pending transfer makes entries only when posted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL

from aggregates.ledger import PendingTransfer, Transfer
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class LedgerView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "ledger_entries": """(
            transfer_id uuid NOT NULL,
            account text NOT NULL,
            counterparty text NOT NULL,
            amount_minor bigint NOT NULL,
            cause text NOT NULL,
            position bigint NOT NULL,
            posted_at timestamptz NOT NULL,
            PRIMARY KEY (transfer_id, account)
        )""",
        "ledger_balances": """(
            account text PRIMARY KEY,
            balance_minor bigint NOT NULL,
            entries integer NOT NULL
        )""",
        "ledger_pending": """(
            transfer_id uuid PRIMARY KEY,
            debit_account text NOT NULL,
            credit_account text NOT NULL,
            amount_minor bigint NOT NULL,
            cause text NOT NULL,
            status text NOT NULL,
            expires_at timestamptz,
            reserved_at timestamptz NOT NULL,
            resolved_at timestamptz,
            position bigint NOT NULL UNIQUE,
            resolved_position bigint
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "ledger_entries": ["(account, position)"],
        "ledger_pending": ["(debit_account, status)", "(credit_account, status)"],
    }

    def reserve(self, transfer: PendingTransfer.Reserved, position: int) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (transfer_id, debit_account, credit_account, amount_minor, cause,"
                " status, expires_at, reserved_at, position)"
                " VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s, %s)"
            ).format(self.table("ledger_pending")),
            (
                transfer.originator_id,
                transfer.debit_account,
                transfer.credit_account,
                transfer.amount_minor,
                transfer.cause,
                transfer.expires_at,
                transfer.timestamp,
                position,
            ),
        )

    def resolve(self, transfer_id: UUID, status: str, at: datetime, position: int) -> None:
        """Mark a pending transfer posted (and make its entries) or voided."""
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %s, resolved_at = %s, resolved_position = %s"
                " WHERE transfer_id = %s"
                " RETURNING debit_account, credit_account, amount_minor, cause"
            ).format(self.table("ledger_pending")),
            (status, at, position, transfer_id),
        )
        row = self.cursor.fetchone()
        if status == "posted" and row is not None:
            self._both_sides(
                transfer_id,
                row["debit_account"],
                row["credit_account"],
                row["amount_minor"],
                row["cause"],
                position,
                at,
            )

    def post(self, transfer: Transfer.Posted, position: int) -> None:
        self._both_sides(
            transfer.originator_id,
            transfer.debit_account,
            transfer.credit_account,
            transfer.amount_minor,
            transfer.cause,
            position,
            transfer.timestamp,
        )

    def _both_sides(
        self,
        transfer_id: UUID,
        debit: str,
        credit: str,
        amount: int,
        cause: str,
        position: int,
        at: datetime,
    ) -> None:
        for account, counterparty, signed in ((credit, debit, amount), (debit, credit, -amount)):
            self._entry(transfer_id, account, counterparty, signed, cause, position, at)

    def _entry(
        self,
        transfer_id: UUID,
        account: str,
        counterparty: str,
        amount: int,
        cause: str,
        position: int,
        at: datetime,
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (transfer_id, account, counterparty, amount_minor, cause, position, posted_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("ledger_entries")),
            (transfer_id, account, counterparty, amount, cause, position, at),
        )
        self.cursor.execute(
            SQL(
                "INSERT INTO {} AS b (account, balance_minor, entries) VALUES (%s, %s, 1)"
                " ON CONFLICT (account) DO UPDATE SET balance_minor = b.balance_minor + EXCLUDED.balance_minor,"
                " entries = b.entries + 1"
            ).format(self.table("ledger_balances")),
            (account, amount),
        )


class LedgerEntries(ReadModel[LedgerView]):
    name = "ledger"
    view_class = LedgerView
    topics = topics_of(
        Transfer.Posted,
        PendingTransfer.Reserved,
        PendingTransfer.Posted,
        PendingTransfer.Voided,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Transfer.Posted, tracking: Tracking) -> None:
        self.view.post(event, tracking.notification_id)

    @process_event.register
    def _(self, event: PendingTransfer.Reserved, tracking: Tracking) -> None:
        self.view.reserve(event, tracking.notification_id)

    @process_event.register
    def _(self, event: PendingTransfer.Posted, tracking: Tracking) -> None:
        self.view.resolve(event.originator_id, "posted", event.timestamp, tracking.notification_id)

    @process_event.register
    def _(self, event: PendingTransfer.Voided, tracking: Tracking) -> None:
        self.view.resolve(event.originator_id, "voided", event.timestamp, tracking.notification_id)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntryRow:
    transfer_id: UUID
    counterparty: str
    amount_minor: int
    cause: str
    position: int
    posted_at: datetime


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """An account's money in minor units: `posted` (the sum of its entries), `reserved`
    (held by pending transfers out of it), `incoming` (pending transfers into it)."""

    posted_minor: int
    reserved_minor: int
    incoming_minor: int

    @property
    def available_minor(self) -> int:
        """What may be spent: posted, less what pending transfers hold."""
        return self.posted_minor - self.reserved_minor


_BALANCE = (
    "SELECT coalesce((SELECT balance_minor FROM ledger_balances WHERE account = %(a)s), 0)"
    " AS posted_minor, (SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_pending"
    " WHERE debit_account = %(a)s AND status = 'pending') AS reserved_minor,"
    " (SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_pending"
    " WHERE credit_account = %(a)s AND status = 'pending') AS incoming_minor"
)


async def balance_of(reads: ProjectionReads, account: str) -> BalanceRow:
    """The account's balances (all 0 for an account with no entries yet)."""
    row = await reads.one(BalanceRow, SQL(_BALANCE), {"a": account})
    return row or BalanceRow(0, 0, 0)


async def entries_of_account(
    reads: ProjectionReads, account: str, page: Page
) -> list[LedgerEntryRow]:
    """A page of the account's entries, in log order (cursor: position)."""
    query = SQL(
        "SELECT {} FROM ledger_entries WHERE account = %s AND position > %s"
        " ORDER BY position, transfer_id LIMIT %s"
    ).format(columns(LedgerEntryRow))
    return await reads.all(LedgerEntryRow, query, (account, page.position(), page.fetch))


@dataclass(frozen=True, slots=True)
class UserBalance:
    """A user's money in minor units. `posted`: the sum of the account's posted entries.
    `reserved`: held by pending transfers out (a withdrawal on its way). `pending`: on its
    way in, not spendable: deposits not yet credited (as far as the chain has shown them)
    and pending transfers in (a payout awaiting authorization). `available`: posted less
    reserved, what may be spent."""

    posted_minor: int
    reserved_minor: int
    pending_minor: int

    @property
    def available_minor(self) -> int:
        return self.posted_minor - self.reserved_minor


async def user_balance(reads: ProjectionReads, user_id: UUID, account: str) -> UserBalance:
    """The user's balances from this model and pending deposits from the `deposits` model,
    read in one statement."""
    query = SQL(
        "SELECT b.posted_minor, b.reserved_minor, b.incoming_minor + (SELECT"
        " coalesce(sum(incoming_minor), 0)::bigint FROM deposits WHERE user_id = %(u)s"
        " AND status = 'pending_confirmations') AS pending_minor FROM (" + _BALANCE + ") b"
    )
    row = await reads.one(UserBalance, query, {"a": account, "u": user_id})
    return row or UserBalance(0, 0, 0)
