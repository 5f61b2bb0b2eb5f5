"""Reconciliation: the ledger's read models checked against each other.

The trial balance is zero, every balance equals the sum of its entries, every verified
purchase has exactly one entitlement, and every race conserves its money: its escrow is
never negative, holds only its pending payouts once settled and nothing once paid or void,
its settlement balances (gross + subsidy = takeout + payouts + breakage) over every
ticket, and its pools are its counted tickets. Every posted payout was approved before it
by enough admins other than its maker, for its table, within their TTL; every pending
transfer makes its entries once, when posted; no user's available balance is negative.
Every posted withdrawal has a verified transaction of its own (from the treasury to its
wallet, exactly its amount, settling nothing else), and `treasury:outgoing` holds exactly
what posted withdrawals paid out. The result is kept in `reconciliation_checks`, shown at `/v1/health/reconciliation` and
as a `/metrics` gauge.

The read models move on their own, so the check never waits for them to stand at one
position (under steady traffic they seldom do). All of it reads one REPEATABLE READ
snapshot. The ledger's checks use the ledger model alone, whose rows and position commit
together, so they hold at whatever position it stands. The one check across models (a
verified purchase in `purchases`, its grant in `entitlements`) is judged at the lower of
their two positions: a purchase missing its grant is a breach only when the log shows
its verification and its grant (if any) at or below that position; beyond it, it is lag.

Health never passes an old answer off as current: a last completed check older than
`stale_after` (a setting; three intervals by default) is shown as `stale`, with its age.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from aggregates.entitlements import entitlement_id_for
from projections.reads import ProjectionReads
from runtime.schema import EVENTS_TABLE, LOG_NAME
from runtime.settings import Settings

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
# Races. A settled or void race's escrow is empty once the ledger has read that far (the
# transfers and the race's last event commit together); a settlement conserves every
# micro-USDC and includes every ticket; the live pools are the counted tickets.
# Settled (payout awaiting authorization): everything left is held by pending transfers,
# so posted + incoming - reserved = 0. Paid or void: nothing left at all.
_RACE_ESCROWS_NOT_EMPTY = """
    SELECT r.race_id, r.status, e.posted, e.reserved, e.incoming FROM races r
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT balance_minor FROM ledger_balances WHERE account = a), 0)
                   AS posted,
               (SELECT coalesce(sum(amount_minor), 0) FROM ledger_pending
                 WHERE debit_account = a AND status = 'pending') AS reserved,
               (SELECT coalesce(sum(amount_minor), 0) FROM ledger_pending
                 WHERE credit_account = a AND status = 'pending') AS incoming
        FROM (SELECT 'race:' || r.race_id || ':escrow' AS a) account
    ) e
    WHERE r.status_position <= %s AND (
        (r.status = 'settled' AND e.posted + e.incoming - e.reserved <> 0)
        OR (r.status IN ('paid', 'void') AND (e.posted <> 0 OR e.reserved <> 0 OR e.incoming <> 0))
    )
"""
_RACE_ESCROWS_NEGATIVE = """
    SELECT account, balance_minor FROM ledger_balances
    WHERE account LIKE 'race:%%:escrow' AND balance_minor < 0
"""
_SETTLEMENTS_NOT_CONSERVED = """
    SELECT r.race_id, r.summary, coalesce(t.staked, 0) AS tickets_staked
    FROM races r LEFT JOIN (
        SELECT race_id, sum(amount_minor) AS staked FROM race_tickets GROUP BY race_id
    ) t USING (race_id)
    WHERE r.status IN ('settled', 'paid') AND (
        (r.summary->>'gross_minor')::numeric + (r.summary->>'subsidy_minor')::numeric
          <> (r.summary->>'takeout_minor')::numeric + (r.summary->>'paid_minor')::numeric
             + (r.summary->>'breakage_minor')::numeric
        OR (r.summary->>'staked_minor')::numeric
          <> (r.summary->>'refunded_minor')::numeric + (r.summary->>'gross_minor')::numeric
        OR (r.summary->>'staked_minor')::numeric <> coalesce(t.staked, 0)
    )
"""
_POOLS_NOT_TICKETS = """
    SELECT e.race_id, e.pooled, coalesce(t.counted, 0) AS counted
    FROM (SELECT race_id, sum(pool_minor) AS pooled FROM race_entrants GROUP BY race_id) e
    LEFT JOIN (
        SELECT race_id, sum(amount_minor) AS counted FROM race_tickets WHERE counted
        GROUP BY race_id
    ) t USING (race_id)
    WHERE e.pooled <> coalesce(t.counted, 0)
