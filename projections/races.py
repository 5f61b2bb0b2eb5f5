"""Races: each race with its status, terms, result and settlement; its entrants with their
live pools; every ticket, marked counted or not; and each race's transitions.

A ticket is counted if the race was open when the ticket's event was read. The runner
reads the log in order, so that is exactly "recorded after `SalesOpened` and before
`SalesClosed`": the pools shown are the pools settlement will use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from aggregates.parimutuel import MICRO_PER_USDC
from aggregates.races import Race, RaceRules, RaceStatus, Ticket
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns
from runtime.transcoder import jsonable


class RacesView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "races": """(
            race_id uuid PRIMARY KEY,
            name text NOT NULL,
            status text NOT NULL,
            sales_open_at timestamptz NOT NULL,
            starts_at timestamptz NOT NULL,
            ends_at timestamptz NOT NULL,
            rules jsonb NOT NULL,
            standings jsonb,
            scratched jsonb,
            summary jsonb,
            finished_at timestamptz,
            status_reason text,
            scheduled_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE,
            status_position bigint NOT NULL
        )""",
        "race_entrants": """(
            race_id uuid NOT NULL,
            clone_id uuid NOT NULL,
            owner_id uuid NOT NULL,
            number integer NOT NULL,
            prop_account_id uuid,
            pool_minor bigint NOT NULL DEFAULT 0,
            tickets integer NOT NULL DEFAULT 0,
            PRIMARY KEY (race_id, clone_id)
        )""",
        "race_tickets": """(
            ticket_id uuid PRIMARY KEY,
            race_id uuid NOT NULL,
            user_id uuid NOT NULL,
            clone_id uuid NOT NULL,
            amount_minor bigint NOT NULL,
            counted boolean NOT NULL,
            bought_at timestamptz NOT NULL,
            position bigint NOT NULL UNIQUE
        )""",
        "race_transitions": """(
            race_id uuid NOT NULL,
            change text NOT NULL,
            reason text NOT NULL,
            actor text NOT NULL,
            at timestamptz NOT NULL,
            position bigint NOT NULL,
            PRIMARY KEY (race_id, position)
        )""",
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "races": ["(status, position)"],
        "race_tickets": ["(race_id, position)", "(user_id, position)"],
    }

    def schedule(self, event: Race.Scheduled, position: int) -> None:
        rules = event.rules
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (race_id, name, status, sales_open_at, starts_at, ends_at, rules,"
                " status_reason, scheduled_at, updated_at, position, status_position)"
                " VALUES (%s, %s, 'scheduled', %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("races")),
            (
                event.originator_id,
                event.name,
                rules["sales_open_at"],
                rules["starts_at"],
                rules["ends_at"],
                Jsonb(jsonable(rules)),
                event.reason,
                event.timestamp,
                event.timestamp,
                position,
                position,
            ),
        )
        self.cursor.executemany(
            SQL(
                "INSERT INTO {} (race_id, clone_id, owner_id, number) VALUES (%s, %s, %s, %s)"
            ).format(self.table("race_entrants")),
            [
                (event.originator_id, e["clone_id"], e["owner_id"], number)
                for number, e in enumerate(event.entrants, start=1)
            ],
        )

    def transition(self, event: Any, status: str | None, position: int, **values: Any) -> None:
        """Record the transition, and set the race's status (unless None) and columns."""
        values = {"status_reason": event.reason, "status_position": position, **values}
        if status is not None:
            values["status"] = status
        self.update_row(
            "races", "race_id", event.originator_id, **values, updated_at=event.timestamp
        )
        self.append_row(
            "race_transitions",
            {
                "race_id": event.originator_id,
                "change": type(event).__name__,
                "reason": event.reason,
                "actor": event.actor,
                "at": event.timestamp,
                "position": position,
            },
        )

    def assign_accounts(self, race_id: UUID, accounts: dict[str, UUID]) -> None:
        self.cursor.executemany(
            SQL("UPDATE {} SET prop_account_id = %s WHERE race_id = %s AND clone_id = %s").format(
                self.table("race_entrants")
            ),
            [(account, race_id, UUID(clone_id)) for clone_id, account in accounts.items()],
        )

    def buy(self, event: Ticket.Bought, position: int) -> None:
        """Counted while the race reads as open here, i.e. between its sales events."""
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (ticket_id, race_id, user_id, clone_id, amount_minor, counted,"
                " bought_at, position) SELECT %s, %s, %s, %s, %s,"
                " coalesce((SELECT status = 'open' FROM {} WHERE race_id = %s), false), %s, %s"
                " RETURNING counted"
            ).format(self.table("race_tickets"), self.table("races")),
            (
                event.originator_id,
                event.race_id,
                event.user_id,
                event.clone_id,
                event.amount_minor,
                event.race_id,
                event.timestamp,
                position,
            ),
        )
        row = self.cursor.fetchone()
        if row is not None and row["counted"]:
            self.cursor.execute(
                SQL(
                    "UPDATE {} SET pool_minor = pool_minor + %s, tickets = tickets + 1"
                    " WHERE race_id = %s AND clone_id = %s"
                ).format(self.table("race_entrants")),
                (event.amount_minor, event.race_id, event.clone_id),
            )


