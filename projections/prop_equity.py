"""Prop equity curve: the equity snapshots each account records on a cadence."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic
from psycopg.sql import SQL

from aggregates.prop_accounts import PropAccount
from projections.base import LedgerProjection, ProjectionView


class PropEquityView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "prop_equity_snapshots": """(
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

    def insert_snapshot(
        self, account_id: UUID, position: int, taken_at: datetime, values: Mapping[str, Any]
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (account_id, position, taken_at, equity, balance,"
                " unrealized_pnl, realized_pnl, fees_paid, margin_used, gross_exposure)"
                " VALUES (%(account_id)s, %(position)s, %(taken_at)s, %(equity)s, %(balance)s,"
                " %(unrealized)s, %(realized_pnl)s, %(fees_paid)s, %(margin_used)s,"
                " %(gross_exposure)s)"
            ).format(self.table("prop_equity_snapshots")),
            {**values, "account_id": account_id, "position": position, "taken_at": taken_at},
            prepare=True,
        )


class PropEquity(LedgerProjection[PropEquityView]):
    name = "prop_equity"
    view_class = PropEquityView
    topics = (get_topic(PropAccount.EquitySnapshotted),)

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        pass

    @process_event.register
    def _(self, event: PropAccount.EquitySnapshotted, tracking: Tracking) -> None:
        self.view.insert_snapshot(
            event.originator_id,
            tracking.notification_id,
            event.timestamp,
            {
                **event.valuation,
                "realized_pnl": event.realized_pnl,
                "fees_paid": event.fees_paid,
            },
        )
