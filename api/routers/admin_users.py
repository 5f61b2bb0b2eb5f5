"""Admins grant and revoke roles; each change is an event with the admin as actor."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Path
from pydantic import BaseModel, Field

from api.commands import AdminCommand
from api.routing import APIRouter
from services import identity

router = APIRouter(prefix="/v1/admin/users", tags=["admin"])


class RoleCreate(BaseModel):
    role: str = Field(min_length=1, max_length=32)


class RolesPublic(BaseModel):
    user_id: UUID
    roles: list[str]
    position: int


@router.post("/{user_id}/roles", operation_id="admin_grant_role")
def grant_role(user_id: UUID, body: RoleCreate, admin: AdminCommand) -> RolesPublic:
    written = identity.grant_role(admin.event_log, admin.context, user_id, body.role)
    return RolesPublic(user_id=user_id, roles=written.result, position=written.position)


@router.delete("/{user_id}/roles/{role}", operation_id="admin_revoke_role")
def revoke_role(
    user_id: UUID,
    role: Annotated[str, Path(max_length=32)],
    admin: AdminCommand,
) -> RolesPublic:
    written = identity.revoke_role(admin.event_log, admin.context, user_id, role)
    return RolesPublic(user_id=user_id, roles=written.result, position=written.position)
