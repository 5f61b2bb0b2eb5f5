"""Reconciliation: the read models checked against each other and against the log.

Every invariant is one `Check` in `CHECKS`, the one registry: a stable name (what breaches,
rows, metrics and alerts are labelled with), the rule in one line, the read models it
reads, and a function that finds its breaches. `reconcile` runs them all in one REPEATABLE
READ transaction, so they see one snapshot, and reports each with the log position it was
judged at and at most `MAX_BREACHES_SHOWN` of its breaches (with the total found). A check
that cannot run (a query fails) fails on its own, with the error as its breach, inside a
savepoint, so the others still run and the monitor never passes a check it could not judge.

Positions. The read models move on their own, so the run never waits for them to stand at
one position (under steady traffic they seldom do). Its common position is the lowest of
the positions of every model a check reads. A check within one model reads that model
alone, whose rows and position commit together, so it holds at whatever position the
model stands and is reported at that position. A check across models is judged at the
common position: whatever the log did beyond it, in any model, is lag and never a breach
(a purchase verified beyond it without its grant yet, a withdrawal posted beyond it, a fill
beyond it, ...). A stalled model holds the common position back; the stall has its own alert.

The rebuild sample (`<model>-matches-rebuild-sample`) holds the rows of a read model to the
log itself: for the `REBUILD_SAMPLE` aggregates of its topics changed most recently (within
the last `REBUILD_WINDOW` positions at or below the model's position, newest first, ties by
id; aggregates with more than `REBUILD_MAX_EVENTS` events are passed over so a run stays
cheap), their events up to the model's position are replayed through the model's own
handlers into temporary tables of the same columns (created and dropped inside this
transaction, never seen by anyone else), and each table's rows for those aggregates are
compared with the live ones, row for row: a count that differs, or a row that differs, is a
breach. It is kept for the tables whose rows belong to one aggregate (`ledger_entries` and
`ledger_pending` by transfer, `prop_accounts` and `prop_fills` by account). The tables that
sum many aggregates are held to those rows by their own checks instead: `ledger_balances`
to the entries (`balance-equals-entries`), `prop_positions` to the fills
(`prop-position-equals-fills`); so each corruption shows in the one check that owns it.

Results: every run is kept (`reconciliation_checks`, with its common position, and one row
per check in `reconciliation_check_results`), shown at `/v1/health/reconciliation` and on
`/metrics` (`pumpparty_reconciliation_breaches`, which the `ReconciliationBreach` alert
reads, and `pumpparty_reconciliation_check_breaches` by check). Health never passes an old
answer off as current: a last completed run older than `stale_after` (a setting; three
intervals by default) is shown as `stale`, with its age.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from eventsourcing.persistence import Mapper
from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from aggregates.entitlements import entitlement_id_for
from aggregates.prop_accounts import PropAccount
from projections.base import ProjectionView, ReadModel, RecordedEvent
from projections.dispatch import topics_of
from projections.ledger import LedgerEntries
from projections.log import apply_events
from projections.prop_accounts import PropAccounts
from projections.prop_fills import PropFills
from projections.reads import ProjectionReads
from runtime.schema import EVENTS_TABLE, LOG_NAME
from runtime.settings import Settings
from runtime.transcoder import OrjsonTranscoder

MAX_BREACHES_SHOWN = 50
"""Breaches kept per check and run (the total found is kept too): a model broken through
and through must not make the run, its row or the health answer unbounded."""
REBUILD_SAMPLE = 5
REBUILD_WINDOW = 10_000
REBUILD_MAX_EVENTS = 500

Breach = dict[str, Any]


@dataclass(frozen=True)
class Judging:
    """What a check judges with: the run's one snapshot and where each model stands in it."""

    cursor: Cursor[DictRow]
    datastore: PostgresDatastore
    mapper: Mapper[Any]
    positions: Mapping[str, int]
    common: int
    admins: list[str]
    """The addresses configured as admins, lower-cased."""


