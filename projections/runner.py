"""Following the log: each projection applies batches of events in order, exactly once.

A batch's rows and the new position commit in one transaction, so a runner killed at any
moment resumes where the last commit left it. A handler that raises stops its
projection at that event: the events before it are kept, the failure is recorded as a
stall, and nothing moves until an operator resumes or skips.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError

from projections.base import LedgerProjection
from projections.log import NOTIFY_CHANNEL, HandlerFailedError, apply_events, read_after
from projections.state import Projections

log = logging.getLogger(__name__)


class ProjectionRunner:
    def __init__(
        self, projections: Projections, name: str, url: str, *, batch_size: int = 500
    ) -> None:
        self.projections = projections
        self.name = name
        self.url = url
        self.batch_size = batch_size
        self._projection: LedgerProjection[Any] | None = None

    def step(self) -> int:
        """Apply the next batch; the number of events applied (0 when idle or stalled)."""
        try:
            with self.projections.datastore.transaction(commit=True) as cursor:
                # FOR SHARE: a rebuild's switch (FOR UPDATE) waits for this batch, and this
                # batch waits for the switch, so no batch lands in a dropped generation.
                cursor.execute(
                    "SELECT generation, stalled_position FROM projection_state"
                    " WHERE name = %s FOR SHARE",
                    (self.name,),
                )
                state = cursor.fetchone()
                if state is None or state["stalled_position"] is not None:
                    return 0
                projection = self._projection_for(state["generation"])
                view = projection.view
                events = read_after(cursor, view.position_in(cursor), self.batch_size)
                if not events:
                    return 0
                with view.batch(cursor):
                    apply_events(projection, self.projections.mapper, events)
                    view.record_position(events[-1].position)
                return len(events)
        except HandlerFailedError as failure:
            self._stall(failure)
            return 0

    def catch_up(self) -> int:
        """Apply batches until the log ends or the projection stalls; events applied."""
        total = 0
        while applied := self.step():
            total += applied
        return total

    def run(self, stop: threading.Event, *, idle_wait: float = 1.0) -> None:
        """Follow the log until `stop` is set, waking on NOTIFY from new appends."""
        while not stop.is_set():
            try:
                self._follow(stop, idle_wait)
            except (psycopg.OperationalError, PersistenceError) as error:
                log.warning("projection %s lost the database: %s", self.name, error)
                stop.wait(idle_wait)

    def _follow(self, stop: threading.Event, idle_wait: float) -> None:
        with psycopg.connect(self.url, autocommit=True) as listener:
            # The lease: one active runner per projection across every process.
            while not self._take_lease(listener):
                if stop.wait(idle_wait):
                    return
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            while not stop.is_set():
                if self.step() == 0:
                    for _ in listener.notifies(timeout=idle_wait, stop_after=1):
                        pass

    def _take_lease(self, connection: psycopg.Connection[Any]) -> bool:
        row = connection.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (f"projection:{self.name}",)
        ).fetchone()
        return bool(row and row[0])

    def _projection_for(self, generation: int) -> LedgerProjection[Any]:
        projection = self._projection
        if projection is None or projection.view.generation != generation:  # type: ignore[attr-defined]
            view = self.projections.view(self.name, generation)
            projection = self._projection = self.projections.projection(self.name, view)
        return projection

    def _stall(self, failure: HandlerFailedError) -> None:
        """Keep the events before the failing one, then record the stall at it."""
        event = failure.event
        with self.projections.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "SELECT generation FROM projection_state WHERE name = %s FOR SHARE", (self.name,)
            )
            state = cursor.fetchone()
            assert state is not None
            projection = self._projection_for(state["generation"])
            view = projection.view
            before = read_after(cursor, view.position_in(cursor), failure.index)
            before = [e for e in before if e.position < event.position]
            with view.batch(cursor):
                apply_events(projection, self.projections.mapper, before)
                if before:
                    view.record_position(before[-1].position)
        self.projections.record_stall(self.name, event.position, event.topic, str(failure))
        log.error("projection %s stalled at %d: %s", self.name, event.position, failure)
