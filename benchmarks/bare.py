"""The baseline for HTTP reads: a bare ASGI app (Starlette, an async psycopg pool, orjson)
running the same SELECTs as `GET /v1/clones` and `GET /v1/clones/{id}`, with no auth,
no dependencies, no validation and no middleware.

`benchmarks.http` serves it with uvicorn beside the API: `uvicorn benchmarks.bare:app`,
with the service role's URL in BENCH_BARE_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import orjson
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composed
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from projections.clones import CloneRow, CloneSummaryRow, DraftSummaryRow, VersionSummaryRow
from runtime.reads import columns

URL_ENV = "BENCH_BARE_DATABASE_URL"
POOL_SIZE_ENV = "BENCH_BARE_POOL_SIZE"
PAGE = 50  # the API's default page
DETAIL_LIMIT = 50  # the API's drafts and versions in a detail

# The product's queries (projections/clones.py), column for column.
LIST = SQL(
    "SELECT {} FROM clones WHERE owner_id = %s AND position > %s"
    " AND (%s::text IS NULL OR status = %s) ORDER BY position LIMIT %s"
).format(columns(CloneSummaryRow))
ONE = SQL("SELECT {} FROM clones WHERE clone_id = %s").format(columns(CloneRow))
DRAFTS = SQL(
    "SELECT {} FROM clone_drafts WHERE clone_id = %s ORDER BY number DESC LIMIT %s"
).format(columns(DraftSummaryRow))
VERSIONS = SQL(
    "SELECT {} FROM clone_versions WHERE clone_id = %s ORDER BY number DESC LIMIT %s"
).format(columns(VersionSummaryRow))

pool = AsyncConnectionPool(
    os.environ.get(URL_ENV, ""),
    min_size=1,
    max_size=int(os.environ.get(POOL_SIZE_ENV, "8")),
    kwargs={"autocommit": True},
    open=False,
)


async def rows(query: Composed, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    async with pool.connection() as connection, connection.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def list_clones(request: Request) -> Response:
    owner = UUID(request.query_params["owner"])
    found = await rows(LIST, (owner, 0, None, None, PAGE + 1))
    return json({"items": found[:PAGE], "next_cursor": None})


async def get_clone(request: Request) -> Response:
    owner = UUID(request.query_params["owner"])
    clone_id = UUID(request.path_params["clone_id"])
    found = await rows(ONE, (clone_id,))
    if not found or found[0]["owner_id"] != owner:
        return json({"detail": "not found"}, 404)
    drafts, versions = await asyncio.gather(
        rows(DRAFTS, (clone_id, DETAIL_LIMIT)), rows(VERSIONS, (clone_id, DETAIL_LIMIT))
    )
    return json({**found[0], "drafts": drafts, "versions": versions})


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    await pool.open(wait=True)
    try:
        yield
    finally:
        await pool.close()


app = Starlette(
    routes=[
        Route("/bare/clones", list_clones),
        Route("/bare/clones/{clone_id}", get_clone),
    ],
    lifespan=lifespan,
)
