"""The arena's read model: each clone's membership (the queue is the `queued` rows, the
members the seated ones), every membership change as history, the arena's controls, and
each recorded admission round.

Eligibility is not stored: it depends on profiles, clones and owners that change on their
own, so the queue as shown joins their read models when read and judges each entry with
the same rule an admission round applies (`skip_reason`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from aggregates.arena import (
    SEATED,
    AdmissionRound,
    Arena,
    ArenaMembership,
    Candidate,
    EntryFacts,
    SkipReason,
    skip_reason,
)
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class ArenaView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "arena_memberships": """(
            membership_id uuid PRIMARY KEY,
            clone_id uuid NOT NULL UNIQUE,
            owner_id uuid NOT NULL,
            status text NOT NULL,
            audition_id uuid,
            attempt integer,
            passed_at timestamptz,
            queued_at timestamptz,
            admitted_at timestamptz,
            round_id uuid,
            status_reason text,
            updated_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE,
            ordinal bigint NOT NULL UNIQUE
        )""",
        "arena_membership_history": """(
            membership_id uuid NOT NULL,
            change text NOT NULL,
            reason text,
            round_id uuid,
            audition_id uuid,
            attempt integer,
            actor text NOT NULL,
            at timestamptz NOT NULL,
            position bigint NOT NULL,
            PRIMARY KEY (membership_id, position)
        )""",
        "arena_controls": """(
            arena_id uuid PRIMARY KEY,
            capacity integer,
            paused boolean NOT NULL DEFAULT false,
            pause_reason text,
            seats integer NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL
        )""",
        "arena_rounds": """(
            round_id uuid PRIMARY KEY,
            held_at timestamptz NOT NULL,
            actor text NOT NULL,
            capacity integer NOT NULL,
            seats_before integer NOT NULL,
            paused boolean NOT NULL,
            admitted uuid[] NOT NULL,
            skipped jsonb NOT NULL,
            position bigint NOT NULL UNIQUE
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "arena_memberships": ["(status, passed_at, clone_id)", "(owner_id)"],
    }

    def open(
        self, membership_id: UUID, clone_id: UUID, owner_id: UUID, at: datetime, position: int
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (membership_id, clone_id, owner_id, status, updated_at,"
                " position, ordinal) VALUES (%s, %s, %s, 'opened', %s, %s, %s)"
            ).format(self.table("arena_memberships")),
            (membership_id, clone_id, owner_id, at, position, position),
        )

    def change_membership(
        self, event: Any, change: str, position: int, status: str | None = None, **values: Any
    ) -> None:
        """Set the membership's status (the change's name unless given) and columns, and
        keep the change in its history."""
        values = {"status": status or change, **values}
        self.update_row(
            "arena_memberships",
            "membership_id",
            event.originator_id,
            **values,
            updated_at=event.timestamp,
        )
        self.append_row(
            "arena_membership_history",
            {
                "membership_id": event.originator_id,
                "change": change,
                "reason": getattr(event, "reason", None),
                "round_id": getattr(event, "round_id", None),
                "audition_id": getattr(event, "audition_id", None),
                "attempt": getattr(event, "attempt", None),
                "actor": event.actor,
                "at": event.timestamp,
                "position": position,
            },
        )

    def open_arena(self, arena_id: UUID, at: datetime) -> None:
        self.cursor.execute(
            SQL("INSERT INTO {} (arena_id, updated_at) VALUES (%s, %s)").format(
                self.table("arena_controls")
            ),
            (arena_id, at),
        )

    def set_controls(self, arena_id: UUID, at: datetime, change: SQL, *params: Any) -> None:
        self.cursor.execute(
            SQL("UPDATE {} SET {}, updated_at = %s WHERE arena_id = %s").format(
                self.table("arena_controls"), change
            ),
            (*params, at, arena_id),
        )

    def hold_round(self, event: AdmissionRound.Held, position: int) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (round_id, held_at, actor, capacity, seats_before, paused,"
                " admitted, skipped, position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("arena_rounds")),
            (
                event.originator_id,
                event.timestamp,
                event.actor,
                event.capacity,
                event.seats_before,
                event.paused,
                event.admitted,
                Jsonb([{**s, "clone_id": str(s["clone_id"])} for s in event.skipped]),
                position,
            ),
        )