class Races(ReadModel[RacesView]):
    name = "races"
    view_class = RacesView
    topics = topics_of(
        Race.Scheduled,
        Race.SalesOpened,
        Race.SalesClosed,
        Race.Started,
        Race.Finished,
        Race.ResultAmended,
        Race.MadeOfficial,
        Race.Settled,
        Race.SettlementRejected,
        Race.Paid,
        Race.Voided,
        Ticket.Bought,
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Race.Scheduled, tracking: Tracking) -> None:
        self.view.schedule(event, tracking.notification_id)
        self.view.transition(event, None, tracking.notification_id)

    @process_event.register
    def _(self, event: Race.SalesOpened, tracking: Tracking) -> None:
        self.view.transition(event, RaceStatus.OPEN.value, tracking.notification_id)

    @process_event.register
    def _(self, event: Race.SalesClosed, tracking: Tracking) -> None:
        self.view.transition(event, RaceStatus.CLOSED.value, tracking.notification_id)

    @process_event.register
    def _(self, event: Race.Started, tracking: Tracking) -> None:
        self.view.assign_accounts(event.originator_id, event.accounts)
        self.view.transition(
            event,
            RaceStatus.RUNNING.value,
            tracking.notification_id,
            scratched=Jsonb(event.scratched),
        )

    @process_event.register
    def _(self, event: Race.Finished, tracking: Tracking) -> None:
        self.view.transition(
            event,
            RaceStatus.FINISHED.value,
            tracking.notification_id,
            standings=Jsonb(jsonable(event.standings)),
            finished_at=event.finished_at,
        )

    @process_event.register
    def _(self, event: Race.ResultAmended, tracking: Tracking) -> None:
        self.view.transition(
            event, None, tracking.notification_id, standings=Jsonb(jsonable(event.standings))
        )

    @process_event.register
    def _(self, event: Race.MadeOfficial, tracking: Tracking) -> None:
        self.view.transition(event, RaceStatus.OFFICIAL.value, tracking.notification_id)

    @process_event.register
    def _(self, event: Race.Settled, tracking: Tracking) -> None:
        self.view.transition(
            event,
            RaceStatus.SETTLED.value,
            tracking.notification_id,
            summary=Jsonb(jsonable(event.summary)),
        )

    @process_event.register
    def _(self, event: Race.SettlementRejected, tracking: Tracking) -> None:
        self.view.transition(event, RaceStatus.OFFICIAL.value, tracking.notification_id)

    @process_event.register
    def _(self, event: Race.Paid, tracking: Tracking) -> None:
        self.view.transition(event, RaceStatus.PAID.value, tracking.notification_id)

    @process_event.register
    def _(self, event: Race.Voided, tracking: Tracking) -> None:
        self.view.transition(event, RaceStatus.VOID.value, tracking.notification_id)

    @process_event.register
    def _(self, event: Ticket.Bought, tracking: Tracking) -> None:
        self.view.buy(event, tracking.notification_id)


# --- what jobs and commands read (sync: they run in threads) -------------------------------


@dataclass(frozen=True, slots=True)
class TicketRow:
    ticket_id: UUID
    race_id: UUID
    user_id: UUID
    clone_id: UUID
    amount_minor: int
    counted: bool
    bought_at: datetime
    position: int


def tickets_of_race(datastore: PostgresDatastore, race_id: UUID) -> list[TicketRow]:
    with datastore.transaction() as cursor:
        cursor.execute(
            SQL("SELECT {} FROM race_tickets WHERE race_id = %s ORDER BY position").format(
                columns(TicketRow)
            ),
            (race_id,),
        )
        return [TicketRow(**row) for row in cursor.fetchall()]


def active_races(datastore: PostgresDatastore) -> list[UUID]:
    """Races not yet paid or void, oldest first: the calendar's round."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT race_id FROM races WHERE status NOT IN ('paid', 'void') ORDER BY position"
        )
        return [row["race_id"] for row in cursor.fetchall()]


def racing_clones(datastore: PostgresDatastore) -> set[UUID]:
    """Clones entered in a race still to be settled: not picked for another."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT e.clone_id FROM race_entrants e JOIN races r USING (race_id)"
            " WHERE r.status NOT IN ('settled', 'paid', 'void')"
        )
        return {row["clone_id"] for row in cursor.fetchall()}


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaceRow:
    race_id: UUID
    name: str
    status: str
    sales_open_at: datetime
    starts_at: datetime
    ends_at: datetime
    rules: dict[str, Any]
    standings: list[dict[str, Any]] | None
    scratched: dict[str, str] | None
    summary: dict[str, Any] | None
    finished_at: datetime | None
    status_reason: str | None
    scheduled_at: datetime
    position: int

    @property
    def terms(self) -> RaceRules:
        """The pinned rules, back in their types from the JSON kept here."""
        stored = self.rules
        return RaceRules.from_state(
            {
                **stored,
                **{
                    k: datetime.fromisoformat(stored[k])
                    for k in ("sales_open_at", "starts_at", "ends_at")
                },
                "starting_equity": Decimal(stored["starting_equity"]),
            }
        )