@dataclass(frozen=True)
class Check:
    """One invariant: `find` yields its breaches, each naming what breaks it."""

    name: str
    rule: str
    reads: tuple[str, ...]
    find: Callable[[Judging], Iterable[Breach]]

    def position(self, judging: Judging) -> int:
        """Where it is judged: its model's position, or the common one across models."""
        if len(self.reads) == 1:
            return judging.positions.get(self.reads[0], 0)
        return judging.common


# --- the ledger ------------------------------------------------------------------------------

_TRIAL_BALANCE = """
    SELECT total_minor FROM (
        SELECT coalesce(sum(amount_minor), 0)::bigint AS total_minor FROM ledger_entries
    ) t WHERE total_minor <> 0
"""
_BALANCE_MISMATCHES = """
    SELECT coalesce(b.account, e.account) AS account, b.balance_minor,
           coalesce(e.total, 0)::bigint AS entries_total
    FROM ledger_balances b
    FULL OUTER JOIN (SELECT account, sum(amount_minor) AS total FROM ledger_entries GROUP BY account) e
      ON e.account = b.account
    WHERE b.balance_minor IS DISTINCT FROM e.total
"""
_NEGATIVE_USERS = """
    SELECT account, balance_minor FROM ledger_balances
    WHERE account LIKE 'user:%%' AND balance_minor < 0
"""
# A pending transfer makes its two entries once, when posted, and none otherwise; no user's
# available balance (posted less reserved) is negative.
_PENDING_ENTRIES_WRONG = """
    SELECT p.transfer_id, p.status, count(e.account) AS entries
    FROM ledger_pending p LEFT JOIN ledger_entries e ON e.transfer_id = p.transfer_id
    GROUP BY p.transfer_id, p.status
    HAVING count(e.account) <> CASE WHEN p.status = 'posted' THEN 2 ELSE 0 END
"""
_NEGATIVE_AVAILABLE = """
    SELECT b.account, b.balance_minor, r.reserved::bigint AS reserved
    FROM ledger_balances b JOIN (
        SELECT debit_account AS account, sum(amount_minor) AS reserved FROM ledger_pending
        WHERE status = 'pending' GROUP BY debit_account
    ) r USING (account)
    WHERE b.account LIKE 'user:%%' AND b.balance_minor - r.reserved < 0
"""
_GRANTS_NOT_ONE = """
    SELECT p.purchase_id, count(e.entitlement_id) AS grants
    FROM purchases p LEFT JOIN entitlements e ON e.purchase_id = p.purchase_id
    WHERE p.status = 'verified'
    GROUP BY p.purchase_id HAVING count(e.entitlement_id) <> 1
    ORDER BY p.purchase_id
"""

# --- races -----------------------------------------------------------------------------------
# A settled or void race's escrow is empty once the ledger has read that far (the
# transfers and the race's last event commit together); a settlement conserves every
# micro-USDC and includes every ticket; the live pools are the counted tickets.
# Settled (payout awaiting authorization): everything left is held by pending transfers,
# so posted + incoming - reserved = 0. Paid or void: nothing left at all.
_RACE_ESCROWS_NOT_EMPTY = """
    SELECT r.race_id, r.status, e.posted, e.reserved, e.incoming FROM races r
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT balance_minor FROM ledger_balances WHERE account = a), 0)
                   AS posted,
               (SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_pending
                 WHERE debit_account = a AND status = 'pending') AS reserved,
               (SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_pending
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
    SELECT r.race_id, r.summary, coalesce(t.staked, 0)::bigint AS tickets_staked
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
    SELECT e.race_id, e.pooled::bigint AS pooled, coalesce(t.counted, 0)::bigint AS counted
    FROM (SELECT race_id, sum(pool_minor) AS pooled FROM race_entrants GROUP BY race_id) e
    LEFT JOIN (
        SELECT race_id, sum(amount_minor) AS counted FROM race_tickets WHERE counted
        GROUP BY race_id
    ) t USING (race_id)
    WHERE e.pooled <> coalesce(t.counted, 0)
"""

