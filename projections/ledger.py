"""Ledger entries and balances: two entries per transfer (one per side), summing to zero."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL

from aggregates.ledger import Transfer
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
    }
    indexes: ClassVar[dict[str, list[str]]] = {"ledger_entries": ["(account, position)"]}

    def post(self, transfer: Transfer.Posted, position: int) -> None:
        for account, counterparty, amount in (
            (transfer.credit_account, transfer.debit_account, transfer.amount_minor),
            (transfer.debit_account, transfer.credit_account, -transfer.amount_minor),
        ):
            self._entry(
                transfer.originator_id,
                account,
                counterparty,
                amount,
                transfer.cause,
                position,
                transfer.timestamp,
            )

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
    topics = topics_of(Transfer.Posted)

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Transfer.Posted, tracking: Tracking) -> None:
        self.view.post(event, tracking.notification_id)


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
    balance_minor: int


async def balance_of(reads: ProjectionReads, account: str) -> int:
    """The account's balance in minor units; 0 for an account with no entries yet."""
    query = SQL("SELECT {} FROM ledger_balances WHERE account = %s").format(columns(BalanceRow))
    row = await reads.one(BalanceRow, query, (account,))
    return row.balance_minor if row else 0


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
    `pending`: what the user's deposits not yet credited carry, as far as the chain has
    shown it (incoming, not spendable). `available`: what may be spent (posted, for now)."""

    posted_minor: int
    pending_minor: int

    @property
    def available_minor(self) -> int:
        return self.posted_minor


async def user_balance(reads: ProjectionReads, user_id: UUID, account: str) -> UserBalance:
    """The user's posted balance (this model) and pending deposits (the `deposits` model),
    read in one statement."""
    query = SQL(
        "SELECT coalesce((SELECT balance_minor FROM ledger_balances WHERE account = %s), 0)"
        " AS posted_minor, (SELECT coalesce(sum(incoming_minor), 0)::bigint FROM deposits"
        " WHERE user_id = %s AND status = 'pending_confirmations') AS pending_minor"
    )
    row = await reads.one(UserBalance, query, (account, user_id))
    return row or UserBalance(0, 0)
