"""One way to run something once at a time across processes: a PostgreSQL advisory lock held
on a connection of its own for as long as the work runs, released when it closes (so a
process that dies never leaves a lease behind)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


@contextmanager
def lease(url: str, name: str) -> Iterator[bool]:
    """Yields True while this process holds the lease `name`, False if another one does."""
    with psycopg.connect(url, autocommit=True) as connection, lease_on(connection, name) as held:
        yield held


@contextmanager
def lease_on(connection: psycopg.Connection[Any], name: str) -> Iterator[bool]:
    """The lease `name` on an open autocommit connection (a round leasing many items
    takes them all on one). Released explicitly, not by the connection closing: the
    server ends a closed session a moment later, and a next round taking the lease at
    once would find it still held."""
    row = connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()
    held = bool(row and row[0])
    try:
        yield held
    finally:
        if held and not connection.closed:
            connection.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))