# --- payouts ---------------------------------------------------------------------------------
# A posted payout had its approvals before it (lower log positions), from admins other
# than its maker, bound to its table, within their TTL.
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
             AND ('admin' = ANY(u.roles) OR lower(u.address) = ANY(%(admins)s))
         )
    WHERE p.status = 'posted' AND coalesce(p.resolved_position, 0) <= %(at)s
    GROUP BY p.payout_id, p.required_approvals
    HAVING count(DISTINCT a.approver) < p.required_approvals
"""

# --- withdrawals -----------------------------------------------------------------------------
# A posted withdrawal was verified on chain for exactly its amount, and its transaction
# settles nothing else (no other withdrawal, deposit or purchase). What `treasury:outgoing`
# holds is what posted withdrawals paid, by the position of each withdrawal's transfer
# posting (the same one its entries carry; the withdrawal's `Verified` precedes it in the
# same transaction).
_WITHDRAWALS_WITHOUT_VERIFIED_TX = """
    SELECT w.withdrawal_id, w.tx_hash, w.tx_status, w.amount_minor, w.paid_minor
    FROM withdrawals w
    WHERE w.status = 'posted' AND coalesce(w.transfer_posted_position, 0) <= %(at)s AND (
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
        (SELECT coalesce(sum(amount_minor), 0)::bigint AS outgoing_minor FROM ledger_entries
          WHERE account = 'treasury:outgoing' AND position <= %(at)s) o,
        (SELECT coalesce(sum(amount_minor), 0)::bigint AS posted_minor FROM withdrawals
          WHERE status = 'posted' AND transfer_posted_position <= %(at)s) w
    WHERE o.outgoing_minor <> w.posted_minor
"""

# --- prop trading ----------------------------------------------------------------------------
# A position's size is the sum of its fills (buys less sells), and an asset with fills that
# sum to nothing has no position. Judged at the common position: the fills up to it, and
# only accounts the log shows no fill for beyond it, up to the accounts model's position
# (positions change only by fills, so such an account's positions are as they were then).
_FILL_TOPICS = list(topics_of(PropAccount.Filled, PropAccount.Flattened))
_POSITIONS_NOT_FILLS = SQL("""
    WITH filled_later AS (
        SELECT DISTINCT originator_id AS account_id FROM {events}
        WHERE notification_id > %(at)s AND notification_id <= %(accounts_at)s
          AND topic = ANY(%(topics)s)
    ), fills AS (
        SELECT account_id, asset,
               sum(CASE WHEN side = 'buy' THEN size ELSE -size END) AS filled
        FROM prop_fills WHERE position <= %(at)s GROUP BY account_id, asset
    )
    SELECT coalesce(p.account_id, f.account_id) AS account_id,
           coalesce(p.asset, f.asset) AS asset, p.size AS position_size,
           coalesce(f.filled, 0) AS fills_sum
    FROM prop_positions p FULL OUTER JOIN fills f
      ON f.account_id = p.account_id AND f.asset = p.asset
    WHERE coalesce(p.size, 0) <> coalesce(f.filled, 0)
      AND coalesce(p.account_id, f.account_id) NOT IN (SELECT account_id FROM filled_later)
    ORDER BY 1, 2
""").format(events=Identifier(EVENTS_TABLE))


def _query(
    sql: str | Composed, params: Callable[[Judging], Any] | None = None
) -> Callable[[Judging], Iterator[Breach]]:
    """A check that is one query: each row it returns is a breach. Read through a
    server-side cursor, so a model broken through and through is counted, not held."""

    def find(judging: Judging) -> Iterator[Breach]:
        with judging.cursor.connection.cursor(name="reconciliation_check") as rows:
            rows.execute(sql, params(judging) if params else ())
            yield from (_plain(row) for row in rows)

    return find


def _at_common(judging: Judging) -> dict[str, Any]:
    return {"at": judging.common}


def _grants_not_one(judging: Judging) -> Iterator[Breach]:
    """A verified purchase with no grant is a breach only when the log shows its
    verification and its grant (if any) at or below the common position; beyond, lag."""
    judging.cursor.execute(_GRANTS_NOT_ONE)
    for row in judging.cursor.fetchall():
        if row["grants"] > 1 or _settled_by(judging.cursor, row["purchase_id"], judging.common):
            yield _plain(row)


def _settled_by(cursor: Cursor[DictRow], purchase_id: Any, position: int) -> bool:
    cursor.execute(
        SQL(
            "SELECT (SELECT max(notification_id) FROM {events} WHERE originator_id = %s)"
            " AS purchase, (SELECT min(notification_id) FROM {events}"
            " WHERE originator_id = %s) AS granted"
        ).format(events=Identifier(EVENTS_TABLE)),
        (purchase_id, entitlement_id_for(purchase_id)),
    )
    row = cursor.fetchone()
    assert row is not None
    return all(at is None or at <= position for at in (row["purchase"], row["granted"]))


def _positions_not_fills(judging: Judging) -> Iterator[Breach]:
    judging.cursor.execute(
        _POSITIONS_NOT_FILLS,
        {
            "at": judging.common,
            "accounts_at": judging.positions.get(PropAccounts.name, 0),
            "topics": _FILL_TOPICS,
        },
    )
    yield from (_plain(row) for row in judging.cursor.fetchall())


# --- the rebuild sample ----------------------------------------------------------------------

_RECENTLY_CHANGED = SQL("""
    SELECT r.originator_id FROM (
        SELECT originator_id, max(notification_id) AS last FROM {events}
        WHERE notification_id <= %(at)s AND notification_id > %(at)s - %(window)s
          AND topic = ANY(%(topics)s)
        GROUP BY originator_id ORDER BY last DESC, originator_id LIMIT %(candidates)s
    ) r
    CROSS JOIN LATERAL (
        SELECT count(*) AS events FROM {events} e
        WHERE e.originator_id = r.originator_id AND e.notification_id <= %(at)s
    ) h
    WHERE h.events <= %(max_events)s
    ORDER BY r.last DESC, r.originator_id LIMIT %(sample)s
""").format(events=Identifier(EVENTS_TABLE))
_EVENTS_OF = SQL(
    "SELECT notification_id, originator_id, originator_version, topic, state, recorded_at"
    " FROM {} WHERE originator_id = ANY(%s) AND notification_id <= %s AND topic = ANY(%s)"
    " ORDER BY notification_id"
).format(Identifier(EVENTS_TABLE))
_COMPARE = """
    SELECT * FROM (
        SELECT k AS aggregate_id, %(table)s AS "table",
            (SELECT count(*) FROM {live} WHERE {key} = k) AS live_rows,
            (SELECT count(*) FROM {rebuilt} WHERE {key} = k) AS rebuilt_rows,
            (SELECT count(*) FROM (
                (SELECT * FROM {live} WHERE {key} = k
                 EXCEPT ALL SELECT * FROM {rebuilt} WHERE {key} = k)
                UNION ALL
                (SELECT * FROM {rebuilt} WHERE {key} = k
                 EXCEPT ALL SELECT * FROM {live} WHERE {key} = k)
            ) d) AS differing_rows
        FROM unnest(%(ids)s::uuid[]) AS k
    ) c WHERE differing_rows > 0 ORDER BY aggregate_id
"""


def _scratch_table(self: ProjectionView, logical: str) -> Identifier:
    """Where a rebuilt sample's rows go: a temporary table, this session's alone."""
    return Identifier("pg_temp", f"rebuilt_{logical}")


def _rebuild_sample(
    model: type[ReadModel[Any]], keys: Mapping[str, str]
) -> Callable[[Judging], Iterator[Breach]]:
    """The rebuild sample of `model`: `keys` maps each compared table to its column
    holding the aggregate's id. For models whose handlers write their rows as they go
    (a model that buffers `append_row`s until its position is recorded needs a scratch
    tracking table too before it can be sampled here)."""

    def find(judging: Judging) -> Iterator[Breach]:
        cursor = judging.cursor
        at = judging.positions.get(model.name, 0)
        topics = list(model.topics)
        cursor.execute(
            _RECENTLY_CHANGED,
            {
                "at": at,
                "window": REBUILD_WINDOW,
                "topics": topics,
                "candidates": 10 * REBUILD_SAMPLE,
                "max_events": REBUILD_MAX_EVENTS,
                "sample": REBUILD_SAMPLE,
            },
        )
        ids = [row["originator_id"] for row in cursor.fetchall()]
        if not ids:
            return
        cursor.execute(_EVENTS_OF, (ids, at, topics))
        events = [
            RecordedEvent(
                position=row["notification_id"],
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
                recorded_at=row["recorded_at"],
            )
            for row in cursor.fetchall()
        ]
        # The model's own view and handlers, writing into temporary tables instead.
        scratch_class: type[ProjectionView] = type(
            f"Rebuilt{model.view_class.__name__}", (model.view_class,), {"table": _scratch_table}
        )
        view = scratch_class(judging.datastore, name=model.name, generation=0)
        for logical, columns in view.tables.items():
            cursor.execute(
                SQL("CREATE TEMP TABLE {} ").format(view.table(logical))
                + SQL(columns)
                + SQL(" ON COMMIT DROP")
            )
        with view.batch(cursor):
            apply_events(model(view), judging.mapper, events)
        found: list[Breach] = []
        for table, key in keys.items():
            cursor.execute(
                SQL(_COMPARE).format(
                    live=Identifier(table), rebuilt=view.table(table), key=Identifier(key)
                ),
                {"table": table, "ids": ids},
            )
            found += [_plain(row) for row in cursor.fetchall()]
        for logical in view.tables:
            cursor.execute(SQL("DROP TABLE {}").format(view.table(logical)))
        yield from found

    return find


# --- the registry ----------------------------------------------------------------------------

CHECKS: list[Check] = [
    Check(
        "trial-balance",
        "The ledger's entries sum to zero.",
        ("ledger",),
        _query(_TRIAL_BALANCE),
    ),
    Check(
        "balance-equals-entries",
        "Every account's balance is the sum of its entries.",
        ("ledger",),
        _query(_BALANCE_MISMATCHES),
    ),
    Check(
        "user-balance-not-negative",
        "No user's posted balance is negative.",
        ("ledger",),
        _query(_NEGATIVE_USERS),
    ),
    Check(
        "user-available-not-negative",
        "No user's available balance (posted less reserved) is negative.",
        ("ledger",),
        _query(_NEGATIVE_AVAILABLE),
    ),
    Check(
        "pending-transfer-resolved-once",
        "A pending transfer has its two entries once posted, and none otherwise.",
        ("ledger",),
        _query(_PENDING_ENTRIES_WRONG),
    ),
    Check(
        "one-grant-per-verified-purchase",
        "Every verified purchase has exactly one entitlement.",
        ("purchases", "entitlements"),
        _grants_not_one,
    ),
    Check(
        "race-escrow-empty-when-done",
        "A settled race's escrow holds only its pending payouts; a paid or void one nothing.",
        ("ledger", "races"),
        _query(_RACE_ESCROWS_NOT_EMPTY, lambda j: (j.common,)),
    ),
    Check(
        "race-escrow-not-negative",
        "No race's escrow is negative.",
        ("ledger",),
        _query(_RACE_ESCROWS_NEGATIVE),
    ),
    Check(
        "race-settlement-conserved",
        "A settlement balances (gross + subsidy = takeout + paid + breakage) over every ticket.",
        ("races",),
        _query(_SETTLEMENTS_NOT_CONSERVED),
    ),
    Check(
        "race-pool-equals-counted-tickets",
        "A race's pools are the sum of its counted tickets.",
        ("races",),
        _query(_POOLS_NOT_TICKETS),
    ),
    Check(
        "payout-authorized-before-posting",
        "A posted payout was approved before it, for its table, within the TTL, by enough"
        " admins other than its maker.",
        ("payouts", "users"),
        _query(_PAYOUTS_NOT_AUTHORIZED, lambda j: {"admins": j.admins, "at": j.common}),
    ),
    Check(
        "withdrawal-posted-with-verified-tx",
        "A posted withdrawal has a verified transaction of exactly its amount, settling"
        " nothing else.",
        ("withdrawals", "deposits", "purchases"),
        _query(_WITHDRAWALS_WITHOUT_VERIFIED_TX, _at_common),
    ),
    Check(
        "treasury-outgoing-equals-posted-withdrawals",
        "`treasury:outgoing` holds exactly what posted withdrawals paid.",
        ("ledger", "withdrawals"),
        _query(_OUTGOING_NOT_POSTED_WITHDRAWALS, _at_common),
    ),
    Check(
        "prop-position-equals-fills",
        "Every prop position's size is the sum of its fills, and no fills leave a position"
        " unshown.",
        ("prop_accounts", "prop_fills"),
        _positions_not_fills,
    ),
    Check(
        "ledger-matches-rebuild-sample",
        "A sample of transfers rebuilt from the log has the ledger's entry and pending rows.",
        ("ledger",),
        _rebuild_sample(
            LedgerEntries, {"ledger_entries": "transfer_id", "ledger_pending": "transfer_id"}
        ),
    ),
    Check(
        "prop-accounts-match-rebuild-sample",
        "A sample of prop accounts rebuilt from the log has their summary rows.",
        ("prop_accounts",),
        _rebuild_sample(PropAccounts, {"prop_accounts": "account_id"}),
    ),
    Check(
        "prop-fills-match-rebuild-sample",
        "A sample of prop accounts rebuilt from the log has their fill rows.",
        ("prop_fills",),
        _rebuild_sample(PropFills, {"prop_fills": "account_id"}),
    ),
]
"""Every invariant the monitor holds the read models to: the one list."""

READ_MODELS = tuple(sorted({name for check in CHECKS for name in check.reads}))
RULES = {check.name: check.rule for check in CHECKS}
"""Each check's rule, by name (a kept run may name a check since retired: no rule)."""


@dataclass(frozen=True)
class CheckResult:
    """One check in one run: its breaches (at most `MAX_BREACHES_SHOWN` of `breach_count`)."""

    name: str
    ok: bool
    position: int
    breach_count: int
    breaches: list[Breach]


@dataclass(frozen=True)
class Reconciliation:
    trial_balance_minor: int
    breaches: list[Breach] = field(default_factory=list)
    """Every check's breaches shown, each with its check's name under `check`."""
    checked_at: datetime | None = None
    position: int | None = None
    """The run's common position: the lowest of the positions of the models it read."""
    age_seconds: float | None = None
    """How long ago it was kept, by the database's clock (the one that stamped it)."""
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.trial_balance_minor == 0
            and not self.breaches
            and all(check.ok for check in self.checks)
        )


