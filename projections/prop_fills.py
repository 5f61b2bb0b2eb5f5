"""Prop fills: every paper fill of every account, numbered per account, as recorded."""

from __future__ import annotations

from collections.abc import Mapping
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


class PropFillsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "prop_fills": """(
            account_id uuid NOT NULL,
            number integer NOT NULL,
            position bigint NOT NULL,
            kind text NOT NULL,
            client_action_id text,
            reason text,
            asset text NOT NULL,
            side text NOT NULL,
            size numeric NOT NULL,
            price numeric NOT NULL,
            mark_price numeric NOT NULL,
            mark_source text NOT NULL,
            mark_observed_at timestamptz NOT NULL,
            slippage_bps numeric NOT NULL,
            slippage numeric NOT NULL,
            fee_bps numeric NOT NULL,
            fee numeric NOT NULL,
            realized_pnl numeric NOT NULL,
            position_size numeric NOT NULL,
            filled_at timestamptz NOT NULL,
            PRIMARY KEY (account_id, number)
        )"""
    }

    def insert_fill(
        self,
        account_id: UUID,
        position: int,
        fill: Mapping[str, Any],
        *,
        kind: str,
        client_action_id: str | None,
        reason: str | None,
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (account_id, number, position, kind, client_action_id, reason,"
                " asset, side, size, price, mark_price, mark_source, mark_observed_at,"
                " slippage_bps, slippage, fee_bps, fee, realized_pnl, position_size, filled_at)"
                " VALUES (%(account_id)s, %(number)s, %(log_position)s, %(kind)s,"
                " %(client_action_id)s, %(reason)s, %(asset)s, %(side)s, %(size)s, %(price)s,"
                " %(mark_price)s, %(mark_source)s, %(mark_observed_at)s, %(slippage_bps)s,"
                " %(slippage)s, %(fee_bps)s, %(fee)s, %(realized_pnl)s, %(position_size)s,"
                " %(filled_at)s)"
            ).format(self.table("prop_fills")),
            {
                **fill,
                "account_id": account_id,
                "log_position": position,
                "kind": kind,
                "client_action_id": client_action_id,
                "reason": reason,
            },
            prepare=True,
        )


class PropFills(ReadModel[PropFillsView]):
    name = "prop_fills"
    view_class = PropFillsView
    topics = topics_of(PropAccount.Filled, PropAccount.Flattened)

    process_event = event_handlers()

    @process_event.register
    def _(self, event: PropAccount.Filled, tracking: Tracking) -> None:
        self.view.insert_fill(
            event.originator_id,
            tracking.notification_id,
            event.fill,
            kind="action",
            client_action_id=event.client_action_id,
            reason=None,
        )

    @process_event.register
    def _(self, event: PropAccount.Flattened, tracking: Tracking) -> None:
        for fill in event.fills:
            self.view.insert_fill(
                event.originator_id,
                tracking.notification_id,
                fill,
                kind="flatten",
                client_action_id=None,
                reason=event.reason,
            )


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FillRow:
    number: int
    asset: str
    side: str
    size: Decimal
    price: Decimal
    mark_price: Decimal
    mark_source: str
    mark_observed_at: datetime
    slippage_bps: Decimal
    slippage: Decimal
    fee_bps: Decimal
    fee: Decimal
    realized_pnl: Decimal
    position_size: Decimal
    filled_at: datetime


async def fills_of(reads: ProjectionReads, account_id: UUID, page: Page) -> list[FillRow]:
    """A page of the account's fills (actions and flattens), by number (cursor: number)."""
    query = SQL(
        "SELECT {} FROM prop_fills WHERE account_id = %s AND number > %s ORDER BY number LIMIT %s"
    ).format(columns(FillRow))
    return await reads.all(FillRow, query, (account_id, page.position("number"), page.fetch))
