"""Entitlements by owner: what each user may still spend on an audition."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL

from aggregates.entitlements import Entitlement
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.paging import Page
from projections.reads import ProjectionReads, columns


class EntitlementsView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "entitlements": """(
            entitlement_id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            purchase_id uuid NOT NULL UNIQUE,
            kind text NOT NULL,
            status text NOT NULL,
            consumed_by uuid,
            reason text,
            granted_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )"""
    }
    indexes: ClassVar[dict[str, list[str]]] = {
        "entitlements": ["(user_id, granted_at, entitlement_id)"]
    }

    def grant(
        self, entitlement_id: UUID, user_id: UUID, purchase_id: UUID, kind: str, at: datetime
    ) -> None:
        self.cursor.execute(
            SQL(
                "INSERT INTO {} (entitlement_id, user_id, purchase_id, kind, status, granted_at, updated_at)"
                " VALUES (%s, %s, %s, %s, 'available', %s, %s)"
            ).format(self.table("entitlements")),
            (entitlement_id, user_id, purchase_id, kind, at, at),
        )

    def set_status(
        self,
        entitlement_id: UUID,
        status: str,
        at: datetime,
        consumed_by: UUID | None,
        reason: str | None,
    ) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET status = %s, consumed_by = %s, reason = %s, updated_at = %s"
                " WHERE entitlement_id = %s"
            ).format(self.table("entitlements")),
            (status, consumed_by, reason, at, entitlement_id),
        )


class Entitlements(ReadModel[EntitlementsView]):
    name = "entitlements"
    view_class = EntitlementsView
    topics = topics_of(
        Entitlement.Granted, Entitlement.Consumed, Entitlement.Restored, Entitlement.Revoked
    )

    process_event = event_handlers()

    @process_event.register
    def _(self, event: Entitlement.Granted, tracking: Tracking) -> None:
        self.view.grant(
            event.originator_id, event.user_id, event.purchase_id, event.kind, event.timestamp
        )

    @process_event.register
    def _(self, event: Entitlement.Consumed, tracking: Tracking) -> None:
        self.view.set_status(
            event.originator_id, "consumed", event.timestamp, event.audition_id, None
        )

    @process_event.register
    def _(self, event: Entitlement.Restored, tracking: Tracking) -> None:
        self.view.set_status(event.originator_id, "available", event.timestamp, None, event.reason)

    @process_event.register
    def _(self, event: Entitlement.Revoked, tracking: Tracking) -> None:
        self.view.set_status(event.originator_id, "revoked", event.timestamp, None, event.reason)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntitlementRow:
    entitlement_id: UUID
    purchase_id: UUID
    kind: str
    status: str
    consumed_by: UUID | None
    reason: str | None
    granted_at: datetime


async def entitlements_of_user(
    reads: ProjectionReads, user_id: UUID, page: Page
) -> list[EntitlementRow]:
    """A page of the user's entitlements, oldest first (cursor: granted_at, entitlement_id)."""
    after_time, after_id = page.moment("granted_at"), page.identifier("entitlement_id")
    query = SQL(
        "SELECT {} FROM entitlements WHERE user_id = %s AND (%s::timestamptz IS NULL"
        " OR (granted_at, entitlement_id) > (%s::timestamptz, %s::uuid))"
        " ORDER BY granted_at, entitlement_id LIMIT %s"
    ).format(columns(EntitlementRow))
    params = (user_id, after_time, after_time, after_id, page.fetch)
    return await reads.all(EntitlementRow, query, params)


ENTITLEMENT_CANDIDATES = 20
"""How many available entitlements a command is offered; it consumes the first still free."""


def available_entitlements(datastore: PostgresDatastore, user_id: UUID) -> list[UUID]:
    """The user's audition entitlements the economy's read model shows available, oldest
    first. The model may lag; the command loads each and consumes the first truly free."""
    with datastore.transaction() as cursor:
        cursor.execute(
            "SELECT entitlement_id FROM entitlements WHERE user_id = %s AND kind = 'audition'"
            " AND status = 'available' ORDER BY granted_at, entitlement_id LIMIT %s",
            (user_id, ENTITLEMENT_CANDIDATES),
        )
        return [row["entitlement_id"] for row in cursor.fetchall()]
