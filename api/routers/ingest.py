"""Market-data ingestion: the feature channels strategy graphs can name, their stored
values (public reads), and ingestion health per source and per channel (admins and the
`health:read` scope)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import BaseModel, TypeAdapter

from api.deps import ClockDep, ReadsDep, SettingsDep, health_reader
from api.pagination import PageDep
from api.routing import APIRouter
from ingest import channels
from ingest.channels import Channel, ChannelNotFoundError, ChannelValueRow, catalog
from ingest.health import Health, health_report
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


def value_public(row: ChannelValueRow) -> ChannelValuePublic:
    return ChannelValuePublic(time=row.observed_at, value=row.value)


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
async def list_channels(reads: ReadsDep, settings: SettingsDep) -> list[ChannelPublic]:
    """Every feature channel the settings define, with the schema and latest value."""
    latest = {row.channel: value_public(row) for row in await channels.latest_values(reads)}
    return [channel_public(c, latest.get(c.name)) for c in catalog(settings)]


@router.get("/v1/ingest/channels/{name}/values", operation_id="ingest_channel_values")
async def channel_values(
    name: ChannelName, reads: ReadsDep, settings: SettingsDep, page: PageDep
) -> ChannelValuesPublic:
    """A channel's stored values, newest first."""
    if name not in {c.name for c in catalog(settings)}:
        raise ChannelNotFoundError(f"no feature channel named {name!r}")
    rows, next_cursor = page.cut(
        await channels.channel_values(reads, name, page.moment("observed_at"), page.fetch),
        "observed_at",
    )
    return ChannelValuesPublic(
        channel=name, items=[value_public(row) for row in rows], next_cursor=next_cursor
    )


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


@router.get(
    "/v1/health/ingestion",
    operation_id="health_ingestion",
    tags=["health"],
    dependencies=[Depends(health_reader)],  # raw error text: admins and `health:read` only
)
async def ingestion_health(
    reads: ReadsDep, settings: SettingsDep, clock: ClockDep
) -> IngestionHealthPublic:
    """Per source and per channel: last success, last error, staleness against the cadence,
    and `ok`, `stale` (nothing new for 3 cadences) or `failing` (the latest attempt failed)."""
    report = await health_report(reads, watched(settings), clock())
    return IngestionHealthPublic(
        mode=settings.ingest_mode,
        sources=[status_public(h) for h in report if h.kind == "source"],
        channels=[status_public(h) for h in report if h.kind == "channel"],
    )
