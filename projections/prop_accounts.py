"""Prop accounts: one summary row per account (status, equity, PnL, limits' references)
and one row per open position, with the mark it was last valued at; the mark-to-market
job's round (sync: jobs run in threads) and the API's queries (async, typed rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from aggregates.prop_accounts import PropAccount
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.reads import ProjectionReads, columns
from runtime.transcoder import jsonable

Row = Mapping[str, Any]


class PropAccountsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "prop_accounts": """(
            account_id uuid PRIMARY KEY,
            owner_id uuid NOT NULL,
            clone_id uuid NOT NULL,
            clone_version_hash text NOT NULL,
            purpose text NOT NULL,
            rule_set text NOT NULL,
            rule_set_version integer NOT NULL,
            rules jsonb NOT NULL,
            status text NOT NULL,
            status_reason text,
            breach text,
            starting_equity numeric NOT NULL,
            balance numeric NOT NULL,
            realized_pnl numeric NOT NULL DEFAULT 0,
            fees_paid numeric NOT NULL DEFAULT 0,
            unrealized_pnl numeric NOT NULL DEFAULT 0,
            equity numeric NOT NULL,
            margin_used numeric NOT NULL DEFAULT 0,
            gross_exposure numeric NOT NULL DEFAULT 0,
            peak_equity numeric NOT NULL,
            day date,
            day_start_equity numeric NOT NULL,
            day_start_balance numeric NOT NULL,
            fills integer NOT NULL DEFAULT 0,
            rejections integer NOT NULL DEFAULT 0,
            opened_at timestamptz NOT NULL,
            last_marked_at timestamptz,
            closed_at timestamptz,
            updated_at timestamptz NOT NULL
        )""",
        "prop_positions": """(
            account_id uuid NOT NULL,
            asset text NOT NULL,
            size numeric NOT NULL,
            cost numeric NOT NULL,
            leverage numeric NOT NULL,
            mark_price numeric NOT NULL,
            mark_source text NOT NULL,
            mark_observed_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (account_id, asset)
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "prop_accounts": ["(owner_id, opened_at)", "(status)"]
    }

    def open(self, account_id: UUID, row: Row) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (account_id, owner_id, clone_id, clone_version_hash, purpose,"
                " rule_set, rule_set_version, rules, status, starting_equity, balance, equity,"
                " peak_equity, day_start_equity, day_start_balance, opened_at, updated_at)"
                " VALUES (%(account_id)s, %(owner_id)s, %(clone_id)s, %(clone_version_hash)s,"
                " %(purpose)s, %(rule_set)s, %(rule_set_version)s, %(rules)s, 'open',"
                " %(starting_equity)s, %(starting_equity)s, %(starting_equity)s,"
                " %(starting_equity)s, %(starting_equity)s, %(starting_equity)s, %(at)s, %(at)s)"
            ).format(self.table("prop_accounts")),
            {**row, "account_id": account_id, "rules": Jsonb(jsonable(row["rules"]))},
        )

    def start_day(self, account_id: UUID, day: str, equity: Decimal, balance: Decimal) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET day = %s, day_start_equity = %s, day_start_balance = %s"
                " WHERE account_id = %s"
            ).format(self.table("prop_accounts")),
            (day, equity, balance, account_id),
        )

    def record_fills(
        self,
        account_id: UUID,
        fills: Sequence[Row],
        marks: Mapping[str, Row],
        valuation: Row,
        at: datetime,
    ) -> None:
        """Fills move positions and totals; then every position takes its newest mark."""
        for fill in fills:
            self._move_position(account_id, fill, at)
        self._update_totals(account_id, fills, valuation, at)
        self.record_marks(account_id, marks, valuation, at)

    def record_marks(
        self, account_id: UUID, marks: Mapping[str, Row], valuation: Row, at: datetime
    ) -> None:
        for asset, mark in marks.items():
            self.cursor.execute(
                SQL(
                    "UPDATE {} SET mark_price = %s, mark_source = %s, mark_observed_at = %s,"
                    " updated_at = %s WHERE account_id = %s AND asset = %s"
                ).format(self.table("prop_positions")),
                (mark["price"], mark["source"], mark["observed_at"], at, account_id, asset),
            )
        self.cursor.execute(
            SQL(
                "UPDATE {} SET balance = %(balance)s, unrealized_pnl = %(unrealized)s,"
                " equity = %(equity)s, margin_used = %(margin_used)s,"
                " gross_exposure = %(gross_exposure)s,"
                " peak_equity = greatest(peak_equity, %(equity)s), updated_at = %(at)s,"
                " last_marked_at = CASE WHEN %(marked)s THEN %(at)s ELSE last_marked_at END"
                " WHERE account_id = %(account_id)s"
            ).format(self.table("prop_accounts")),
            {**valuation, "at": at, "marked": bool(marks), "account_id": account_id},
        )

    def count_rejection(self, account_id: UUID, at: datetime) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET rejections = rejections + 1, updated_at = %s WHERE account_id = %s"
            ).format(self.table("prop_accounts")),
            (at, account_id),
        )

    def record_breach(self, account_id: UUID, rule: str, at: datetime) -> None:
        self.cursor.execute(
            SQL("UPDATE {} SET breach = %s, updated_at = %s WHERE account_id = %s").format(
                self.table("prop_accounts")
            ),
            (rule, at, account_id),
        )

    def set_status(self, account_id: UUID, status: str, reason: str, at: datetime) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %(status)s, status_reason = %(reason)s,"
                " updated_at = %(at)s,"
                " closed_at = CASE WHEN %(status)s = 'closed' THEN %(at)s ELSE closed_at END"
                " WHERE account_id = %(account_id)s"
            ).format(self.table("prop_accounts")),
            {"status": status, "reason": reason, "at": at, "account_id": account_id},
        )

    def _move_position(self, account_id: UUID, fill: Row, at: datetime) -> None:
        if fill["position_size"] == 0:
            self.cursor.execute(
                SQL("DELETE FROM {} WHERE account_id = %s AND asset = %s").format(
                    self.table("prop_positions")
                ),
                (account_id, fill["asset"]),
            )
            return
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (account_id, asset, size, cost, leverage, mark_price,"
                " mark_source, mark_observed_at, updated_at)"
                " VALUES (%(account_id)s, %(asset)s, %(position_size)s, %(position_cost)s,"
                " %(leverage)s, %(mark_price)s, %(mark_source)s, %(mark_observed_at)s, %(at)s)"
                " ON CONFLICT (account_id, asset) DO UPDATE SET size = excluded.size,"
                " cost = excluded.cost, leverage = excluded.leverage,"
                " mark_price = excluded.mark_price, mark_source = excluded.mark_source,"
                " mark_observed_at = excluded.mark_observed_at, updated_at = excluded.updated_at"
            ).format(self.table("prop_positions")),
            {**fill, "account_id": account_id, "at": at},
        )

    def _update_totals(
        self, account_id: UUID, fills: Sequence[Row], valuation: Row, at: datetime
    ) -> None:
        realized = sum((f["realized_pnl"] for f in fills), Decimal(0))
        fees = sum((f["fee"] for f in fills), Decimal(0))
        count = max((f["number"] for f in fills), default=None)
        self.cursor.execute(
            SQL(
                "UPDATE {} SET realized_pnl = realized_pnl + %s, fees_paid = fees_paid + %s,"
                " fills = coalesce(%s, fills), updated_at = %s WHERE account_id = %s"
            ).format(self.table("prop_accounts")),
            (realized, fees, count, at, account_id),
        )


