"""Prop equity curve: one point per event of an account that values it, read from the
account's own events, so the curve needs no job and no clock.

The points: `Opened` (the starting equity, nothing held), every `Filled` and `Flattened`
(the valuation after the fill, at the marks it used), and every `Marked` (a revaluation at
marks that moved). An account's curve therefore moves exactly when its equity does; an
idle, frozen or closed account adds nothing. `EquitySnapshotted`, which older logs still
hold, is kept as the point it was. Realized PnL and fees are running totals: each point
adds what its fills realized and paid to the account's previous point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL

from aggregates.prop_accounts import PropAccount
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns

ZERO = Decimal(0)


class PropEquityView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "prop_equity_curve": """(
            account_id uuid NOT NULL,
            position bigint NOT NULL,
            taken_at timestamptz NOT NULL,
            equity numeric NOT NULL,
            balance numeric NOT NULL,
            unrealized_pnl numeric NOT NULL,
            realized_pnl numeric NOT NULL,
            fees_paid numeric NOT NULL,
            margin_used numeric NOT NULL,
            gross_exposure numeric NOT NULL,
            PRIMARY KEY (account_id, position)
        )"""
    }

    def add_point(
        self,
        account_id: UUID,
        position: int,
        taken_at: datetime,
        valuation: Mapping[str, Any],
        realized: Decimal,
        fees: Decimal,
    ) -> None:
        """A point at `valuation`, its realized PnL and fees `realized` and `fees` more than
        the account's previous point's (its first point starts them from zero)."""
        table = self.table("prop_equity_curve")
        previous = SQL(
            "(SELECT {column} FROM {table} WHERE account_id = %(account_id)s"
            " ORDER BY position DESC LIMIT 1)"
        )
        self.cursor.execute(
            SQL(
                "INSERT INTO {table} (account_id, position, taken_at, equity, balance,"
                " unrealized_pnl, realized_pnl, fees_paid, margin_used, gross_exposure)"
                " VALUES (%(account_id)s, %(position)s, %(taken_at)s, %(equity)s, %(balance)s,"
                " %(unrealized)s, coalesce({realized}, 0) + %(realized)s,"
                " coalesce({fees}, 0) + %(fees)s, %(margin_used)s, %(gross_exposure)s)"
            ).format(
                table=table,
                realized=previous.format(column=SQL("realized_pnl"), table=table),
                fees=previous.format(column=SQL("fees_paid"), table=table),
            ),
            {
                **valuation,
                "account_id": account_id,
                "position": position,
                "taken_at": taken_at,
                "realized": realized,
                "fees": fees,
            },
            prepare=True,
        )

    def add_snapshot(
        self,
        account_id: UUID,
        position: int,
        taken_at: datetime,
        valuation: Mapping[str, Any],
        realized_pnl: Decimal,
        fees_paid: Decimal,
    ) -> None:
        """An old log's snapshot: a point with the running totals it recorded itself."""
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (account_id, position, taken_at, equity, balance,"
                " unrealized_pnl, realized_pnl, fees_paid, margin_used, gross_exposure)"
                " VALUES (%(account_id)s, %(position)s, %(taken_at)s, %(equity)s, %(balance)s,"
                " %(unrealized)s, %(realized_pnl)s, %(fees_paid)s, %(margin_used)s,"
                " %(gross_exposure)s)"
            ).format(self.table("prop_equity_curve")),
            {
                **valuation,
                "account_id": account_id,
                "position": position,
                "taken_at": taken_at,
                "realized_pnl": realized_pnl,
                "fees_paid": fees_paid,
            },
        )


def opening_valuation(starting_equity: Decimal) -> dict[str, Decimal]:
    """An account as it opens: its starting equity in cash, nothing held."""
    return {
        "balance": starting_equity,
        "unrealized": ZERO,
        "equity": starting_equity,
        "margin_used": ZERO,
        "gross_exposure": ZERO,
    }


def totals(fills: Sequence[Mapping[str, Any]]) -> tuple[Decimal, Decimal]:
    """What the fills realized, and what they paid in fees."""
    realized = sum((fill["realized_pnl"] for fill in fills), ZERO)
    fees = sum((fill["fee"] for fill in fills), ZERO)
    return realized, fees


class PropEquity(ReadModel[PropEquityView]):
    name = "prop_equity_curve"
    view_class = PropEquityView
    topics = topics_of(
        PropAccount.Opened,
        PropAccount.Filled,
        PropAccount.Marked,
        PropAccount.Flattened,
        PropAccount.EquitySnapshotted,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: PropAccount.Opened, tracking: Tracking) -> None:
        self.view.add_point(
            event.originator_id,
            tracking.notification_id,
            event.timestamp,
            opening_valuation(event.starting_equity),
            ZERO,
            ZERO,
        )

    @process_event.register
    def _(self, event: PropAccount.Filled, tracking: Tracking) -> None:
        realized, fees = totals([event.fill])
        self.view.add_point(
            event.originator_id,
            tracking.notification_id,
            event.timestamp,
            event.valuation,
            realized,
            fees,
        )

    @process_event.register
    def _(self, event: PropAccount.Marked, tracking: Tracking) -> None:
        self.view.add_point(
            event.originator_id,
            tracking.notification_id,
            event.timestamp,
            event.valuation,
            ZERO,
            ZERO,
        )

    @process_event.register
    def _(self, event: PropAccount.Flattened, tracking: Tracking) -> None:
        realized, fees = totals(event.fills)
        self.view.add_point(
            event.originator_id,
            tracking.notification_id,
            event.timestamp,
            event.valuation,
            realized,
            fees,
        )

    @process_event.register
    def _(self, event: PropAccount.EquitySnapshotted, tracking: Tracking) -> None:
        self.view.add_snapshot(
            event.originator_id,
            tracking.notification_id,
            event.timestamp,
            event.valuation,
            event.realized_pnl,
            event.fees_paid,
        )


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EquityPointRow:
    position: int
    taken_at: datetime
    equity: Decimal
    balance: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    margin_used: Decimal
    gross_exposure: Decimal


async def equity_curve_of(
    reads: ProjectionReads, account_id: UUID, page: Page
) -> list[EquityPointRow]:
    """A page of the account's equity curve, oldest point first (cursor: position)."""
    query = SQL(
        "SELECT {} FROM prop_equity_curve WHERE account_id = %s AND position > %s"
        " ORDER BY position LIMIT %s"
    ).format(columns(EquityPointRow))
    return await reads.all(EquityPointRow, query, (account_id, page.position(), page.fetch))