@dataclass(frozen=True, slots=True)
class EntrantRow:
    clone_id: UUID
    owner_id: UUID
    number: int
    display_name: str
    prop_account_id: UUID | None
    pool_minor: int
    tickets: int


async def races(reads: ProjectionReads, status: str | None, page: Page) -> list[RaceRow]:
    query = SQL(
        "SELECT {} FROM races WHERE (%s::text IS NULL OR status = %s) AND position > %s"
        " ORDER BY position LIMIT %s"
    ).format(columns(RaceRow))
    return await reads.all(RaceRow, query, (status, status, page.position(), page.fetch))


async def race_by_id(reads: ProjectionReads, race_id: UUID) -> RaceRow | None:
    query = SQL("SELECT {} FROM races WHERE race_id = %s").format(columns(RaceRow))
    return await reads.one(RaceRow, query, (race_id,))


async def entrants_of(reads: ProjectionReads, race_id: UUID) -> list[EntrantRow]:
    """A race's entrants in their numbered order, with their names and live pools."""
    query = SQL(
        "SELECT e.clone_id, e.owner_id, e.number, e.prop_account_id, e.pool_minor, e.tickets,"
        " coalesce(nullif(p.display_name, ''), c.name, '') AS display_name"
        " FROM race_entrants e"
        " LEFT JOIN clones c ON c.clone_id = e.clone_id"
        " LEFT JOIN public_profiles p ON p.clone_id = e.clone_id"
        " WHERE e.race_id = %s ORDER BY e.number"
    )
    return await reads.all(EntrantRow, query, (race_id,))


@dataclass(frozen=True, slots=True)
class UserTicketRow:
    ticket_id: UUID
    race_id: UUID
    user_id: UUID
    clone_id: UUID
    amount_minor: int
    counted: bool
    bought_at: datetime
    position: int
    race_status: str
    standings: list[dict[str, Any]] | None
    scratched: dict[str, str] | None
    summary: dict[str, Any] | None


_USER_TICKETS = (
    "SELECT t.ticket_id, t.race_id, t.user_id, t.clone_id, t.amount_minor, t.counted,"
    " t.bought_at, t.position, r.status AS race_status, r.standings, r.scratched, r.summary"
    " FROM race_tickets t JOIN races r USING (race_id)"
)


@dataclass(frozen=True)
class TicketOutcome:
    status: str
    """pending (not settled yet), won (paid once the payout is authorized), lost, or
    refunded."""
    returned_minor: int
    """What the ticket pays back: a payout, a refund, or nothing."""


def outcome_of(ticket: UserTicketRow) -> TicketOutcome:
    """What a ticket came to, from its race's settlement (the same rules `settle` applied:
    void, uncounted, scratched and no-winning-ticket stakes come back; a winner is paid at
    its entrant's published price)."""
    if ticket.race_status == RaceStatus.VOID:
        return TicketOutcome("refunded", ticket.amount_minor)
    if ticket.race_status not in (RaceStatus.SETTLED, RaceStatus.PAID) or ticket.summary is None:
        return TicketOutcome("pending", 0)
    prices = {UUID(str(p["clone_id"])): p["price_minor"] for p in ticket.summary["prices"]}
    scratched = {UUID(clone_id) for clone_id in ticket.scratched or {}}
    if not ticket.counted or ticket.clone_id in scratched or not prices:
        return TicketOutcome("refunded", ticket.amount_minor)
    price = prices.get(ticket.clone_id)
    if price is None:
        return TicketOutcome("lost", 0)
    return TicketOutcome("won", ticket.amount_minor * price // MICRO_PER_USDC)


async def tickets_of_user(reads: ProjectionReads, user_id: UUID, page: Page) -> list[UserTicketRow]:
    query = SQL(
        _USER_TICKETS + " WHERE t.user_id = %s AND t.position > %s ORDER BY t.position LIMIT %s"
    )
    return await reads.all(UserTicketRow, query, (user_id, page.position(), page.fetch))


async def ticket_by_id(reads: ProjectionReads, ticket_id: UUID) -> UserTicketRow | None:
    return await reads.one(
        UserTicketRow, SQL(_USER_TICKETS + " WHERE t.ticket_id = %s"), (ticket_id,)
    )


@dataclass(frozen=True, slots=True)
class RaceCountRow:
    status: str
    races: int


async def race_counts(reads: ProjectionReads) -> list[RaceCountRow]:
    """How many races are in each status (the operator console's races at a glance)."""
    query = SQL("SELECT status, count(*)::int AS races FROM races GROUP BY status ORDER BY status")
    return await reads.all(RaceCountRow, query, ())


async def latest_races(reads: ProjectionReads, limit: int) -> list[RaceRow]:
    """The most recently changed races, newest first."""
    query = SQL("SELECT {} FROM races ORDER BY position DESC LIMIT %s").format(columns(RaceRow))
    return await reads.all(RaceRow, query, (limit,))
