"""Users: wallet address, roles, first and last sign-in. No token material."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg.sql import SQL

from aggregates.users import User
from projections.base import ProjectionView, ReadModel
from projections.dispatch import event_handlers, topics_of
from projections.reads import ProjectionReads, columns


class UsersView(ProjectionView):
    tables: ClassVar[dict[str, str]] = {
        "users": """(
            user_id uuid PRIMARY KEY,
            address text NOT NULL UNIQUE,
            roles text[] NOT NULL DEFAULT '{}',
            registered_at timestamptz NOT NULL,
            first_sign_in_at timestamptz,
            last_sign_in_at timestamptz,
            sign_in_count integer NOT NULL DEFAULT 0
        )"""
    }

    def register(self, user_id: UUID, address: str, at: datetime) -> None:
        self.cursor.execute(
            SQL("INSERT INTO {} (user_id, address, registered_at) VALUES (%s, %s, %s)").format(
                self.table("users")
            ),
            (user_id, address, at),
        )

    def record_sign_in(self, user_id: UUID, at: datetime) -> None:
        self.cursor.execute(
            SQL(
                "UPDATE {} SET first_sign_in_at = coalesce(first_sign_in_at, %s),"
                " last_sign_in_at = %s, sign_in_count = sign_in_count + 1 WHERE user_id = %s"
            ).format(self.table("users")),
            (at, at, user_id),
        )

    def set_role(self, user_id: UUID, role: str, held: bool) -> None:
        change = "array_append(array_remove(roles, %s), %s)" if held else "array_remove(roles, %s)"
        params: tuple[Any, ...] = (role, role, user_id) if held else (role, user_id)
        self.cursor.execute(
            SQL("UPDATE {} SET roles = " + change + " WHERE user_id = %s").format(
                self.table("users")
            ),
            params,
        )


class Users(ReadModel[UsersView]):
    name = "users"
    view_class = UsersView
    topics = topics_of(User.Registered, User.SignedIn, User.RoleGranted, User.RoleRevoked)

    process_event = event_handlers()

    @process_event.register
    def _(self, event: User.Registered, tracking: Tracking) -> None:
        self.view.register(event.originator_id, event.address, event.timestamp)

    @process_event.register
    def _(self, event: User.SignedIn, tracking: Tracking) -> None:
        self.view.record_sign_in(event.originator_id, event.timestamp)

    @process_event.register
    def _(self, event: User.RoleGranted, tracking: Tracking) -> None:
        self.view.set_role(event.originator_id, event.role, held=True)

    @process_event.register
    def _(self, event: User.RoleRevoked, tracking: Tracking) -> None:
        self.view.set_role(event.originator_id, event.role, held=False)


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: UUID
    address: str
    roles: list[str]
    registered_at: datetime
    first_sign_in_at: datetime | None
    last_sign_in_at: datetime | None
    sign_in_count: int


async def user_by_id(reads: ProjectionReads, user_id: UUID) -> UserRow | None:
    query = SQL("SELECT {} FROM users WHERE user_id = %s").format(columns(UserRow))
    return await reads.one(UserRow, query, (user_id,))


@dataclass(frozen=True, slots=True)
class UserRoles:
    """What an access token's check needs of its user: the roles held now (`api.auth`)."""

    address: str
    roles: list[str]


async def roles_of_user(reads: ProjectionReads, user_id: UUID) -> UserRoles | None:
    """None when the read model has not seen the user yet (registered a moment ago)."""
    query = SQL("SELECT {} FROM users WHERE user_id = %s").format(columns(UserRoles))
    return await reads.one(UserRoles, query, (user_id,))