def reconcile(
    datastore: PostgresDatastore,
    admins: Collection[str] = (),
    *,
    mapper: Mapper[Any] | None = None,
) -> Reconciliation:
    """Every registered check, on one snapshot. `admins`: the addresses configured as
    admins (whose approvals count as an admin's, like those of users granted the role);
    `mapper`: the log's (by default, the log's transcoding: its events are neither
    compressed nor enciphered, only snapshots are sealed)."""
    results: list[CheckResult] = []
    with datastore.transaction() as cursor:
        # One snapshot for every check. Not READ ONLY: the rebuild sample writes temporary
        # tables (dropped within; the transaction is rolled back, never committed).
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        positions = _positions(cursor)
        judging = Judging(
            cursor=cursor,
            datastore=datastore,
            mapper=mapper or Mapper(transcoder=OrjsonTranscoder()),
            positions=positions,
            common=min((positions.get(name, 0) for name in READ_MODELS), default=0),
            admins=[a.lower() for a in admins],
        )
        for check in CHECKS:
            results.append(_run(check, judging))
    breaches = [{"check": r.name, **b} for r in results for b in r.breaches]
    trial = next((r.breaches[0] for r in results if r.name == "trial-balance" and r.breaches), None)
    return Reconciliation(
        int(trial.get("total_minor", 0)) if trial else 0,
        breaches,
        position=judging.common,
        checks=results,
    )