class ArenaReadModel(ReadModel[ArenaView]):
    name = "arena"
    view_class = ArenaView
    topics = topics_of(
        ArenaMembership.Opened,
        ArenaMembership.Queued,
        ArenaMembership.Admitted,
        ArenaMembership.Suspended,
        ArenaMembership.Reinstated,
        ArenaMembership.Removed,
        ArenaMembership.Retired,
        Arena.Opened,
        Arena.CapacityChanged,
        Arena.AdmissionsPaused,
        Arena.AdmissionsResumed,
        Arena.SeatsFilled,
        Arena.SeatFreed,
        AdmissionRound.Held,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: ArenaMembership.Opened, tracking: Tracking) -> None:
        self.view.open(
            event.originator_id,
            event.clone_id,
            event.owner_id,
            event.timestamp,
            tracking.notification_id,
        )

    @process_event.register
    def _(self, event: ArenaMembership.Queued, tracking: Tracking) -> None:
        self.view.change_membership(
            event,
            "queued",
            tracking.notification_id,
            audition_id=event.audition_id,
            attempt=event.attempt,
            passed_at=event.passed_at,
            queued_at=event.timestamp,
            ordinal=tracking.notification_id,
            admitted_at=None,
            round_id=None,
            status_reason=None,
        )

    @process_event.register
    def _(self, event: ArenaMembership.Admitted, tracking: Tracking) -> None:
        self.view.change_membership(
            event,
            "admitted",
            tracking.notification_id,
            admitted_at=event.timestamp,
            round_id=event.round_id,
            ordinal=tracking.notification_id,
        )

    @process_event.register
    def _(self, event: ArenaMembership.Suspended, tracking: Tracking) -> None:
        self.view.change_membership(
            event, "suspended", tracking.notification_id, status_reason=event.reason
        )

    @process_event.register
    def _(self, event: ArenaMembership.Reinstated, tracking: Tracking) -> None:
        self.view.change_membership(
            event, "reinstated", tracking.notification_id, "admitted", status_reason=None
        )

    @process_event.register
    def _(self, event: ArenaMembership.Removed, tracking: Tracking) -> None:
        self.view.change_membership(
            event, "removed", tracking.notification_id, status_reason=event.reason
        )

    @process_event.register
    def _(self, event: ArenaMembership.Retired, tracking: Tracking) -> None:
        self.view.change_membership(
            event, "retired", tracking.notification_id, status_reason=event.reason
        )

    @process_event.register
    def _(self, event: Arena.Opened, tracking: Tracking) -> None:
        self.view.open_arena(event.originator_id, event.timestamp)

    @process_event.register
    def _(self, event: Arena.CapacityChanged, tracking: Tracking) -> None:
        self.view.set_controls(
            event.originator_id, event.timestamp, SQL("capacity = %s"), event.capacity
        )

    @process_event.register
    def _(self, event: Arena.AdmissionsPaused, tracking: Tracking) -> None:
        self.view.set_controls(
            event.originator_id,
            event.timestamp,
            SQL("paused = true, pause_reason = %s"),
            event.reason,
        )

    @process_event.register
    def _(self, event: Arena.AdmissionsResumed, tracking: Tracking) -> None:
        self.view.set_controls(
            event.originator_id, event.timestamp, SQL("paused = false, pause_reason = NULL")
        )

    @process_event.register
    def _(self, event: Arena.SeatsFilled, tracking: Tracking) -> None:
        self.view.set_controls(
            event.originator_id, event.timestamp, SQL("seats = seats + %s"), len(event.clone_ids)
        )

    @process_event.register
    def _(self, event: Arena.SeatFreed, tracking: Tracking) -> None:
        self.view.set_controls(event.originator_id, event.timestamp, SQL("seats = seats - 1"))

    @process_event.register
    def _(self, event: AdmissionRound.Held, tracking: Tracking) -> None:
        self.view.hold_round(event, tracking.notification_id)


# --- the admission round's candidates (sync: commands and jobs run in threads) -------------

_QUEUED = """
    SELECT m.clone_id, NOT EXISTS (
        SELECT 1 FROM clones c WHERE c.owner_id = m.owner_id AND c.ban_reason IS NOT NULL
    ) AS owner_in_good_standing
    FROM arena_memberships m WHERE m.status = 'queued'
    ORDER BY m.passed_at, m.clone_id
"""