class PropAccounts(ReadModel[PropAccountsView]):
    name = "prop_accounts"
    view_class = PropAccountsView
    topics = topics_of(
        PropAccount.Opened,
        PropAccount.DayStarted,
        PropAccount.Filled,
        PropAccount.ActionRejected,
        PropAccount.Marked,
        PropAccount.Breached,
        PropAccount.Frozen,
        PropAccount.Unfrozen,
        PropAccount.Flattened,
        PropAccount.Closed,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: PropAccount.Opened, tracking: Tracking) -> None:
        self.view.open(
            event.originator_id,
            {
                "owner_id": event.owner_id,
                "clone_id": event.clone_id,
                "clone_version_hash": event.clone_version_hash,
                "purpose": event.purpose,
                "rule_set": event.rules["name"],
                "rule_set_version": event.rules["version"],
                "rules": event.rules,
                "starting_equity": event.starting_equity,
                "at": event.timestamp,
            },
        )

    @process_event.register
    def _(self, event: PropAccount.DayStarted, tracking: Tracking) -> None:
        self.view.start_day(event.originator_id, event.day, event.equity, event.balance)

    @process_event.register
    def _(self, event: PropAccount.Filled, tracking: Tracking) -> None:
        self.view.record_fills(
            event.originator_id, [event.fill], event.marks, event.valuation, event.timestamp
        )

    @process_event.register
    def _(self, event: PropAccount.ActionRejected, tracking: Tracking) -> None:
        self.view.count_rejection(event.originator_id, event.timestamp)

    @process_event.register
    def _(self, event: PropAccount.Marked, tracking: Tracking) -> None:
        self.view.record_marks(event.originator_id, event.marks, event.valuation, event.timestamp)

    @process_event.register
    def _(self, event: PropAccount.Breached, tracking: Tracking) -> None:
        self.view.record_breach(event.originator_id, event.rule, event.timestamp)

    @process_event.register
    def _(self, event: PropAccount.Frozen, tracking: Tracking) -> None:
        self.view.set_status(event.originator_id, "frozen", event.reason, event.timestamp)

    @process_event.register
    def _(self, event: PropAccount.Unfrozen, tracking: Tracking) -> None:
        self.view.set_status(event.originator_id, "open", event.reason, event.timestamp)

    @process_event.register
    def _(self, event: PropAccount.Flattened, tracking: Tracking) -> None:
        self.view.record_fills(
            event.originator_id, event.fills, event.marks, event.valuation, event.timestamp
        )

    @process_event.register
    def _(self, event: PropAccount.Closed, tracking: Tracking) -> None:
        self.view.set_status(event.originator_id, "closed", event.reason, event.timestamp)


