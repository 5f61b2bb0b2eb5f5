"""Each projection's live generation, its stall (if any) and its skips: `projection_state`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Mapper
from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

from projections.base import ProjectionView, ReadModel
from projections.log import head_position
from projections.reads import ProjectionReads, columns

log = logging.getLogger(__name__)


class ProjectionNotFoundError(LookupError):
    pass


class ProjectionNotStalledError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    generation: int
    position: int
    head: int
    stalled_position: int | None
    stalled_topic: str | None
    stalled_error: str | None
    stalled_since: datetime | None

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)

    @property
    def status(self) -> str:
        if self.stalled_position is not None:
            return "stalled"
        return "caught_up" if self.lag == 0 else "catching_up"


class Projections:
    """The registered projections of one process, over one datastore."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        mapper: Mapper[Any],
        classes: list[type[ReadModel[Any]]],
    ) -> None:
        self.datastore = datastore
        self.mapper = mapper
        self.classes = {cls.name: cls for cls in classes}

    def projection_class(self, name: str) -> type[ReadModel[Any]]:
        try:
            return self.classes[name]
        except KeyError:
            raise ProjectionNotFoundError(f"no projection named {name!r}") from None

    def view(self, name: str, generation: int) -> ProjectionView:
        cls = self.projection_class(name)
        return cls.view_class(self.datastore, name=name, generation=generation)

    def projection(self, name: str, view: ProjectionView) -> ReadModel[Any]:
        return self.projection_class(name)(view)

    def ensure_created(self) -> list[str]:
        """Give every projection that has none a first generation and its reader views, and
        start again from position zero every one whose tables are not what its code declares
        (see `reshaped`). Returns the names of the ones started again."""
        started_again: list[str] = []
        for name in self.classes:
            with self.datastore.transaction(commit=True) as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
                generation = self.generation_in(cursor, name, lock="UPDATE")
                if generation is None:
                    view = self.view(name, 1)
                    for statement in [*view.create_statements(), *view.expose_statements()]:
                        cursor.execute(statement)
                    cursor.execute(
                        "INSERT INTO projection_state (name, generation) VALUES (%s, 1)", (name,)
                    )
                elif self.reshaped(cursor, name, generation):
                    self._start_again(cursor, name, generation)
                    started_again.append(name)
        return started_again

    def reshaped(self, cursor: Cursor[DictRow], name: str, generation: int) -> bool:
        """Whether generation `generation` of `name` differs in shape from what the code
        declares now (`ProjectionView.tables` and `.indexes`).

        A release that changes a read model's tables (a column, a key, NULL-ability, an
        index, a new table) would otherwise leave a database made by an earlier release with
        the old tables: projection tables are only created for a projection with no
        generation yet, so its handlers and queries would fail on them. Rather than a shape
        version someone must remember to bump, the tables are compared as the catalog has
        them: the declarations are created as a scratch generation 0 (never a real one:
        generations start at 1) in a savepoint that is rolled back, and both are described by
        `ProjectionView.shape_in`. So a database from any earlier release is judged by what
        it has, a changed index counts too, and nothing is recorded that could drift.
        """
        live = self.view(name, generation).shape_in(cursor)
        scratch = self.view(name, 0)
        with cursor.connection.transaction(force_rollback=True):
            for statement in scratch.create_statements():
                cursor.execute(statement)
            declared = scratch.shape_in(cursor)
        return live != declared

    def _start_again(self, cursor: Cursor[DictRow], name: str, generation: int) -> None:
        """Replace a reshaped projection's live generation with an empty one at position
        zero, in the caller's transaction: the runner (the worker) then fills it from the
        log, as it would a new projection, and readers see it fill (status `catching_up`).

        Not a rebuild beside the live generation (`projections.rebuild`): the old tables
        cannot serve the new code's queries anyway, and a start-up must not wait for a
        read model's whole history. A stall belonged to the old tables and is cleared."""
        old_view = self.view(name, generation)
        view = self.view(name, generation + 1)
        statements = [
            *view.drop_statements(),  # a half-built generation an interrupted rebuild left
            *view.create_statements(),
            *view.expose_statements(reshaped=True),
            *old_view.drop_statements(),
        ]
        for statement in statements:
            cursor.execute(statement)
        cursor.execute(
            "UPDATE projection_state SET generation = %s WHERE name = %s",
            (view.generation, name),
        )
        self._clear_stall(cursor, name)
        log.warning(
            "projection %s: its tables differ from its code's; generation %d replaces %d,"
            " filled from position 0 by the runner",
            name,
            view.generation,
            generation,
        )

    @staticmethod
    def generation_in(cursor: Cursor[DictRow], name: str, *, lock: str | None) -> int | None:
        suffix = f" FOR {lock}" if lock else ""
        cursor.execute("SELECT generation FROM projection_state WHERE name = %s" + suffix, (name,))
        row = cursor.fetchone()
        return None if row is None else int(row["generation"])

    def status(self, name: str) -> ProjectionStatus:
        self.projection_class(name)
        with self.datastore.transaction() as cursor:
            cursor.execute("SELECT * FROM projection_state WHERE name = %s", (name,))
            row = cursor.fetchone()
            if row is None:
                raise ProjectionNotFoundError(f"projection {name!r} has not been created")
            view = self.view(name, row["generation"])
            return ProjectionStatus(
                name=name,
                generation=row["generation"],
                position=view.position_in(cursor),
                head=head_position(cursor),
                stalled_position=row["stalled_position"],
                stalled_topic=row["stalled_topic"],
                stalled_error=row["stalled_error"],
                stalled_since=row["stalled_since"],
            )

    def statuses(self) -> list[ProjectionStatus]:
        return [self.status(name) for name in sorted(self.classes)]

    def position(self, name: str) -> int:
        return self.status(name).position

    def rebuilds(self) -> dict[str, int]:
        """How far each rebuild under way has read: the projections whose next generation
        exists beside the live one, with that generation's position. One left by an
        interrupted rebuild shows here too, until the next rebuild drops it."""
        found: dict[str, int] = {}
        with self.datastore.transaction() as cursor:
            cursor.execute("SELECT name, generation FROM projection_state ORDER BY name")
            for row in cursor.fetchall():
                if row["name"] not in self.classes:
                    continue
                view = self.view(row["name"], row["generation"] + 1)
                cursor.execute(
                    "SELECT to_regclass(%s) IS NOT NULL AS present", (view.tracking_table_name,)
                )
                present = cursor.fetchone()
                if present is not None and present["present"]:
                    found[row["name"]] = view.position_in(cursor)
        return found

    def record_stall(self, name: str, position: int, topic: str, error: str) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "UPDATE projection_state SET stalled_position = %s, stalled_topic = %s,"
                " stalled_error = %s, stalled_since = clock_timestamp() WHERE name = %s",
                (position, topic, error, name),
            )

    def resume(self, name: str) -> int:
        """Clear a stall so the runner tries the same event again (after a fix)."""
        with self.datastore.transaction(commit=True) as cursor:
            stalled = self._stalled_row(cursor, name)
            self._clear_stall(cursor, name)
            return int(stalled["stalled_position"])

    def skip(self, name: str, reason: str) -> int:
        """Step over the event the projection stalled on, recording why; never silently."""
        if not reason.strip():
            raise ValueError("a skip needs a reason")
        with self.datastore.transaction(commit=True) as cursor:
            return self.skip_stalled(cursor, self._stalled_row(cursor, name), reason)

    def stalled_row(self, cursor: Cursor[DictRow], name: str) -> DictRow:
        """The projection's state row, locked, if it is stalled (else
        ProjectionNotStalledError): for a caller that resumes or skips in its transaction."""
        return self._stalled_row(cursor, name)

    def skip_stalled(self, cursor: Cursor[DictRow], stalled: DictRow, reason: str) -> int:
        """`skip` in the caller's transaction, given the locked row of `stalled_row`."""
        if not reason.strip():
            raise ValueError("a skip needs a reason")
        name = stalled["name"]
        position = int(stalled["stalled_position"])
        cursor.execute(
            "INSERT INTO projection_skips (name, position, topic, error, reason)"
            " VALUES (%s, %s, %s, %s, %s)",
            (name, position, stalled["stalled_topic"], stalled["stalled_error"], reason),
        )
        view = self.view(name, stalled["generation"])
        with view.batch(cursor):
            view.record_position(position)
        self._clear_stall(cursor, name)
        return position

    def clear_stall(self, cursor: Cursor[DictRow], name: str) -> None:
        """`resume` in the caller's transaction (after `stalled_row`)."""
        self._clear_stall(cursor, name)

    def skips(self, name: str) -> list[dict[str, Any]]:
        with self.datastore.transaction() as cursor:
            cursor.execute(
                "SELECT position, topic, error, reason, skipped_at FROM projection_skips"
                " WHERE name = %s ORDER BY position",
                (name,),
            )
            return list(cursor.fetchall())

    def _stalled_row(self, cursor: Cursor[DictRow], name: str) -> DictRow:
        self.projection_class(name)
        cursor.execute("SELECT * FROM projection_state WHERE name = %s FOR UPDATE", (name,))
        row = cursor.fetchone()
        if row is None or row["stalled_position"] is None:
            raise ProjectionNotStalledError(f"projection {name!r} is not stalled")
        return row

    @staticmethod
    def _clear_stall(cursor: Cursor[DictRow], name: str) -> None:
        cursor.execute(
            "UPDATE projection_state SET stalled_position = NULL, stalled_topic = NULL,"
            " stalled_error = NULL, stalled_since = NULL WHERE name = %s",
            (name,),
        )


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerHeartbeatRow:
    """A worker job's (or runner's) latest beat; `worker_heartbeats`, written by the worker."""

    job: str
    process: str
    interval_seconds: float
    beat_at: datetime
    last_error: str | None
    last_outcome: str | None
    """What the job's last successful round did, in its own words (e.g. an admission
    round's admitted and skipped clones)."""


async def worker_heartbeats(reads: ProjectionReads) -> list[WorkerHeartbeatRow]:
    """Every job's latest beat, by job name."""
    query = SQL("SELECT {} FROM worker_heartbeats ORDER BY job").format(columns(WorkerHeartbeatRow))
    return await reads.all(WorkerHeartbeatRow, query, ())