def admission_candidates(datastore: PostgresDatastore) -> list[Candidate]:
    """Every queued clone in queue order (pass time, then clone id), with whether its
    owner is in good standing (no banned clone): what an admission round considers."""
    with datastore.transaction() as cursor:
        cursor.execute(_QUEUED)
        return [Candidate(row["clone_id"], row["owner_in_good_standing"]) for row in cursor]


def admitted_members(datastore: PostgresDatastore) -> list[UUID]:
    """Members that are admitted (not suspended), in the order admitted: who races."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT clone_id FROM arena_memberships WHERE status = 'admitted' ORDER BY ordinal"
        )
        return [row["clone_id"] for row in cursor.fetchall()]


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueFactsRow:
    """A queued clone with what its eligibility depends on, from the other read models."""

    clone_id: UUID
    owner_id: UUID
    audition_id: UUID
    attempt: int
    passed_at: datetime
    queued_at: datetime
    clone_name: str | None
    clone_status: str | None
    clone_banned: bool
    profile_status: str | None
    display_name: str | None
    owner_in_good_standing: bool


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued clone as the queue shows it: `place` among every queued clone, `position`
    among the eligible ones (None while skipped), and why it is skipped."""

    clone_id: UUID
    owner_id: UUID
    audition_id: UUID
    attempt: int
    passed_at: datetime
    queued_at: datetime
    display_name: str
    place: int
    position: int | None
    skip_reason: SkipReason | None

    @property
    def eligible(self) -> bool:
        return self.skip_reason is None


_FACTS = """
    SELECT m.clone_id, m.owner_id, m.audition_id, m.attempt, m.passed_at, m.queued_at,
        c.name AS clone_name, c.status AS clone_status,
        coalesce(c.ban_reason IS NOT NULL, false) AS clone_banned,
        p.status AS profile_status, nullif(p.display_name, '') AS display_name,
        NOT EXISTS (
            SELECT 1 FROM clones b WHERE b.owner_id = m.owner_id AND b.ban_reason IS NOT NULL
        ) AS owner_in_good_standing
    FROM arena_memberships m
    LEFT JOIN clones c ON c.clone_id = m.clone_id
    LEFT JOIN public_profiles p ON p.clone_id = m.clone_id
    WHERE m.status = 'queued'
    ORDER BY m.passed_at, m.clone_id
"""


def ranked(rows: Sequence[QueueFactsRow]) -> list[QueueEntry]:
    """Judge each queued clone with the admission rule, and number them in queue order."""
    entries, eligible = [], 0
    for place, row in enumerate(rows, start=1):
        reason = skip_reason(
            EntryFacts(
                clone_banned=row.clone_banned,
                clone_archived=row.clone_status == "archived",
                profile_status=row.profile_status,
                owner_in_good_standing=row.owner_in_good_standing,
            )
        )
        eligible += reason is None
        entries.append(
            QueueEntry(
                clone_id=row.clone_id,
                owner_id=row.owner_id,
                audition_id=row.audition_id,
                attempt=row.attempt,
                passed_at=row.passed_at,
                queued_at=row.queued_at,
                display_name=row.display_name or row.clone_name or "",
                place=place,
                position=eligible if reason is None else None,
                skip_reason=reason,
            )
        )
    return entries


async def queue(reads: ProjectionReads) -> list[QueueEntry]:
    """The whole queue in order, each entry judged. The queue is the clones that passed and
    wait for a seat: small next to the log, so it is judged whole and paged by place."""
    return ranked(await reads.all(QueueFactsRow, SQL(_FACTS), ()))


@dataclass(frozen=True, slots=True)
class MemberRow:
    clone_id: UUID
    owner_id: UUID
    display_name: str
    status: str
    status_reason: str | None
    admitted_at: datetime | None
    round_id: UUID | None
    ordinal: int
    """Where the membership last entered: its admission (members in the order admitted,
    queue order within a round) or, for the queued, its entry."""


@dataclass(frozen=True)
class MemberFilter:
    statuses: tuple[str, ...] = tuple(s.value for s in SEATED)
    owner_id: UUID | None = None


