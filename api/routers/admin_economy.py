"""Admins revoke entitlements, with a reason; the admin is the actor."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel

from api.commands import AdminCommand
from api.schemas import Reason, WrittenPublic
from services import economy

router = APIRouter(prefix="/v1/admin/entitlements", tags=["admin"])


class RevocationCreate(BaseModel):
    reason: Reason


@router.post("/{entitlement_id}/revoke", operation_id="admin_revoke_entitlement")
def revoke(
    entitlement_id: UUID,
    body: RevocationCreate,
    admin: AdminCommand,
) -> WrittenPublic:
    written = economy.revoke_entitlement(
        admin.event_log, admin.context, entitlement_id, body.reason
    )
    return WrittenPublic(position=written.position)
