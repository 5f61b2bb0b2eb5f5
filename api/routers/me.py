"""The signed-in user: who they are, and their sessions (owner-safe)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from fastapi import Depends
from pydantic import BaseModel

from aggregates.errors import NotFoundError
from api.auth import CurrentUser, effective_roles, owned_or_404
from api.commands import UserCommand, items_of
from api.deps import (
    ReadsDep,
    ServicesDep,
    SettingsDep,
    found,
    wait_for,
)
from api.pagination import PageDep
from api.routing import APIRouter
from api.schemas import WrittenPublic
from projections import sessions, users
from services import identity

router = APIRouter(tags=["me"])


class MePublic(BaseModel):
    id: UUID
    address: str
    roles: list[str]
    registered_at: datetime
    first_sign_in_at: datetime | None
    last_sign_in_at: datetime | None
    sign_in_count: int


class SessionPublic(BaseModel):
    session_id: UUID
    status: str
    started_at: datetime
    last_refreshed_at: datetime | None
    refresh_expires_at: datetime
    absolute_expires_at: datetime
    rotations: int
    reuse_detected_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None


class SessionsPublic(BaseModel):
    items: list[SessionPublic]
    next_cursor: str | None


@router.get("/v1/me", operation_id="me", dependencies=[Depends(wait_for("users"))])
async def me(user: CurrentUser, services: ServicesDep, settings: SettingsDep) -> MePublic:
    row = await found(services, "users", lambda: users.user_by_id(services.reads, user.user_id))
    if row is None:
        raise NotFoundError("user not found")
    return MePublic(
        id=row.user_id,
        address=row.address,
        roles=sorted(effective_roles(row.roles, row.address, settings)),
        registered_at=row.registered_at,
        first_sign_in_at=row.first_sign_in_at,
        last_sign_in_at=row.last_sign_in_at,
        sign_in_count=row.sign_in_count,
    )


@router.get(
    "/v1/sessions", operation_id="sessions_list", dependencies=[Depends(wait_for("sessions"))]
)
async def list_sessions(user: CurrentUser, reads: ReadsDep, page: PageDep) -> SessionsPublic:
    rows, next_cursor = page.cut(
        await sessions.sessions_of_user(reads, user.user_id, page), "started_at", "session_id"
    )
    return SessionsPublic(
        items=items_of(SessionPublic, rows),
        next_cursor=next_cursor,
    )


@router.get(
    "/v1/sessions/{session_id}",
    operation_id="session_get",
    dependencies=[Depends(wait_for("sessions"))],
)
async def get_session(session_id: UUID, user: CurrentUser, services: ServicesDep) -> SessionPublic:
    row = await found(
        services, "sessions", lambda: sessions.session_by_id(services.reads, session_id)
    )
    owned_or_404(row.user_id if row else None, user, f"session {session_id}")
    return SessionPublic.model_validate(row, from_attributes=True)


@router.delete("/v1/sessions/{session_id}", operation_id="session_revoke")
def revoke_session(session_id: UUID, user: UserCommand) -> WrittenPublic:
    written = identity.revoke_session(
        user.event_log,
        user.context,
        session_id=session_id,
        owner_id=user.user_id,
        reason="revoked-by-owner",
    )
    return WrittenPublic(position=written.position)