def accounts_to_mark(datastore: PostgresDatastore) -> list[UUID]:
    """Open accounts that hold a position: the mark-to-market job's round. A frozen or closed
    account is left alone (it cannot trade; its verdict or an admin revalues it)."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT DISTINCT a.account_id FROM prop_accounts a"
            " JOIN prop_positions p ON p.account_id = a.account_id"
            " WHERE a.status = 'open' ORDER BY a.account_id"
        )
        return [row["account_id"] for row in cursor.fetchall()]


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PropAccountRow:
    account_id: UUID
    owner_id: UUID
    clone_id: UUID
    clone_version_hash: str
    purpose: str
    rules: dict[str, Any]
    status: str
    status_reason: str | None
    breach: str | None
    starting_equity: Decimal
    balance: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    unrealized_pnl: Decimal
    equity: Decimal
    margin_used: Decimal
    gross_exposure: Decimal
    peak_equity: Decimal
    day: date | None
    day_start_equity: Decimal
    day_start_balance: Decimal
    fills: int
    rejections: int
    opened_at: datetime
    last_marked_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PositionRow:
    asset: str
    size: Decimal
    cost: Decimal
    leverage: Decimal
    mark_price: Decimal
    mark_source: str
    mark_observed_at: datetime


async def account_by_id(reads: ProjectionReads, account_id: UUID) -> PropAccountRow | None:
    query = SQL("SELECT {} FROM prop_accounts WHERE account_id = %s").format(
        columns(PropAccountRow)
    )
    return await reads.one(PropAccountRow, query, (account_id,))


async def positions_of(reads: ProjectionReads, account_id: UUID) -> list[PositionRow]:
    """The account's open positions, by asset, each at the mark it was last valued at."""
    query = SQL("SELECT {} FROM prop_positions WHERE account_id = %s ORDER BY asset").format(
        columns(PositionRow)
    )
    return await reads.all(PositionRow, query, (account_id,))
