"""Reconciliation: the ledger's read models checked against each other.

The trial balance is zero, every balance equals the sum of its entries, every verified
purchase has exactly one entitlement. The result is kept in `reconciliation_checks`,
shown at `/v1/health/reconciliation` and as a `/metrics` gauge.

The read models move on their own, so the check never waits for them to stand at one
position (under steady traffic they seldom do). All of it reads one REPEATABLE READ
snapshot. The ledger's checks use the ledger model alone, whose rows and position commit
together, so they hold at whatever position it stands. The one check across models (a
verified purchase in `purchases`, its grant in `entitlements`) is judged at the lower of
their two positions: a purchase missing its grant is a breach only when the log shows
its verification and its grant (if any) at or below that position; beyond it, it is lag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from aggregates.entitlements import entitlement_id_for
from projections.reads import ProjectionReads, columns
from runtime.schema import EVENTS_TABLE, LOG_NAME

_TRIAL_BALANCE = "SELECT coalesce(sum(amount_minor), 0) AS total FROM ledger_entries"
_BALANCE_MISMATCHES = """
    SELECT b.account, b.balance_minor, coalesce(e.total, 0) AS entries_total
    FROM ledger_balances b
    FULL OUTER JOIN (SELECT account, sum(amount_minor) AS total FROM ledger_entries GROUP BY account) e
      ON e.account = b.account
    WHERE b.balance_minor IS DISTINCT FROM e.total
"""
_GRANTS_NOT_ONE = """
    SELECT p.purchase_id, count(e.entitlement_id) AS grants
    FROM purchases p LEFT JOIN entitlements e ON e.purchase_id = p.purchase_id
    WHERE p.status = 'verified'
    GROUP BY p.purchase_id HAVING count(e.entitlement_id) <> 1
"""
_NEGATIVE_USERS = "SELECT account, balance_minor FROM ledger_balances WHERE account LIKE 'user:%%' AND balance_minor < 0"


READ_MODELS = ("ledger", "purchases", "entitlements")


@dataclass(frozen=True)
class Reconciliation:
    trial_balance_minor: int
    breaches: list[dict[str, Any]] = field(default_factory=list)
    checked_at: datetime | None = None
    position: int | None = None
    """The log position the cross-model check was judged at (the lower of the two)."""

    @property
    def ok(self) -> bool:
        return self.trial_balance_minor == 0 and not self.breaches


def reconcile(datastore: PostgresDatastore) -> Reconciliation:
    with datastore.transaction() as cursor:
        # One snapshot for all the checks, so they see the same state.
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        positions = _positions(cursor)
        common = min(positions.get("purchases", 0), positions.get("entitlements", 0))
        cursor.execute(_TRIAL_BALANCE)
        total = int(cursor.fetchone()["total"])  # type: ignore[index]
        breaches: list[dict[str, Any]] = []
        if total != 0:
            breaches.append({"check": "trial-balance", "total_minor": total})
        cursor.execute(_BALANCE_MISMATCHES)
        breaches += [
            {"check": "balance-equals-entries", **_plain(row)} for row in cursor.fetchall()
        ]
        cursor.execute(_NEGATIVE_USERS)
        breaches += [
            {"check": "user-balance-not-negative", **_plain(row)} for row in cursor.fetchall()
        ]
        cursor.execute(_GRANTS_NOT_ONE)
        breaches += [
            {"check": "one-grant-per-verified-purchase", **_plain(row)}
            for row in cursor.fetchall()
            if row["grants"] > 1 or _settled_by(cursor, row["purchase_id"], common)
        ]
    return Reconciliation(total, breaches, position=common)


def _settled_by(cursor: Any, purchase_id: Any, position: int) -> bool:
    """Whether the log had verified this purchase, and granted its entitlement if it ever
    did, at or below `position`: only then is a missing grant a breach and not lag."""
    cursor.execute(
        f"SELECT (SELECT max(notification_id) FROM {EVENTS_TABLE} WHERE originator_id = %s)"
        f" AS purchase, (SELECT min(notification_id) FROM {EVENTS_TABLE}"
        " WHERE originator_id = %s) AS granted",
        (purchase_id, entitlement_id_for(purchase_id)),
    )
    row = cursor.fetchone()
    return all(at is None or at <= position for at in (row["purchase"], row["granted"]))


def _positions(cursor: Any) -> dict[str, int]:
    cursor.execute(
        "SELECT name, generation FROM projection_state WHERE name = ANY(%s)", (list(READ_MODELS),)
    )
    positions = {}
    for row in cursor.fetchall():
        cursor.execute(
            SQL("SELECT notification_id FROM {} WHERE application_name = %s").format(
                Identifier(f"{row['name']}__g{row['generation']}_tracking")
            ),
            (LOG_NAME,),
        )
        tracked = cursor.fetchone()
        positions[row["name"]] = int(tracked["notification_id"]) if tracked else 0
    return positions


def record(datastore: PostgresDatastore, result: Reconciliation) -> None:
    with datastore.transaction(commit=True) as cursor:
        cursor.execute(
            "INSERT INTO reconciliation_checks (ok, trial_balance_minor, breaches) VALUES (%s, %s, %s)",
            (result.ok, result.trial_balance_minor, orjson.dumps(result.breaches).decode()),
        )


def reconcile_and_record(datastore: PostgresDatastore) -> Reconciliation:
    """Check and keep the result: judged at one common position, a check never skips."""
    result = reconcile(datastore)
    record(datastore, result)
    return result


@dataclass(frozen=True, slots=True)
class CheckRow:
    trial_balance_minor: int
    breaches: list[dict[str, Any]]
    checked_at: datetime

    def result(self) -> Reconciliation:
        return Reconciliation(self.trial_balance_minor, list(self.breaches), self.checked_at)


_LATEST = SQL("SELECT {} FROM reconciliation_checks ORDER BY checked_at DESC LIMIT 1").format(
    columns(CheckRow)
)


def latest(datastore: PostgresDatastore) -> Reconciliation | None:
    """The latest kept check (for the metrics scrape, which is not async)."""
    with datastore.transaction() as cursor:
        cursor.execute(_LATEST)
        row = cursor.fetchone()
    return None if row is None else CheckRow(**row).result()


async def latest_check(reads: ProjectionReads) -> Reconciliation | None:
    """The latest kept check, for HTTP reads."""
    row = await reads.one(CheckRow, _LATEST, ())
    return None if row is None else row.result()


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: str(value) if not isinstance(value, int | str | None) else value
        for key, value in row.items()
    }
