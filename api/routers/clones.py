"""Clones (owner routes): create, list, read, update, archive, drafts, versions, profile.

Every route here answers someone else's clone with 404, exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar
from uuid import UUID

from fastapi import Body, Depends, Query, Response
from pydantic import BaseModel

from aggregates.clones import CloneDescription, CloneName
from aggregates.profiles import ProfileDetails
from aggregates.strategy_graph import GraphRules
from api.auth import CurrentUser, Principal, owned_or_404
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
from api.schemas import IdempotencyKey
from projections import clones, public_profiles
from runtime.settings import Settings
from services import cloning
from services.bootstrap import Services
from services.market_data import MarketIntervals

router = APIRouter(prefix="/v1/clones", tags=["clones"])

DETAIL_LIMIT = 50
"""How many of the latest drafts and versions a clone's detail lists."""

EXAMPLE_GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "btc", "kind": "data_source", "channel": "hyperliquid.BTC.return_1h"},
        {"id": "z", "kind": "feature_transform", "transform": "zscore", "window": 24},
        {
            "id": "llm",
            "kind": "model",
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "prompt": {"template": "Momentum z-score: {{momentum}}.", "variables": ["momentum"]},
        },
        {"id": "sig", "kind": "signal", "long_above": "0.3", "short_below": "-0.3"},
        {
            "id": "risk",
            "kind": "risk_rule",
            "asset": "BTC",
            "max_position_fraction": "0.25",
            "stop_loss_fraction": "0.05",
        },
        {"id": "buy", "kind": "action", "asset": "BTC", "size_fraction": "0.5"},
    ],
    "edges": [
        {"from": "btc", "to": "z"},
        {"from": "z", "to": "llm", "port": "momentum"},
        {"from": "llm", "to": "sig"},
        {"from": "sig", "to": "risk"},
        {"from": "risk", "to": "buy"},
    ],
}


class CloneCreate(BaseModel):
    name: CloneName
    description: CloneDescription = ""


class ClonePatch(BaseModel):
    name: CloneName | None = None
    description: CloneDescription | None = None


class CloneWrittenPublic(BaseModel):
    clone_id: UUID
    position: int


class CloneSummaryPublic(BaseModel):
    clone_id: UUID
    name: str
    description: str
    status: str
    banned: bool
    draft_number: int
    version_count: int
    latest_version_id: str | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None


class ClonesPublic(BaseModel):
    items: list[CloneSummaryPublic]
    next_cursor: str | None


class DraftSummaryPublic(BaseModel):
    number: int
    digest: str
    saved_at: datetime


class CurrentDraftPublic(DraftSummaryPublic):
    graph: dict[str, Any]


class VersionSummaryPublic(BaseModel):
    version_id: str
    number: int
    draft_number: int
    published_at: datetime


class CloneDetailPublic(CloneSummaryPublic):
    ban_reason: str | None
    draft: CurrentDraftPublic | None
    drafts: list[DraftSummaryPublic]
    versions: list[VersionSummaryPublic]


class DraftWrittenPublic(BaseModel):
    clone_id: UUID
    number: int
    digest: str
    graph: dict[str, Any]
    position: int


class VersionWrittenPublic(BaseModel):
    clone_id: UUID
    version_id: str
    number: int
    created: bool
    position: int


class VersionPublic(VersionSummaryPublic):
    graph: dict[str, Any]


class VersionsPublic(BaseModel):
    items: list[VersionPublic]
    next_cursor: str | None


class ProfileCreate(ProfileDetails):
    pass


class ProfileWrittenPublic(BaseModel):
    profile_id: UUID
    clone_id: UUID
    status: str
    position: int


class OwnProfilePublic(BaseModel):
    profile_id: UUID
    clone_id: UUID
    display_name: str
    bio: str
    avatar_url: str | None
    links: list[str]
    status: str
    visible: bool
    status_reason: str | None
    submitted_at: datetime | None
    approved_at: datetime | None
    updated_at: datetime


def graph_rules(settings: Settings) -> GraphRules:
    return GraphRules(
        max_nodes=settings.clone_graph_max_nodes,
        max_edges=settings.clone_graph_max_edges,
        max_depth=settings.clone_graph_max_depth,
        channels=frozenset(settings.clone_channels),
        assets=frozenset(settings.clone_assets),
    )


class Owned(Protocol):
    @property
    def owner_id(self) -> UUID: ...


OwnedRow = TypeVar("OwnedRow", bound=Owned)


async def owned(
    services: Services,
    projection: str,
    read: Callable[[], Awaitable[OwnedRow | None]],
    user: Principal,
    what: str,
) -> OwnedRow:
    """One resource of the caller's, read through `found` (so what was just created is
    there); someone else's is 404, exactly like a missing one."""
    row = await found(services, projection, read)
    owned_or_404(row.owner_id if row else None, user, what)
    assert row is not None  # owned_or_404 refused a missing row
    return row


