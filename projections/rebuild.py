"""Rebuild without downtime: fill a fresh generation from zero, then switch atomically."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import Cursor
from psycopg.rows import DictRow

from projections.log import apply_events, head_position, read_window
from projections.state import Projections

Progress = Callable[[int, int], None]
"""Told (position reached, head) after each batch."""


class ProjectionNotRebuildableError(RuntimeError):
    pass


def rebuild(
    projections: Projections, name: str, *, batch_size: int = 2000, progress: Progress | None = None
) -> int:
    """Build generation N+1 while N serves, switch readers to it, drop N. Returns N+1.

    Only the events of the projection's topics are read. The bulk's batches commit without
    waiting for fsync (a crash leaves a half-built generation that the next rebuild drops);
    the switch waits. A handler failure aborts the rebuild and leaves generation N serving
    untouched. Generation N+1 has the tables the code declares now: if a release changed
    them, the readers' views are made again at the switch (see `expose_statements`).
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
    topics = set(projection.topics) or None
    with datastore.transaction(commit=True) as cursor:
        for statement in [*view.drop_statements(), *view.create_statements()]:
            cursor.execute(statement)

    def apply_next_batch(cursor: Cursor[DictRow], until: int | None = None) -> bool:
        nonlocal head
        window = read_window(
            cursor, view.position_in(cursor), batch_size, head=until, topics=topics
        )
        if window.upto <= window.after:
            return False
        with view.batch(cursor):
            apply_events(projection, projections.mapper, window.events)
            view.record_position(window.upto)
        head = max(head, window.upto)
        if progress:
            progress(window.upto, head)
        return True

    # The bulk: one transaction per batch, so the live generation's runner is not held up.
    while True:
        with datastore.transaction(commit=True) as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")
            if not apply_next_batch(cursor):
                break

    # The switch: lock the state row so the live runner pauses, take the last events (up
    # to the head once the lock is held), repoint the readers' views and drop the old
    # generation, in one transaction.
    old_view = projections.view(name, old)
    with datastore.transaction(commit=True) as cursor:
        projections.generation_in(cursor, name, lock="UPDATE")
        final = head_position(cursor)
        while apply_next_batch(cursor, final):
            pass
        reshaped = view.shape_in(cursor) != old_view.shape_in(cursor)
        for statement in view.expose_statements(reshaped=reshaped):
            cursor.execute(statement)
        cursor.execute(
            "UPDATE projection_state SET generation = %s WHERE name = %s", (view.generation, name)
        )
        for statement in old_view.drop_statements():
            cursor.execute(statement)
    return view.generation
