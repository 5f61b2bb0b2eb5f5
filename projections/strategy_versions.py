"""Published strategy versions as the engine reads them: a row of the `clones` read model's
`clone_versions` with its clone's owner (the tables are `projections/clones.py`'s; these
are the engine's queries over them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.sql import SQL

from projections.reads import ProjectionReads


@dataclass(frozen=True, slots=True)
class PublishedVersionRow:
    clone_id: UUID
    owner_id: UUID
    version_id: str
    number: int
    graph: dict[str, Any]
    published_at: datetime


async def published_version(
    reads: ProjectionReads, clone_id: UUID, version_id: str
) -> PublishedVersionRow | None:
    """The clone's published version `version_id` (its canonical graph) and its owner."""
    query = SQL(
        "SELECT v.clone_id, c.owner_id, v.version_id, v.number, v.graph, v.published_at"
        " FROM clone_versions v JOIN clones c ON c.clone_id = v.clone_id"
        " WHERE v.clone_id = %s AND v.version_id = %s"
    )
    return await reads.one(PublishedVersionRow, query, (clone_id, version_id))