def _run(check: Check, judging: Judging) -> CheckResult:
    shown: list[Breach] = []
    count = 0
    try:
        # A savepoint: a check that fails rolls back alone and the run goes on.
        with judging.cursor.connection.transaction():
            for breach in check.find(judging):
                count += 1
                if len(shown) < MAX_BREACHES_SHOWN:
                    shown.append(breach)
    except Exception as error:  # a check that cannot judge is not passed
        count += 1
        shown.append({"error": f"{type(error).__name__}: {error}"})
    return CheckResult(check.name, count == 0, check.position(judging), count, shown)


def _positions(cursor: Cursor[DictRow]) -> dict[str, int]:
    cursor.execute(
        "SELECT name, generation FROM projection_state WHERE name = ANY(%s)", (list(READ_MODELS),)
    )
    positions = {}
    for row in cursor.fetchall():
        cursor.execute(
            SQL("SELECT max(notification_id) AS at FROM {} WHERE application_name = %s").format(
                Identifier(f"{row['name']}__g{row['generation']}_tracking")
            ),
            (LOG_NAME,),
        )
        tracked = cursor.fetchone()
        positions[row["name"]] = int(tracked["at"] or 0) if tracked else 0
    return positions


# --- results kept ----------------------------------------------------------------------------


def record(datastore: PostgresDatastore, result: Reconciliation) -> None:
    with datastore.transaction(commit=True) as cursor:
        cursor.execute(
            "INSERT INTO reconciliation_checks (ok, trial_balance_minor, breaches, position)"
            " VALUES (%s, %s, %s, %s) RETURNING checked_at",
            (
                result.ok,
                result.trial_balance_minor,
                orjson.dumps(result.breaches).decode(),
                result.position,
            ),
        )
        row = cursor.fetchone()
        assert row is not None
        for check in result.checks:
            cursor.execute(
                "INSERT INTO reconciliation_check_results"
                " (checked_at, name, ok, position, breach_count, breaches)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    row["checked_at"],
                    check.name,
                    check.ok,
                    check.position,
                    check.breach_count,
                    orjson.dumps(check.breaches).decode(),
                ),
            )