@router.post("", status_code=201, operation_id="clone_create")
def create_clone(
    body: CloneCreate,
    user: UserCommand,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> CloneWrittenPublic:
    written = cloning.create_clone(
        user.event_log,
        user.context,
        owner_id=user.user_id,
        key=idempotency_key or secrets.token_hex(16),
        name=body.name,
        description=body.description,
        active_limit=settings.clone_active_limit,
    )
    return CloneWrittenPublic(clone_id=written.result, position=written.position)


@router.get("", operation_id="clones_list", dependencies=[Depends(wait_for("clones"))])
async def list_clones(
    user: CurrentUser,
    reads: ReadsDep,
    page: PageDep,
    status: Annotated[str | None, Query(pattern="^(active|archived)$")] = None,
) -> ClonesPublic:
    rows, next_cursor = page.cut(
        await clones.clones_of_owner(reads, user.user_id, status, page), "position"
    )
    return ClonesPublic(
        items=items_of(CloneSummaryPublic, rows),
        next_cursor=next_cursor,
    )


@router.get("/{clone_id}", operation_id="clone_get", dependencies=[Depends(wait_for("clones"))])
async def get_clone(clone_id: UUID, user: CurrentUser, services: ServicesDep) -> CloneDetailPublic:
    row = await owned(
        services,
        "clones",
        lambda: clones.clone_by_id(services.reads, clone_id),
        user,
        f"clone {clone_id}",
    )
    drafts, versions = await asyncio.gather(
        clones.latest_drafts(services.reads, clone_id, DETAIL_LIMIT),
        clones.latest_versions(services.reads, clone_id, DETAIL_LIMIT),
    )
    return CloneDetailPublic(
        **CloneSummaryPublic.model_validate(row, from_attributes=True).model_dump(),
        ban_reason=row.ban_reason,
        draft=CurrentDraftPublic.model_validate(row.draft, from_attributes=True)
        if row.draft
        else None,
        drafts=[DraftSummaryPublic.model_validate(d, from_attributes=True) for d in drafts],
        versions=[VersionSummaryPublic.model_validate(v, from_attributes=True) for v in versions],
    )


@router.patch("/{clone_id}", operation_id="clone_update")
def update_clone(clone_id: UUID, body: ClonePatch, user: UserCommand) -> CloneWrittenPublic:
    written = cloning.update_clone(
        user.event_log,
        user.context,
        clone_id=clone_id,
        owner_id=user.user_id,
        name=body.name,
        description=body.description,
    )
    return CloneWrittenPublic(clone_id=clone_id, position=written.position)


@router.post("/{clone_id}/archive", operation_id="clone_archive")
def archive_clone(clone_id: UUID, user: UserCommand) -> CloneWrittenPublic:
    written = cloning.archive_clone(
        user.event_log, user.context, clone_id=clone_id, owner_id=user.user_id
    )
    return CloneWrittenPublic(clone_id=clone_id, position=written.position)


@router.put("/{clone_id}/draft", operation_id="clone_save_draft")
def save_draft(
    clone_id: UUID,
    graph: Annotated[
        dict[Any, Any],
        Body(
            description=(
                "the strategy graph; a guardrail failure is a 422 whose `errors` name each"
                " rule and the JSON pointer of the node or edge at fault in this body"
            ),
            examples=[EXAMPLE_GRAPH],
        ),
    ],
    user: UserCommand,
    settings: SettingsDep,
) -> DraftWrittenPublic:
    written = cloning.save_draft(
        user.event_log,
        user.context,
        clone_id=clone_id,
        owner_id=user.user_id,
        graph=graph,
        rules=graph_rules(settings),
    )
    draft = written.result
    return DraftWrittenPublic(
        clone_id=clone_id,
        number=draft.number,
        digest=draft.digest,
        graph=draft.graph,
        position=written.position,
    )


@router.post("/{clone_id}/versions", status_code=201, operation_id="clone_publish")
def publish_version(
    clone_id: UUID,
    response: Response,
    user: UserCommand,
    settings: SettingsDep,
    services: ServicesDep,
) -> VersionWrittenPublic:
    """Publish the current draft. A graph already published is answered 200, not again; a
    graph whose `cadence` is an interval the market-data store does not hold is refused
    (422 `cadence-not-ingested`, naming the cadences available)."""
    written = cloning.publish_version(
        user.event_log,
        user.context,
        clone_id=clone_id,
        owner_id=user.user_id,
        rules=graph_rules(settings),
        market=MarketIntervals.of(services.datastore, settings),
    )
    version = written.result
    if not version.created:
        response.status_code = 200
    return VersionWrittenPublic(
        clone_id=clone_id,
        version_id=version.version_id,
        number=version.number,
        created=version.created,
        position=written.position,
    )


@router.get(
    "/{clone_id}/versions",
    operation_id="clone_versions_list",
    dependencies=[Depends(wait_for("clones"))],
)
async def list_versions(
    clone_id: UUID, user: CurrentUser, services: ServicesDep, page: PageDep
) -> VersionsPublic:
    await owned(
        services,
        "clones",
        lambda: clones.clone_owner(services.reads, clone_id),
        user,
        f"clone {clone_id}",
    )
    rows, next_cursor = page.cut(
        await clones.versions_of_clone(services.reads, clone_id, page), "position"
    )
    return VersionsPublic(
        items=items_of(VersionPublic, rows),
        next_cursor=next_cursor,
    )


@router.put("/{clone_id}/profile", operation_id="clone_submit_profile")
def submit_profile(clone_id: UUID, body: ProfileCreate, user: UserCommand) -> ProfileWrittenPublic:
    """Submit or edit the public profile; it waits for an admin's approval again."""
    written = cloning.submit_profile(
        user.event_log,
        user.context,
        clone_id=clone_id,
        owner_id=user.user_id,
        details=body,
    )
    state = written.result
    return ProfileWrittenPublic(
        profile_id=state.profile_id,
        clone_id=state.clone_id,
        status=state.status,
        position=written.position,
    )


@router.get(
    "/{clone_id}/profile",
    operation_id="clone_profile_get",
    dependencies=[Depends(wait_for("public_profiles"))],
)
async def get_profile(clone_id: UUID, user: CurrentUser, services: ServicesDep) -> OwnProfilePublic:
    """The clone's profile as its owner sees it: any status, with the moderator's reason."""
    row = await owned(
        services,
        "public_profiles",
        lambda: public_profiles.profile_of_clone(services.reads, clone_id),
        user,
        f"profile of clone {clone_id}",
    )
    return OwnProfilePublic.model_validate(row, from_attributes=True)
