"""Public profiles: anyone reads an approved profile; signed-in users report one."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from fastapi import Depends
from pydantic import BaseModel

from aggregates.errors import NotFoundError
from aggregates.profiles import ReportDetails
from api.commands import UserCommand
from api.deps import (
    ServicesDep,
    SettingsDep,
    found,
    wait_for,
)
from api.routing import APIRouter
from projections import public_profiles
from services import cloning

router = APIRouter(prefix="/v1/public/profiles", tags=["public profiles"])


class PublicProfilePublic(BaseModel):
    profile_id: UUID
    clone_id: UUID
    display_name: str
    bio: str
    avatar_url: str | None
    links: list[str]
    approved_at: datetime | None


class ReportCreate(ReportDetails):
    pass


class ReportWrittenPublic(BaseModel):
    report_id: UUID
    profile_id: UUID
    position: int


@router.get(
    "/{profile_id}",
    operation_id="public_profile_get",
    dependencies=[Depends(wait_for("public_profiles"))],
)
async def get_profile(profile_id: UUID, services: ServicesDep) -> PublicProfilePublic:
    """Anonymous: an approved profile that is not hidden; anything else is 404."""
    row = await found(
        services,
        "public_profiles",
        lambda: public_profiles.visible_profile(services.reads, profile_id),
    )
    if row is None:
        raise NotFoundError(f"profile {profile_id} not found")
    return PublicProfilePublic.model_validate(row, from_attributes=True)


@router.post("/{profile_id}/reports", status_code=201, operation_id="public_profile_report")
def report_profile(
    profile_id: UUID,
    body: ReportCreate,
    user: UserCommand,
    settings: SettingsDep,
) -> ReportWrittenPublic:
    """One report per user per profile: a repeat is answered the same and counts once.

    Only reports from users in good standing (moderators, admins, and wallets that first
    signed in at least `PUMPPARTY_CLONE_REPORT_MIN_ACCOUNT_AGE` seconds ago) count towards
    hiding the profile for review; the others are recorded for the moderators all the same."""
    written = cloning.report_profile(
        user.event_log,
        user.context,
        profile_id=profile_id,
        reporter_id=user.user_id,
        details=body,
        threshold=settings.clone_report_threshold,
        reporter_min_age=timedelta(seconds=settings.clone_report_min_account_age),
    )
    return ReportWrittenPublic(
        report_id=written.result, profile_id=profile_id, position=written.position
    )
