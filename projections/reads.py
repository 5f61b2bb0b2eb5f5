"""How HTTP reads reach the read models: one async connection pool per process, typed rows,
and the positions that read-your-writes waits on.

Query functions live beside their projection (its tables, handlers and queries side by side)
and take a `ReadModels`; each returns frozen dataclass rows, built by psycopg's `class_row`
from a SELECT of exactly the row's fields (`columns(Row)`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from psycopg import AsyncCursor
from psycopg.rows import class_row
from psycopg.sql import SQL, Composed, Identifier
from psycopg_pool import AsyncConnectionPool

from runtime.schema import EVENTS_TABLE, LOG_NAME

R = TypeVar("R")
Query = SQL | Composed | str
"""A query of ours: plain text with %s placeholders, or composed with identifiers."""

POLL_SECONDS = 0.02
"""How often a waiting read looks at a projection's position again."""


def columns(row_type: type[Any], prefix: str | None = None) -> Composed:
    """The SELECT list of a dataclass row: its field names, in order."""
    names = [f.name for f in fields(row_type)]
    return SQL(", ").join(
        Identifier(prefix, name) if prefix else Identifier(name) for name in names
    )


class ReadModels:
    """The process's async pool over the projections' tables (opened in the serving loop)."""

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self.max_size = max_size
        self._pool: AsyncConnectionPool | None = None

    async def open(self) -> None:
        if self._pool is None:
            pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self.max_size,
                kwargs={"autocommit": True},
                open=False,
            )
            await pool.open(wait=True)
            self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def cursor(self, row_type: type[R]) -> AsyncIterator[AsyncCursor[R]]:
        if self._pool is None:
            await self.open()
        assert self._pool is not None
        async with (
            self._pool.connection() as connection,
            connection.cursor(row_factory=class_row(row_type)) as cursor,
        ):
            yield cursor

    async def one(self, row_type: type[R], query: Query, params: Sequence[Any]) -> R | None:
        async with self.cursor(row_type) as cursor:
            await cursor.execute(_sql(query), params)
            return await cursor.fetchone()

    async def all(self, row_type: type[R], query: Query, params: Sequence[Any]) -> list[R]:
        async with self.cursor(row_type) as cursor:
            await cursor.execute(_sql(query), params)
            return await cursor.fetchall()

    # --- positions: what read-your-writes waits on ---------------------------------------

    async def head(self) -> int:
        row = await self.one(
            _Position,
            SQL("SELECT max(notification_id) AS position FROM {}").format(Identifier(EVENTS_TABLE)),
            (),
        )
        return (row.position or 0) if row else 0

    async def position(self, projection: str) -> int:
        """How far `projection`'s live generation has read the log."""
        state = await self.one(
            _Generation, "SELECT generation FROM projection_state WHERE name = %s", (projection,)
        )
        if state is None:
            return 0
        tracking = Identifier(f"{projection}__g{state.generation}_tracking")
        row = await self.one(
            _Position,
            SQL(
                "SELECT max(notification_id) AS position FROM {} WHERE application_name = %s"
            ).format(tracking),
            (LOG_NAME,),
        )
        return (row.position or 0) if row else 0

    async def wait_until(self, projection: str, position: int, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until `projection` has read up to `position`."""
        deadline = time.monotonic() + timeout
        while await self.position(projection) < position:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True


def _sql(query: Query) -> SQL | Composed:
    return SQL(query) if isinstance(query, str) else query  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Position:
    position: int | None


@dataclass(frozen=True, slots=True)
class _Generation:
    generation: int
