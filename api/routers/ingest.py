"""Market-data ingestion: the feature channels strategy graphs can name, their stored
values, and ingestion health per source and per channel. Public reads."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, TypeAdapter

from api.deps import ClockDep, ServicesDep
from api.pagination import PageDep
from ingest.channels import Channel, ChannelNotFoundError, catalog
from ingest.health import Health, read_health
from ingest.ingestion import watched

router = APIRouter(tags=["ingest"])

_TIME = TypeAdapter(datetime)


class ChannelValuePublic(BaseModel):
    time: datetime
    value: Decimal


class ChannelPublic(BaseModel):
    name: str
    source: str
    instrument: str
    feature: str
    description: str
    unit: str
    window_seconds: float | None
    cadence_seconds: float
    value_schema: dict[str, Any]
    latest: ChannelValuePublic | None


class ChannelValuesPublic(BaseModel):
    channel: str
    items: list[ChannelValuePublic]
    next_cursor: str | None


class IngestionStatusPublic(BaseModel):
    kind: str
    name: str
    status: str
    cadence_seconds: float
    stale_after_seconds: float
    staleness_seconds: float | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    consecutive_failures: int


class IngestionHealthPublic(BaseModel):
    mode: str
    sources: list[IngestionStatusPublic]
    channels: list[IngestionStatusPublic]


ChannelName = Annotated[str, Path(max_length=200, description="e.g. hyperliquid.BTC.return_1h")]


def channel_public(channel: Channel, latest: ChannelValuePublic | None) -> ChannelPublic:
    window = channel.feature.window
    return ChannelPublic(
        name=channel.name,
        source=channel.feature.source,
        instrument=channel.instrument,
        feature=channel.feature.key,
        description=channel.feature.description,
        unit=channel.feature.unit,
        window_seconds=None if window is None else window.total_seconds(),
        cadence_seconds=channel.cadence_seconds,
        value_schema=channel.value_schema(),
        latest=latest,
    )


@router.get("/v1/ingest/channels", operation_id="ingest_channels")
def list_channels(services: ServicesDep) -> list[ChannelPublic]:
    """Every feature channel the settings define, with the schema and latest value."""
    with services.projections.datastore.transaction() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (channel) channel, observed_at, value FROM feature_values"
            " ORDER BY channel, observed_at DESC"
        )
        latest = {
            row["channel"]: ChannelValuePublic(time=row["observed_at"], value=row["value"])
            for row in cursor.fetchall()
        }
    return [channel_public(c, latest.get(c.name)) for c in catalog(services.settings)]


@router.get("/v1/ingest/channels/{name}/values", operation_id="ingest_channel_values")
def channel_values(name: ChannelName, services: ServicesDep, page: PageDep) -> ChannelValuesPublic:
    """A channel's stored values, newest first."""
    if name not in {c.name for c in catalog(services.settings)}:
        raise ChannelNotFoundError(f"no feature channel named {name!r}")
    before = page.moment("observed_at")
    with services.projections.datastore.transaction() as cursor:
        cursor.execute(
            "SELECT observed_at, value FROM feature_values WHERE channel = %s"
            " AND (%s::timestamptz IS NULL OR observed_at < %s)"
            " ORDER BY observed_at DESC LIMIT %s",
            (name, before, before, page.fetch),
        )
        rows, next_cursor = page.cut(cursor.fetchall(), "observed_at")
    items = [ChannelValuePublic(time=r["observed_at"], value=r["value"]) for r in rows]
    return ChannelValuesPublic(channel=name, items=items, next_cursor=next_cursor)


def status_public(health: Health) -> IngestionStatusPublic:
    return IngestionStatusPublic(
        kind=health.kind,
        name=health.name,
        status=health.status,
        cadence_seconds=health.cadence_seconds,
        stale_after_seconds=health.stale_after_seconds,
        staleness_seconds=health.staleness_seconds,
        last_attempt_at=health.last_attempt_at,
        last_success_at=health.last_success_at,
        last_error_at=health.last_error_at,
        last_error=health.last_error,
        consecutive_failures=health.consecutive_failures,
    )


@router.get("/v1/health/ingestion", operation_id="health_ingestion", tags=["health"])
def ingestion_health(services: ServicesDep, clock: ClockDep) -> IngestionHealthPublic:
    """Per source and per channel: last success, last error, staleness against the cadence,
    and `ok`, `stale` (nothing new for 3 cadences) or `failing` (the latest attempt failed)."""
    with services.projections.datastore.transaction() as cursor:
        report = read_health(cursor, watched(services.settings), clock())
    return IngestionHealthPublic(
        mode=services.settings.ingest_mode,
        sources=[status_public(h) for h in report if h.kind == "source"],
        channels=[status_public(h) for h in report if h.kind == "channel"],
    )
