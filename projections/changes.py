"""Changes for the live stream (`GET /v1/stream`): what each log position changed, for whom.

Not a read model of its own: a query over read models that already exist. The `audit_log`
read model has every event with its position, aggregate type and id; each event of an
aggregate type the stream carries is joined to the read model that knows who owns it
(`clones`, `auditions`, `prop_accounts`, `purchases`, `deposits`, `entitlements`,
`races`, `arena`, `ledger`), and becomes one `Change` per reader: a topic, the owner who
may see it (None: public) and a small payload of ids and status, never the event's body.

A change is read only at or below `stream_position`, the lowest position of every read
model used here: `audit_log` then holds every event up to it (log order never skips, and
rows commit with their position), and each owner's row exists, since it was written by an
earlier (or the same) event. Owners and ids never change, and the status comes from the
event's type, not from the row as it is now, so reading the same range twice gives the
same changes: a stream resumed from a position repeats nothing and misses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Composed, Identifier

from aggregates.arena import ArenaMembership, MembershipStatus
from aggregates.auditions import Audition, AuditionStatus
from aggregates.clones import Clone
from aggregates.deposits import Deposit
from aggregates.entitlements import Entitlement, EntitlementStatus
from aggregates.ledger import PendingTransfer, Transfer, TransferStatus
from aggregates.prop_accounts import CLOSED, FROZEN, OPEN, PropAccount
from aggregates.purchases import Purchase, PurchaseStatus
from aggregates.races import Race, RaceStatus, Ticket
from projections.reads import ProjectionReads, columns
from runtime.schema import LOG_NAME

STREAM_READ_MODELS = (
    "audit_log",
    "clones",
    "auditions",
    "prop_accounts",
    "purchases",
    "deposits",
    "entitlements",
    "races",
    "arena",
    "ledger",
)
"""Every read model a change is read from: the stream waits for the slowest of them."""

TOPICS: dict[str, tuple[str, str]] = {
    Clone.__name__: ("clone", "clone_id"),
    Audition.__name__: ("audition", "audition_id"),
    PropAccount.__name__: ("prop", "account_id"),
    Purchase.__name__: ("purchase", "purchase_id"),
    Deposit.__name__: ("deposit", "deposit_id"),
    Entitlement.__name__: ("entitlement", "entitlement_id"),
    Ticket.__name__: ("ticket", "ticket_id"),
    Transfer.__name__: ("ledger", "transfer_id"),
    PendingTransfer.__name__: ("ledger", "transfer_id"),
    Race.__name__: ("race", "race_id"),
    ArenaMembership.__name__: ("arena", "membership_id"),
}
"""Aggregate type -> (the message's topic, the name of its id in the payload)."""

PRIVATE_ARENA_CHANGES = (ArenaMembership.Opened.__name__, ArenaMembership.Queued.__name__)
"""A queue entry is its owner's business (an ineligible one is shown only to them); every
other membership change (admitted, suspended, reinstated, removed, retired) is public, as
the arena's members list is."""

_PENDING = PurchaseStatus.PENDING.value
STATUS: dict[str, str] = {
    event.__qualname__: str(status)
    for event, status in (
        (Clone.Created, "active"),
        (Clone.Archived, "archived"),
        (Audition.Submitted, AuditionStatus.RUNNING),
        (Audition.AttemptStarted, AuditionStatus.RUNNING),
        (Audition.Passed, AuditionStatus.PASSED),
        (Audition.Failed, AuditionStatus.FAILED),
        (Audition.Voided, AuditionStatus.VOIDED),
        (PropAccount.Opened, OPEN),
        (PropAccount.Frozen, FROZEN),
        (PropAccount.Unfrozen, OPEN),
        (PropAccount.Closed, CLOSED),
        (Purchase.Submitted, _PENDING),
        (Purchase.StillPending, _PENDING),
        (Purchase.Verified, PurchaseStatus.VERIFIED),
        (Purchase.Rejected, PurchaseStatus.REJECTED),
        (Deposit.Submitted, _PENDING),
        (Deposit.Incoming, _PENDING),
        (Deposit.StillPending, _PENDING),
        (Deposit.Verified, PurchaseStatus.VERIFIED),
        (Deposit.Rejected, PurchaseStatus.REJECTED),
        (Entitlement.Granted, EntitlementStatus.AVAILABLE),
        (Entitlement.Consumed, EntitlementStatus.CONSUMED),
        (Entitlement.Restored, EntitlementStatus.AVAILABLE),
        (Entitlement.Revoked, EntitlementStatus.REVOKED),
        (Transfer.Posted, TransferStatus.POSTED),
        (PendingTransfer.Reserved, TransferStatus.PENDING),
        (PendingTransfer.Posted, TransferStatus.POSTED),
        (PendingTransfer.Voided, TransferStatus.VOIDED),
        (Race.Scheduled, RaceStatus.SCHEDULED),
        (Race.SalesOpened, RaceStatus.OPEN),
        (Race.SalesClosed, RaceStatus.CLOSED),
        (Race.Started, RaceStatus.RUNNING),
        (Race.Finished, RaceStatus.FINISHED),
        (Race.ResultAmended, RaceStatus.FINISHED),
        (Race.MadeOfficial, RaceStatus.OFFICIAL),
        (Race.Settled, RaceStatus.SETTLED),
        (Race.SettlementRejected, RaceStatus.OFFICIAL),
        (Race.Paid, RaceStatus.PAID),
        (Race.Voided, RaceStatus.VOID),
        (ArenaMembership.Queued, MembershipStatus.QUEUED),
        (ArenaMembership.Admitted, MembershipStatus.ADMITTED),
        (ArenaMembership.Suspended, MembershipStatus.SUSPENDED),
        (ArenaMembership.Reinstated, MembershipStatus.ADMITTED),
        (ArenaMembership.Removed, MembershipStatus.REMOVED),
        (ArenaMembership.Retired, MembershipStatus.RETIRED),
    )
}
"""`Aggregate.Event` -> the status that event leaves its resource in (none for a change
that leaves the status as it was, such as a draft save or a fill)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One message of the stream: `position` is its id; `owner_id` None is public."""

    position: int
    topic: str
    owner_id: UUID | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChangeRow:
    position: int
    aggregate_type: str
    event_type: str
    aggregate_id: UUID
    owner_id: UUID | None
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Position:
    position: int | None


@dataclass(frozen=True, slots=True)
class _Generation:
    name: str
    generation: int


_USER_ACCOUNT = r"^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# Each branch answers for one aggregate type: who owns the event's resource (NULL: public)
# and the ids the payload adds. A branch whose type does not match is skipped at once.
_OWNERS = """
    SELECT c.owner_id, NULL::jsonb AS detail FROM clones c
     WHERE a.aggregate_type = 'Clone' AND c.clone_id = a.aggregate_id
    UNION ALL
    SELECT x.owner_id, jsonb_build_object('clone_id', x.clone_id) FROM auditions x
     WHERE a.aggregate_type = 'Audition' AND x.audition_id = a.aggregate_id
    UNION ALL
    SELECT p.owner_id, jsonb_build_object('clone_id', p.clone_id, 'purpose', p.purpose)
      FROM prop_accounts p
     WHERE a.aggregate_type = 'PropAccount' AND p.account_id = a.aggregate_id
    UNION ALL
    SELECT u.user_id, NULL FROM purchases u
     WHERE a.aggregate_type = 'Purchase' AND u.purchase_id = a.aggregate_id
    UNION ALL
    SELECT d.user_id, NULL FROM deposits d
     WHERE a.aggregate_type = 'Deposit' AND d.deposit_id = a.aggregate_id
    UNION ALL
    SELECT n.user_id, NULL FROM entitlements n
     WHERE a.aggregate_type = 'Entitlement' AND n.entitlement_id = a.aggregate_id
    UNION ALL
    SELECT t.user_id, jsonb_build_object('race_id', t.race_id, 'clone_id', t.clone_id,
           'amount_minor', t.amount_minor) FROM race_tickets t
     WHERE a.aggregate_type = 'Ticket' AND t.ticket_id = a.aggregate_id
    UNION ALL
    SELECT substr(e.account, 6)::uuid, jsonb_build_object('amount_minor', e.amount_minor)
      FROM ledger_entries e
     WHERE a.aggregate_type = 'Transfer' AND e.transfer_id = a.aggregate_id
       AND e.account ~ %(user_account)s
    UNION ALL
    SELECT substr(s.account, 6)::uuid, jsonb_build_object('amount_minor', s.amount_minor)
      FROM ledger_pending l, LATERAL (VALUES (l.debit_account, -l.amount_minor),
           (l.credit_account, l.amount_minor)) AS s (account, amount_minor)
     WHERE a.aggregate_type = 'PendingTransfer' AND l.transfer_id = a.aggregate_id
       AND s.account ~ %(user_account)s
    UNION ALL
    SELECT NULL::uuid, NULL FROM races r
     WHERE a.aggregate_type = 'Race' AND r.race_id = a.aggregate_id
    UNION ALL
    SELECT CASE WHEN a.event_type = ANY(%(private_arena)s) THEN m.owner_id END,
           jsonb_build_object('clone_id', m.clone_id) FROM arena_memberships m
     WHERE a.aggregate_type = 'ArenaMembership' AND m.membership_id = a.aggregate_id
"""

_CHANGES = (
    "SELECT a.position, a.aggregate_type, a.event_type, a.aggregate_id, o.owner_id, o.detail"
    " FROM audit_log a CROSS JOIN LATERAL (" + _OWNERS + ") AS o"
    " WHERE a.position > %(after)s AND a.position <= %(upto)s"
    " AND a.aggregate_type = ANY(%(types)s)"
)


async def stream_position(reads: ProjectionReads) -> int:
    """The highest position up to which every read model the stream reads has applied the
    log: every change at or below it can be read, and reads the same ever after."""
    states = await reads.all(
        _Generation,
        "SELECT name, generation FROM projection_state WHERE name = ANY(%s)",
        (list(STREAM_READ_MODELS),),
    )
    if len(states) < len(STREAM_READ_MODELS):
        return 0
    parts = [
        SQL("coalesce((SELECT notification_id FROM {} WHERE application_name = %s), 0)").format(
            Identifier(f"{state.name}__g{state.generation}_tracking")
        )
        for state in states
    ]
    query = SQL("SELECT least({}) AS position").format(SQL(", ").join(parts))
    row = await reads.one(_Position, query, [LOG_NAME] * len(parts))
    return (row.position or 0) if row else 0


async def changes_between(
    reads: ProjectionReads, after: int, upto: int, user_id: UUID | None = None
) -> list[Change]:
    """The changes at positions in (`after`, `upto`], in log order: every reader's, or
    (given `user_id`) those that user may see, theirs and the public ones. Read only
    up to `stream_position`."""
    params: dict[str, Any] = {
        "after": after,
        "upto": upto,
        "types": list(TOPICS),
        "private_arena": list(PRIVATE_ARENA_CHANGES),
        "user_account": _USER_ACCOUNT,
    }
    query: Composed | SQL = SQL(_CHANGES)
    if user_id is not None:
        query = query + SQL(" AND (o.owner_id IS NULL OR o.owner_id = %(user_id)s)")
        params["user_id"] = user_id
    query = SQL("SELECT {} FROM ({}) AS changes ORDER BY position").format(
        columns(ChangeRow), query
    )
    rows = await reads.all(ChangeRow, query, params)
    return [change_of(row) for row in rows]


def change_of(row: ChangeRow) -> Change:
    topic, id_name = TOPICS[row.aggregate_type]
    data: dict[str, Any] = {id_name: str(row.aggregate_id), **(row.detail or {})}
    data["change"] = row.event_type
    status = STATUS.get(f"{row.aggregate_type}.{row.event_type}")
    if status is not None:
        data["status"] = status
    data["position"] = row.position
    return Change(row.position, topic, row.owner_id, data)
