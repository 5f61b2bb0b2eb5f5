"""How events reach the log: one statement per save, in commit order.

The library's default insert is pipelined (BEGIN, LOCK, NOTIFY, INSERT, sync, COMMIT):
several round trips, during which the table lock is held, and a pipeline that never
returns once a save passes about 1 MB. Its `POSTGRES_ENABLE_DB_FUNCTIONS` path is one
statement but takes no lock, so a later position could commit before an earlier one and a
follower would skip it. This recorder calls `pumpparty_insert_events` (schema steps 5
and 54): the same EXCLUSIVE lock and NOTIFY as the default path, then the insert, as a
single autocommit statement. The lock is held until that statement's commit, so positions
still commit in order, and a save is one round trip of any size. The events go as four
parallel arrays in binary: psycopg dumps an array of composites as text, in Python,
which cost more CPU than the rest of the append.

Snapshots are not in the hash chain, and the service role may insert them (never change
them): so each carries an HMAC-SHA256 seal under a key the database never sees
(`PUMPPARTY_SNAPSHOT_KEY`, or one kept in the data dir). A snapshot whose seal fails (one
written by anyone holding only database credentials, or under another key) is not used:
the aggregate is rebuilt from an older snapshot or from its events, which are chained.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from runtime.private_files import kept_secret
from runtime.schema import INSERT_FUNCTION
from runtime.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_KEY_ENV = "SNAPSHOT_SEAL_KEY_HEX"
"""Where the event log's environment carries the seal key (hex) to the factory."""


class OrderedAppendRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        # Made bytes once: a `Composed` is rendered again at every execute.
        self.insert_function_call = (
            SQL("SELECT * FROM {}.{}(%b, %b, %b, %b)")
            .format(Identifier(self.datastore.schema), Identifier(INSERT_FUNCTION))
            .as_bytes(None)
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        # Tuples, not the pool's dict rows: one column needs no names looked up per call.
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(self.insert_function_call, columns, prepare=True)
            return [position for (position,) in cursor.fetchall()]


def snapshot_key(settings: Settings) -> bytes:
    """The configured key, or a random one made once and kept in the data dir."""
    if settings.snapshot_key is not None:
        return settings.snapshot_key.get_secret_value().encode()
    return kept_secret(settings.data_dir / "snapshot-key")


class SealedSnapshotRecorder(PostgresAggregateRecorder):
    """The snapshots table, each row sealed (`mac`, schema step 50) and checked on load."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str, key: bytes) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.key = key
        table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(events_table_name))
        # A snapshot already there (the same one, taken by a racing process) is kept.
        self.insert_sealed = SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, state, mac)"
            " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[], %s::bytea[])"
            " ON CONFLICT DO NOTHING"
        ).format(table)
        self.select_sealed = SQL(
            "SELECT originator_id, originator_version, topic, state, mac FROM {}"
            " WHERE originator_id = %s"
        ).format(table)

    def seal(self, event: StoredEvent) -> bytes:
        topic = event.topic.encode()
        message = b"".join(
            [
                UUID(str(event.originator_id)).bytes,
                event.originator_version.to_bytes(8, "big", signed=True),
                len(topic).to_bytes(4, "big"),
                topic,
                event.state,
            ]
        )
        return hmac.new(self.key, message, hashlib.sha256).digest()

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if stored_events:
            columns = (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
                [self.seal(e) for e in stored_events],
            )
            with self.datastore.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(self.insert_sealed, columns)
        return None

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """Only snapshots whose seal holds; past one that fails, look further on."""
        found: list[StoredEvent] = []
        while True:
            wanted = None if limit is None else limit - len(found)
            rows = self._select(originator_id, gt=gt, lte=lte, desc=desc, limit=wanted)
            for event, mac in rows:
                if mac is not None and hmac.compare_digest(bytes(mac), self.seal(event)):
                    found.append(event)
                else:
                    log.warning(
                        "snapshot of %s at version %d is not sealed with our key: not used",
                        event.originator_id,
                        event.originator_version,
                    )
            if wanted is None or len(rows) < wanted or len(found) >= (limit or 0):
                return found
            last = rows[-1][0].originator_version
            lte, gt = (last - 1, gt) if desc else (lte, last)

    def _select(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[tuple[StoredEvent, bytes | None]]:
        statement: Composed = self.select_sealed
        params: list[Any] = [originator_id]
        if gt is not None:
            statement += SQL(" AND originator_version > %s")
            params.append(gt)
        if lte is not None:
            statement += SQL(" AND originator_version <= %s")
            params.append(lte)
        statement += SQL(
            " ORDER BY originator_version DESC" if desc else " ORDER BY originator_version"
        )
        if limit is not None:
            statement += SQL(" LIMIT %s")
            params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(statement, params, prepare=True)
            return [
                (
                    StoredEvent(
                        originator_id=row["originator_id"],
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    ),
                    row["mac"],
                )
                for row in cursor.fetchall()
            ]


class LedgerFactory(PostgresFactory):
    """The library's PostgreSQL factory, with sealed snapshots."""

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose != "snapshots":
            return super().aggregate_recorder(purpose)
        key_hex = self.env.get(SNAPSHOT_KEY_ENV)
        # Without a key, one for this process only: its snapshots are simply never reused.
        key = bytes.fromhex(key_hex) if key_hex else secrets.token_bytes(32)
        recorder = SealedSnapshotRecorder(
            self.datastore, events_table_name=f"{self.env.name.lower()}_snapshots", key=key
        )
        if self.env_create_table():
            recorder.create_table()
        return recorder
