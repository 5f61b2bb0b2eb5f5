"""One way to run something once at a time across processes: a PostgreSQL advisory lock held
on a connection of its own for as long as the work runs, released when it closes (so a
process that dies never leaves a lease behind)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


@contextmanager
def lease(url: str, name: str) -> Iterator[bool]:
    """Yields True while this process holds the lease `name`, False if another one does."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()
        yield bool(row and row[0])