def reconcile_and_record(
    datastore: PostgresDatastore, admins: Collection[str] = (), *, mapper: Mapper[Any] | None = None
) -> Reconciliation:
    """Check and keep the result: judged at one common position, a check never skips."""
    result = reconcile(datastore, admins, mapper=mapper)
    record(datastore, result)
    return result


@dataclass(frozen=True, slots=True)
class CheckRow:
    trial_balance_minor: int
    breaches: list[Breach]
    checked_at: datetime
    age_seconds: float
    position: int | None

    def result(self, checks: list[CheckResult]) -> Reconciliation:
        return Reconciliation(
            self.trial_balance_minor,
            list(self.breaches),
            self.checked_at,
            self.position,
            age_seconds=max(self.age_seconds, 0.0),
            checks=checks,
        )


# The age by the database's clock, which stamped `checked_at`: no skew between hosts.
_LATEST = SQL(
    "SELECT trial_balance_minor, breaches, checked_at, position,"
    " extract(epoch FROM clock_timestamp() - checked_at)::float8 AS age_seconds"
    " FROM reconciliation_checks ORDER BY checked_at DESC LIMIT 1"
)
_CHECKS_OF = SQL(
    "SELECT name, ok, position, breach_count, breaches FROM reconciliation_check_results"
    " WHERE checked_at = %s ORDER BY name"
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
    """The latest kept run (for the metrics scrape, which is not async)."""
    with datastore.transaction() as cursor:
        cursor.execute(_LATEST)
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(_CHECKS_OF, (row["checked_at"],))
        checks = [CheckResult(**check) for check in cursor.fetchall()]
    return CheckRow(**row).result(checks)


async def latest_check(reads: ProjectionReads) -> Reconciliation | None:
    """The latest kept run, for HTTP reads."""
    row = await reads.one(CheckRow, _LATEST, ())
    if row is None:
        return None
    checks = await reads.all(CheckResult, _CHECKS_OF, (row.checked_at,))
    return row.result(checks)


def _plain(row: Mapping[str, Any]) -> Breach:
    return {
        key: str(value) if not isinstance(value, int | str | None) else value
        for key, value in row.items()
    }
