"""How events reach the log: one statement per save, in commit order.

The library's default insert is pipelined (BEGIN, LOCK, NOTIFY, INSERT, sync, COMMIT):
several round trips, during which the table lock is held, and a pipeline that never
returns once a save passes about 1 MB. Its `POSTGRES_ENABLE_DB_FUNCTIONS` path is one
statement but takes no lock, so a later position could commit before an earlier one and a
follower would skip it. This recorder calls `pumpparty_insert_events` (schema step 5):
the same EXCLUSIVE lock and NOTIFY as the default path, then the insert, as a single
autocommit statement. The lock is held until that statement's commit, so positions still
commit in order, and a save is one round trip of any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

INSERT_FUNCTION = "pumpparty_insert_events"


class OrderedAppendRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_function_call = SQL("SELECT * FROM {}.{}((%s))").format(
            Identifier(self.datastore.schema), Identifier(INSERT_FUNCTION)
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(self.insert_function_call, (rows,), prepare=True)
            return [row[INSERT_FUNCTION] for row in cursor.fetchall()]