"""
# Payouts and two-phase transfers. A posted payout had its approvals before it (lower log
# positions), from admins other than its maker, bound to its table, within their TTL; a
# pending transfer makes its two entries once, when posted, and none otherwise; no user's
# available balance (posted less reserved) is negative.
_PAYOUTS_NOT_AUTHORIZED = """
    SELECT p.payout_id, p.required_approvals, count(DISTINCT a.approver) AS valid
    FROM payouts p
    LEFT JOIN LATERAL jsonb_to_recordset(p.approvals)
        AS a(approver text, digest text, approved_at timestamptz, position bigint)
      ON a.approver <> p.maker AND a.digest = p.table_digest
         AND a.position < p.resolved_position
         AND p.resolved_at < a.approved_at + make_interval(secs => p.approval_ttl_seconds)
         AND EXISTS (
             SELECT 1 FROM users u WHERE 'user:' || u.user_id = a.approver
             AND ('admin' = ANY(u.roles) OR lower(u.address) = ANY(%s))
         )
    WHERE p.status = 'posted'
    GROUP BY p.payout_id, p.required_approvals
    HAVING count(DISTINCT a.approver) < p.required_approvals
"""
_PENDING_ENTRIES_WRONG = """
    SELECT p.transfer_id, p.status, count(e.account) AS entries
    FROM ledger_pending p LEFT JOIN ledger_entries e ON e.transfer_id = p.transfer_id
    GROUP BY p.transfer_id, p.status
    HAVING count(e.account) <> CASE WHEN p.status = 'posted' THEN 2 ELSE 0 END
"""
_NEGATIVE_AVAILABLE = """
    SELECT b.account, b.balance_minor, r.reserved
    FROM ledger_balances b JOIN (
        SELECT debit_account AS account, sum(amount_minor) AS reserved FROM ledger_pending
        WHERE status = 'pending' GROUP BY debit_account
    ) r USING (account)
    WHERE b.account LIKE 'user:%%' AND b.balance_minor - r.reserved < 0
"""
# Withdrawals. A posted withdrawal was verified on chain for exactly its amount, and its
# transaction settles nothing else (no other withdrawal, deposit or purchase). What
# `treasury:outgoing` holds is what posted withdrawals paid: judged at the common position
# of the ledger and withdrawals models, by the position of each withdrawal's transfer
# posting (the same one its entries carry; the withdrawal's `Verified` precedes it in the
# same transaction), so a model ahead of the other is never a breach.
_WITHDRAWALS_WITHOUT_VERIFIED_TX = """
    SELECT w.withdrawal_id, w.tx_hash, w.tx_status, w.amount_minor, w.paid_minor
    FROM withdrawals w
    WHERE w.status = 'posted' AND (
        w.tx_hash IS NULL OR w.block_hash IS NULL OR w.tx_status IS DISTINCT FROM 'verified'
        OR w.paid_minor IS DISTINCT FROM w.amount_minor
        OR EXISTS (SELECT 1 FROM withdrawals o WHERE o.tx_hash = w.tx_hash
                   AND o.status = 'posted' AND o.withdrawal_id <> w.withdrawal_id)
        OR EXISTS (SELECT 1 FROM deposits d WHERE d.tx_hash = w.tx_hash AND d.status = 'verified')
        OR EXISTS (SELECT 1 FROM purchases p WHERE p.tx_hash = w.tx_hash AND p.status = 'verified')
    )
"""
_OUTGOING_NOT_POSTED_WITHDRAWALS = """
    SELECT o.outgoing_minor, w.posted_minor FROM
        (SELECT coalesce(sum(amount_minor), 0) AS outgoing_minor FROM ledger_entries
          WHERE account = 'treasury:outgoing' AND position <= %(at)s) o,
        (SELECT coalesce(sum(amount_minor), 0) AS posted_minor FROM withdrawals
          WHERE status = 'posted' AND transfer_posted_position <= %(at)s) w
    WHERE o.outgoing_minor <> w.posted_minor
"""
_NEGATIVE_USERS = "SELECT account, balance_minor FROM ledger_balances WHERE account LIKE 'user:%%' AND balance_minor < 0"


READ_MODELS = (
    "ledger",
    "purchases",
    "entitlements",
    "races",
    "payouts",
    "users",
    "withdrawals",
)


@dataclass(frozen=True)
class Reconciliation:
    trial_balance_minor: int
    breaches: list[dict[str, Any]] = field(default_factory=list)
    checked_at: datetime | None = None
    position: int | None = None
    """The log position the cross-model check was judged at (the lower of the two)."""
    age_seconds: float | None = None
    """How long ago it was kept, by the database's clock (the one that stamped it)."""

    @property
    def ok(self) -> bool:
        return self.trial_balance_minor == 0 and not self.breaches


