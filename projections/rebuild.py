"""Rebuild without downtime: fill a fresh generation from zero, then switch atomically."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import Cursor
from psycopg.rows import DictRow

from projections.log import apply_events, head_position, read_after
from projections.state import Projections

Progress = Callable[[int, int], None]
"""Told (position reached, head) after each batch."""


class ProjectionNotRebuildableError(RuntimeError):
    pass


def rebuild(
    projections: Projections, name: str, *, batch_size: int = 2000, progress: Progress | None = None
) -> int:
    """Build generation N+1 while N serves, switch readers to it, drop N. Returns N+1.

    A handler failure aborts the rebuild and leaves generation N serving untouched.
    """
    if not projections.projection_class(name).rebuildable:
        raise ProjectionNotRebuildableError(f"projection {name!r} cannot be rebuilt")
    datastore = projections.datastore
    with datastore.transaction() as cursor:
        old = projections.generation_in(cursor, name, lock=None)
        head = head_position(cursor)
    if old is None:
        raise ProjectionNotRebuildableError(f"projection {name!r} has not been created")
    view = projections.view(name, old + 1)
    projection = projections.projection(name, view)
    with datastore.transaction(commit=True) as cursor:
        for statement in [*view.drop_statements(), *view.create_statements()]:
            cursor.execute(statement)

    def apply_next_batch(cursor: Cursor[DictRow]) -> bool:
        nonlocal head
        events = read_after(cursor, view.position_in(cursor), batch_size)
        if not events:
            return False
        with view.batch(cursor):
            apply_events(projection, projections.mapper, events)
            view.record_position(events[-1].position)
        head = max(head, events[-1].position)
        if progress:
            progress(events[-1].position, head)
        return True

    # The bulk: one transaction per batch, so the live generation's runner is not held up.
    while True:
        with datastore.transaction(commit=True) as cursor:
            if not apply_next_batch(cursor):
                break

    # The switch: lock the state row so the live runner pauses, take the last events,
    # repoint the readers' views and drop the old generation, in one transaction.
    old_view = projections.view(name, old)
    with datastore.transaction(commit=True) as cursor:
        projections.generation_in(cursor, name, lock="UPDATE")
        while apply_next_batch(cursor):
            pass
        for statement in view.expose_statements():
            cursor.execute(statement)
        cursor.execute(
            "UPDATE projection_state SET generation = %s WHERE name = %s", (view.generation, name)
        )
        for statement in old_view.drop_statements():
            cursor.execute(statement)
    return view.generation
