"""Rate-limit windows shared by every process through PostgreSQL (schema step 15).

A sliding window counter: hits are counted per key in fixed windows of the limit's
period, and a hit is allowed while this window's count plus the previous window's, weighed
by how much of it still overlaps the last period, stays within the limit. One statement
per hit (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`) counts it only if it is allowed, so
concurrent hits from any number of processes never pass the limit together, and refused
hits are not counted. The database's clock is the only clock: processes on hosts whose
clocks disagree still share one window. A window is kept until the next one ends, then
`prune` deletes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from psycopg import Cursor

MAX_KEY_LENGTH = 200
"""Longer keys (an odd forwarded address, say) are stored as a prefix and a hash."""

_HIT = """
WITH now AS (
    SELECT extract(epoch FROM clock_timestamp()) AS t
), this AS (
    SELECT t, floor(t / %(period)s)::bigint * %(period)s AS start FROM now
), prior AS (
    SELECT t, start,
        coalesce((SELECT hits FROM rate_limit_windows
                  WHERE key = %(key)s AND window_start = start - %(period)s), 0) AS previous
    FROM this
), weighed AS (
    SELECT t, start, previous, previous * (1 - (t - start) / %(period)s) AS carried FROM prior
), counted AS (
    INSERT INTO rate_limit_windows AS w (key, window_start, hits, expires_at)
    SELECT %(key)s, start, 1, to_timestamp(start + 2 * %(period)s) FROM weighed
    WHERE carried + 1 <= %(limit)s
    ON CONFLICT (key, window_start) DO UPDATE SET hits = w.hits + 1
    WHERE w.hits + (SELECT carried FROM weighed) + 1 <= %(limit)s
    RETURNING w.hits
)
SELECT (SELECT hits FROM counted) AS counted,
    (t - start)::float8 AS elapsed,
    previous,
    coalesce((SELECT hits FROM rate_limit_windows
              WHERE key = %(key)s AND window_start = start), 0) AS current
FROM weighed
"""

_PRUNE = "DELETE FROM rate_limit_windows WHERE expires_at < clock_timestamp()"


@dataclass(frozen=True, slots=True)
class Hit:
    allowed: bool
    retry_after: float
    """Seconds until one more hit would be allowed (0 when this one was)."""


def hit(cursor: Cursor[dict[str, Any]], key: str, limit: int, period: int) -> Hit:
    """Count one hit on `key` if fewer than `limit` fall in the last `period` seconds."""
    cursor.execute(_HIT, {"key": stored_key(key), "limit": limit, "period": period})
    row = cursor.fetchone()
    assert row is not None
    if row["counted"] is not None:
        return Hit(True, 0.0)
    return Hit(False, wait(limit, period, row["elapsed"], row["previous"], row["current"]))


def prune(cursor: Cursor[dict[str, Any]]) -> int:
    """Delete the windows that no longer weigh on any hit; returns how many."""
    cursor.execute(_PRUNE)
    return cursor.rowcount


def wait(limit: int, period: int, elapsed: float, previous: int, current: int) -> float:
    """How long until `current + previous * (1 - elapsed / period) + 1 <= limit` holds, in
    this window or, if it cannot, in the next (where this one is the previous)."""
    room = limit - 1 - current
    if room >= 0 and previous > 0:
        in_this = period * (1 - room / previous) - elapsed
        if elapsed + in_this < period:
            return max(in_this, 0.0)
    if limit < 1:
        return float(period)
    in_next = period * (1 - (limit - 1) / current) if current > 0 else 0.0
    return (period - elapsed) + max(in_next, 0.0)


def stored_key(key: str) -> str:
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_KEY_LENGTH - len(digest) - 1]}#{digest}"