def reconcile(datastore: PostgresDatastore, admins: Collection[str] = ()) -> Reconciliation:
    """Every check, on one snapshot; `admins`: the addresses configured as admins (whose
    approvals count as an admin's, like those of users granted the role)."""
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
        breaches += _race_breaches(
            cursor, min(positions.get("ledger", 0), positions.get("races", 0))
        )
        breaches += _payout_breaches(cursor, [a.lower() for a in admins])
        breaches += _withdrawal_breaches(
            cursor, min(positions.get("ledger", 0), positions.get("withdrawals", 0))
        )
        cursor.execute(_GRANTS_NOT_ONE)
        breaches += [
            {"check": "one-grant-per-verified-purchase", **_plain(row)}
            for row in cursor.fetchall()
            if row["grants"] > 1 or _settled_by(cursor, row["purchase_id"], common)
        ]
    return Reconciliation(total, breaches, position=common)


def _race_breaches(cursor: Any, common: int) -> list[dict[str, Any]]:
    """The race monitors; the escrow check (ledger against races) at their common position."""
    found: list[dict[str, Any]] = []
    for check, query, params in (
        ("race-escrow-empty-when-done", _RACE_ESCROWS_NOT_EMPTY, (common,)),
        ("race-escrow-not-negative", _RACE_ESCROWS_NEGATIVE, ()),
        ("race-settlement-conserved", _SETTLEMENTS_NOT_CONSERVED, ()),
        ("race-pool-equals-counted-tickets", _POOLS_NOT_TICKETS, ()),
    ):
        cursor.execute(query, params)
        found += [{"check": check, **_plain(row)} for row in cursor.fetchall()]
    return found


def _payout_breaches(cursor: Any, admins: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for check, query, params in (
        ("payout-authorized-before-posting", _PAYOUTS_NOT_AUTHORIZED, (admins,)),
        ("pending-transfer-resolved-once", _PENDING_ENTRIES_WRONG, ()),
        ("user-available-not-negative", _NEGATIVE_AVAILABLE, ()),
    ):
        cursor.execute(query, params)
        found += [{"check": check, **_plain(row)} for row in cursor.fetchall()]
    return found


def _withdrawal_breaches(cursor: Any, common: int) -> list[dict[str, Any]]:
    """The withdrawal monitors; `treasury:outgoing` against them at their common position."""
    found: list[dict[str, Any]] = []
    for check, query, params in (
        ("withdrawal-posted-with-verified-tx", _WITHDRAWALS_WITHOUT_VERIFIED_TX, {}),
        (
            "treasury-outgoing-equals-posted-withdrawals",
            _OUTGOING_NOT_POSTED_WITHDRAWALS,
            {"at": common},
        ),
    ):
        cursor.execute(query, params)
        found += [{"check": check, **_plain(row)} for row in cursor.fetchall()]
    return found


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


def reconcile_and_record(
    datastore: PostgresDatastore, admins: Collection[str] = ()
) -> Reconciliation:
    """Check and keep the result: judged at one common position, a check never skips."""
    result = reconcile(datastore, admins)
    record(datastore, result)
    return result


@dataclass(frozen=True, slots=True)
class CheckRow:
    trial_balance_minor: int
    breaches: list[dict[str, Any]]
    checked_at: datetime
    age_seconds: float

    def result(self) -> Reconciliation:
        return Reconciliation(
            self.trial_balance_minor,
            list(self.breaches),
            self.checked_at,
            age_seconds=max(self.age_seconds, 0.0),
        )


# The age by the database's clock, which stamped `checked_at`: no skew between hosts.
_LATEST = SQL(
    "SELECT trial_balance_minor, breaches, checked_at,"
    " extract(epoch FROM clock_timestamp() - checked_at)::float8 AS age_seconds"
    " FROM reconciliation_checks ORDER BY checked_at DESC LIMIT 1"
)

STALE_AFTER_INTERVALS = 3
"""Without `PUMPPARTY_RECONCILIATION_STALE_AFTER`, a check is stale after this many intervals."""


def stale_after(settings: Settings) -> float:
    """Seconds after which the last completed check no longer speaks for the ledger: the
    checker has stopped, or cannot finish (health shows `stale`)."""
    if settings.reconciliation_stale_after is not None:
        return settings.reconciliation_stale_after
    return STALE_AFTER_INTERVALS * settings.reconciliation_interval


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
