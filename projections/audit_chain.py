"""The hash chain over the log, and the digests auditors keep to check it later.

The database extends the chain as each event is inserted (see the schema's
`extend_audit_chain`); this module is its Python twin: it recomputes every link from
the stored events and names the first position where the log and the chain disagree.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.sql import SQL

from projections.reads import ProjectionReads, columns
from runtime.schema import EVENTS_TABLE


@dataclass(frozen=True)
class Digest:
    position: int
    hash: bytes

    def __str__(self) -> str:
        return f"{self.position}:{self.hash.hex()}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        position, _, digest = text.partition(":")
        return cls(int(position), bytes.fromhex(digest))


@dataclass(frozen=True)
class Verification:
    checked: int
    head: Digest | None
    first_bad_position: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_position is None


def link(
    previous: bytes, position: int, originator_id: UUID, version: int, topic: str, state: bytes
) -> bytes:
    """The same bytes, in the same order, as the SQL function hashes."""
    topic_bytes = topic.encode()
    return hashlib.sha256(
        previous
        + position.to_bytes(8, "big", signed=True)
        + originator_id.bytes
        + version.to_bytes(8, "big", signed=True)
        + len(topic_bytes).to_bytes(4, "big", signed=True)
        + topic_bytes
        + state
    ).digest()


_WALK = f"""
    SELECT coalesce(e.notification_id, c.position) AS position,
           e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,
           c.hash AS stored_hash
    FROM {EVENTS_TABLE} e FULL OUTER JOIN audit_chain c ON c.position = e.notification_id
    ORDER BY 1
"""


def verify(url: str, digests: Iterable[Digest] = ()) -> Verification:
    """Recompute the chain from the stored events; compare with the chain and digests."""
    with psycopg.connect(url) as conn:
        # Every expected hash counts: a digest the auditor kept is never overridden by
        # one stored in the database being checked.
        expected: dict[int, set[bytes]] = defaultdict(set)
        stored = conn.execute("SELECT position, hash FROM audit_digests").fetchall()
        for position, digest in [*((d.position, d.hash) for d in digests), *stored]:
            expected[position].add(bytes(digest))
        previous = b""
        checked = 0
        head: Digest | None = None
        with conn.cursor(name="audit_verify", row_factory=dict_row) as rows:
            rows.itersize = 5000
            rows.execute(_WALK)
            for row in rows:
                position = row["position"]
                problem = _check(row, previous)
                if problem is not None:
                    return Verification(checked, head, position, problem)
                previous = bytes(row["stored_hash"])
                if position in expected and expected.pop(position) != {previous}:
                    return Verification(checked, head, position, "the digest does not match")
                checked += 1
                head = Digest(position, previous)
        if expected:
            position = min(expected)
            return Verification(checked, head, position, "a digested position is missing")
        return Verification(checked, head)


def _check(row: dict[str, Any], previous: bytes) -> str | None:
    if row["notification_id"] is None:
        return "the event was removed"
    if row["stored_hash"] is None:
        return "the event is not in the chain"
    recomputed = link(
        previous,
        row["notification_id"],
        row["originator_id"],
        row["originator_version"],
        row["topic"],
        bytes(row["state"]),
    )
    if recomputed != bytes(row["stored_hash"]):
        return "the event was altered"
    return None


def head_digest(conn: psycopg.Connection[Any]) -> Digest | None:
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute("SELECT position, hash FROM audit_chain ORDER BY position DESC LIMIT 1")
        row = cursor.fetchone()
    return None if row is None else Digest(row[0], bytes(row[1]))


async def chain_head(reads: ProjectionReads) -> Digest | None:
    """The chain's head as a digest (None while the log is empty), for HTTP reads."""
    query = SQL("SELECT {} FROM audit_chain ORDER BY position DESC LIMIT 1").format(columns(Digest))
    return await reads.one(Digest, query, ())


def record_digest(url: str) -> Digest | None:
    """Keep the chain's head as a digest (a worker job does this on a cadence)."""
    with psycopg.connect(url, autocommit=True) as conn:
        digest = head_digest(conn)
        if digest is not None:
            conn.execute(
                "INSERT INTO audit_digests (position, hash) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (digest.position, digest.hash),
            )
        return digest
