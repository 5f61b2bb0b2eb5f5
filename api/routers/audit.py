"""Auditors read the full history: the flattened log, any aggregate's events and state,
and the chain's head digest. Admins, or services with the `audit:read` scope."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query
from pydantic import AwareDatetime, BaseModel

from api.auth import require_admin_or_scope
from api.commands import items_of
from api.deps import EventLogDep, ReadsDep, wait_for
from api.pagination import PageDep
from api.routing import APIRouter
from api.schemas import SearchText
from projections import audit_chain, audit_log
from services.audit import history, state_at

router = APIRouter(
    prefix="/v1/audit",
    tags=["audit"],
    dependencies=[Depends(require_admin_or_scope("audit:read"))],
)


class AuditEntryPublic(BaseModel):
    position: int
    aggregate_id: UUID
    aggregate_type: str
    event_type: str
    version: int
    actor: str | None
    correlation_id: str | None
    causation_id: str | None
    schema_version: int | None
    occurred_at: datetime | None
    recorded_at: datetime


class AuditEntriesPublic(BaseModel):
    items: list[AuditEntryPublic]
    next_cursor: str | None


class AggregateEventPublic(BaseModel):
    version: int
    aggregate_type: str
    event_type: str
    occurred_at: str
    actor: str | None
    correlation_id: str | None
    causation_id: str | None
    schema_version: int | None
    data: dict[str, Any]


class AggregateStatePublic(BaseModel):
    aggregate_id: UUID
    aggregate_type: str
    version: int
    state: dict[str, Any]


class DigestPublic(BaseModel):
    position: int
    hash: str
    digest: str


class AuditFilters(BaseModel):
    aggregate_id: UUID | None = None
    aggregate_type: SearchText | None = None
    event_type: SearchText | None = None
    actor: SearchText | None = None
    correlation_id: SearchText | None = None
    occurred_from: AwareDatetime | None = None
    occurred_to: AwareDatetime | None = None


@router.get("/events", operation_id="audit_events", dependencies=[Depends(wait_for("audit_log"))])
async def audit_events(
    reads: ReadsDep, page: PageDep, filters: Annotated[AuditFilters, Query()]
) -> AuditEntriesPublic:
    where = audit_log.AuditFilter(**filters.model_dump())
    rows, next_cursor = page.cut(await audit_log.audit_entries(reads, where, page), "position")
    return AuditEntriesPublic(
        items=items_of(AuditEntryPublic, rows),
        next_cursor=next_cursor,
    )


@router.get("/aggregates/{aggregate_id}/events", operation_id="audit_aggregate_events")
def aggregate_events(aggregate_id: UUID, event_log: EventLogDep) -> list[AggregateEventPublic]:
    return [
        AggregateEventPublic.model_validate(entry) for entry in history(event_log, aggregate_id)
    ]


@router.get("/aggregates/{aggregate_id}/state", operation_id="audit_aggregate_state")
def aggregate_state(
    aggregate_id: UUID,
    event_log: EventLogDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    at: Annotated[
        AwareDatetime | None, Query(description="state as of this time (ISO 8601, with zone)")
    ] = None,
) -> AggregateStatePublic:
    return AggregateStatePublic.model_validate(
        state_at(event_log, aggregate_id, version=version, at=at)
    )


@router.get("/digest", operation_id="audit_digest")
async def audit_digest(reads: ReadsDep) -> DigestPublic:
    digest = await audit_chain.chain_head(reads)
    if digest is None:
        return DigestPublic(position=0, hash="", digest="0:")
    return DigestPublic(position=digest.position, hash=digest.hash.hex(), digest=str(digest))
