"""Filling the log with test events, and fingerprinting a projection's rows."""

from __future__ import annotations

import psycopg

from aggregates.base import CommandContext
from services.bootstrap import Services
from tests.support.counter import Counter, new_counter


def append_events(services: Services, context: CommandContext, count: int) -> None:
    """`count` events: counters opened, then incremented, several per command."""
    ids = [
        services.event_log.execute(
            context, lambda unit, n=n: unit.add(new_counter(f"c{n}")).id
        ).result
        for n in range(max(count // 50, 1))
    ]
    remaining = count - len(ids)
    while remaining > 0:
        for counter_id in ids:
            if remaining == 0:
                break
            services.event_log.execute(
                context, lambda unit, i=counter_id: unit.get(Counter, i).increment(by=1)
            )
            remaining -= 1


def checksum(url: str, table: str = "audit_log") -> tuple[int, str]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY position), ''))"
            f" FROM {table} t"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])
