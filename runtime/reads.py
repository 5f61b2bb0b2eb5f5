"""Async reads of our tables for HTTP: one connection pool per process (opened in the serving
loop) and typed rows, built by psycopg's `class_row` from a SELECT of exactly the row's
fields (`columns(Row)`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from functools import cache
from typing import Any, TypeVar

from psycopg import AsyncCursor
from psycopg.rows import class_row
from psycopg.sql import SQL, Composed, Identifier
from psycopg_pool import AsyncConnectionPool

R = TypeVar("R")
Query = SQL | Composed | str
"""A query of ours: plain text with %s placeholders, or composed with identifiers."""


@cache
def columns(row_type: type[Any], prefix: str | None = None) -> SQL:
    """The SELECT list of a dataclass row: its field names, in order. Made once per row
    type and kept as rendered text: psycopg renders each identifier of a composed query
    again at every execute, which cost a read more than its SELECT list is worth."""
    names = [f.name for f in fields(row_type)]
    listed = SQL(", ").join(
        Identifier(prefix, name) if prefix else Identifier(name) for name in names
    )
    return SQL(listed.as_string(None))


class Reads:
    """The process's async connection pool, opened in the serving loop on first use."""

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

    async def one(
        self, row_type: type[R], query: Query, params: Sequence[Any] | Mapping[str, Any]
    ) -> R | None:
        async with self.cursor(row_type) as cursor:
            await cursor.execute(_sql(query), params)
            return await cursor.fetchone()

    async def all(
        self, row_type: type[R], query: Query, params: Sequence[Any] | Mapping[str, Any]
    ) -> list[R]:
        async with self.cursor(row_type) as cursor:
            await cursor.execute(_sql(query), params)
            return await cursor.fetchall()


def _sql(query: Query) -> SQL | Composed:
    return SQL(query) if isinstance(query, str) else query  # type: ignore[arg-type]