async def members(reads: ProjectionReads, where: MemberFilter, page: Page) -> list[MemberRow]:
    """Memberships in the order admitted (see `ordinal`), narrowed by status and owner."""
    query = SQL(
        "SELECT m.clone_id, m.owner_id, m.status, m.status_reason, m.admitted_at,"
        " m.round_id, m.ordinal,"
        " coalesce(nullif(p.display_name, ''), c.name, '') AS display_name"
        " FROM arena_memberships m"
        " LEFT JOIN clones c ON c.clone_id = m.clone_id"
        " LEFT JOIN public_profiles p ON p.clone_id = m.clone_id"
        " WHERE m.status = ANY(%s) AND (%s::uuid IS NULL OR m.owner_id = %s)"
        " AND m.ordinal > %s ORDER BY m.ordinal LIMIT %s"
    )
    params = (
        list(where.statuses),
        where.owner_id,
        where.owner_id,
        page.position("ordinal"),
        page.fetch,
    )
    return await reads.all(MemberRow, query, params)


@dataclass(frozen=True, slots=True)
class MembershipRow:
    clone_id: UUID
    owner_id: UUID
    status: str
    status_reason: str | None
    audition_id: UUID | None
    attempt: int | None
    passed_at: datetime | None
    queued_at: datetime | None
    admitted_at: datetime | None
    round_id: UUID | None


async def membership_of(reads: ProjectionReads, clone_id: UUID) -> MembershipRow | None:
    return await reads.one(
        MembershipRow,
        SQL("SELECT {} FROM arena_memberships WHERE clone_id = %s").format(columns(MembershipRow)),
        (clone_id,),
    )


@dataclass(frozen=True, slots=True)
class ChangeRow:
    change: str
    reason: str | None
    round_id: UUID | None
    audition_id: UUID | None
    attempt: int | None
    actor: str
    at: datetime


async def history_of(reads: ProjectionReads, clone_id: UUID) -> list[ChangeRow]:
    """Every change of the clone's membership, oldest first."""
    query = SQL(
        "SELECT {} FROM arena_membership_history h"
        " JOIN arena_memberships m USING (membership_id)"
        " WHERE m.clone_id = %s ORDER BY h.position"
    ).format(columns(ChangeRow, "h"))
    return await reads.all(ChangeRow, query, (clone_id,))


@dataclass(frozen=True, slots=True)
class ControlsRow:
    capacity: int | None
    paused: bool
    pause_reason: str | None
    seats: int


async def controls(reads: ProjectionReads) -> ControlsRow | None:
    """None until the first admission or admin control opened the arena."""
    return await reads.one(
        ControlsRow, SQL("SELECT {} FROM arena_controls").format(columns(ControlsRow)), ()
    )


@dataclass(frozen=True, slots=True)
class RoundRow:
    round_id: UUID
    held_at: datetime
    actor: str
    capacity: int
    seats_before: int
    paused: bool
    admitted: list[UUID]
    skipped: list[dict[str, Any]]


async def latest_round(reads: ProjectionReads) -> RoundRow | None:
    return await reads.one(
        RoundRow,
        SQL("SELECT {} FROM arena_rounds ORDER BY position DESC LIMIT 1").format(columns(RoundRow)),
        (),
    )


@dataclass(frozen=True)
class ArenaGauges:
    queue_depth: int
    eligible: int
    members: int
    capacity: int | None


def gauges(datastore: PostgresDatastore) -> ArenaGauges:
    """What the metrics scrape reports (sync, like the other collectors)."""
    with datastore.transaction() as cursor:
        cursor.execute(_FACTS)
        rows = [QueueFactsRow(**row) for row in cursor.fetchall()]
        cursor.execute(
            "SELECT count(*) AS n FROM arena_memberships WHERE status = ANY(%s)",
            ([s.value for s in SEATED],),
        )
        seated = cursor.fetchone()
        cursor.execute("SELECT capacity FROM arena_controls")
        control = cursor.fetchone()
    entries = ranked(rows)
    return ArenaGauges(
        queue_depth=len(entries),
        eligible=sum(entry.eligible for entry in entries),
        members=int(seated["n"]) if seated else 0,
        capacity=control["capacity"] if control else None,
    )
