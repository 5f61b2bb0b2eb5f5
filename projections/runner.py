"""Following the log: one reader for every projection, each applying its events exactly once.

A runner reads a batch of the log once (everything appended since its last read, up to
`batch_size`, so batches grow with load) and hands each event only to the projections
whose topics it matches. A projection with events to apply gets one transaction: its
state row held FOR SHARE (so a rebuild's switch cannot pass it), its rows, and its new
position, committed together with `synchronous_commit = off` (a crash loses the latest
batches whole, and they are replayed; the log's own appends stay durable). A projection
with nothing to apply gets no transaction: the runner remembers that it has nothing to
apply up to the batch's end, and records that position for every such projection in one
transaction at most every `flush_interval`, and within `flush_interval` once nothing new
is appended, so the positions read-your-writes waits read reach the head.

The runner reads, listens (LISTEN/NOTIFY) and holds its leases over one connection of its
own; a turn costs two statements (positions and head in one, then the batch) plus, per
projection with something to apply, one transaction.

What the runner remembers is only ever a fact about the log ("projection P handles no
event in (a, b]"), never a position it believes it committed: every batch starts from the
positions in the database, so a crash that loses commits is replayed, never skipped.

A handler that raises stops its projection at that event: the events before it are kept,
the failure is recorded as a stall, and nothing moves for that projection until an
operator resumes or skips; the others carry on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from psycopg import Cursor
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Composable, Identifier, Literal

from projections.base import ProjectionView, ReadModel, RecordedEvent
from projections.log import NOTIFY_CHANNEL, HandlerFailedError, Window, apply_events, read_window
from projections.state import Projections
from runtime.schema import EVENTS_TABLE, LOG_NAME

log = logging.getLogger(__name__)

Connection = psycopg.Connection[DictRow]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OperationalError,
    InterfaceError,
)
"""The database went away: retry later, the same batch (nothing was half-committed)."""

_HEAD = SQL("(SELECT max(notification_id) FROM {}) AS head").format(Identifier(EVENTS_TABLE))
_STATES = (
    SQL("SELECT name, generation, stalled_position, {} FROM projection_state WHERE name = ANY(%s)")
    .format(_HEAD)
    .as_bytes()
)
# Both lock state rows and make the transaction's commit not wait for fsync (set_config's
# `SET LOCAL`, in the same round trip; with no row the transaction writes nothing).
_LOCK_STATE = (
    b"SELECT generation, stalled_position, set_config('synchronous_commit', 'off', true)"
    b" FROM projection_state WHERE name = %s FOR SHARE"
)
_LOCK_STATES = (
    b"SELECT name, generation, stalled_position,"
    b" set_config('synchronous_commit', 'off', true)"
    b" FROM projection_state WHERE name = ANY(%s) ORDER BY name FOR SHARE"
)


@dataclass
class _Track:
    """What the runner knows of one projection, all re-checked against the database."""

    name: str
    generation: int = 0
    projection: ReadModel[Any] | None = None
    recorded: int = 0
    """Its position in the database, as last read or committed."""
    quiet_after: int = 0
    quiet_upto: int = 0
    """It handles no event in (quiet_after, quiet_upto]: a fact about the log, so it holds
    whatever happens to the database (a crash that loses commits moves `recorded` back
    before `quiet_after`, and then it counts for nothing)."""
    stalled: bool = False
    present: bool = False
    topics: frozenset[str] = field(default_factory=frozenset)

    @property
    def tracking(self) -> Identifier:
        return Identifier(f"{self.name}__g{self.generation}_tracking")

    def start(self, recorded: int | None = None) -> int:
        """Where it must read from: its position, or past the events it does not handle."""
        position = self.recorded if recorded is None else recorded
        if self.quiet_after <= position <= self.quiet_upto:
            return self.quiet_upto
        return position

    def handles(self, event: RecordedEvent) -> bool:
        return not self.topics or event.topic in self.topics

    def note_quiet(self, start: int, upto: int) -> None:
        """Nothing in (start, upto] for it, where `start` is `self.start()`."""
        if start == self.quiet_upto and self.quiet_after <= self.recorded <= self.quiet_upto:
            self.quiet_upto = max(self.quiet_upto, upto)
        else:
            self.quiet_after, self.quiet_upto = start, upto

    def committed(self, position: int) -> None:
        self.recorded = position
        self.quiet_after = self.quiet_upto = position

    def reset(self, generation: int) -> None:
        self.generation = generation
        self.projection = None
        self.recorded = self.quiet_after = self.quiet_upto = 0

    @property
    def unrecorded(self) -> bool:
        """Its position could move without applying anything."""
        return self.present and not self.stalled and self.start() > self.recorded


@dataclass(frozen=True)
class _Batch:
    read: int
    """Events read from the log."""
    progressed: bool
    """Some projection read further (False: every one is at the head, or stalled)."""


class ProjectionRunner:
    """One reader of the log for the projections `names` (one name, several, or None for
    all), over its own connection to `url`."""

    def __init__(
        self,
        projections: Projections,
        names: str | Iterable[str] | None,
        url: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
    ) -> None:
        self.projections = projections
        if names is None:
            names = projections.classes
        self.names = [names] if isinstance(names, str) else sorted(names)
        self.url = url
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.leased: set[str] = set()
        """The projections this runner holds the lease of while it follows the log."""
        self._tracks = {name: _Track(name) for name in self.names}
        self._serving: Collection[str] = self.names
        self._last_flush = float("-inf")
        self._texts: dict[tuple[Any, ...], bytes] = {}

    def _connect(self) -> Connection:
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    # --- batches -----------------------------------------------------------------------------

    def step(self) -> int:
        """Read the next batch once and apply it to every projection behind; events read
        (0 when every projection is at the head or stalled)."""
        with self._connect() as connection:
            return self._step(connection, self.names).read

    def catch_up(self) -> int:
        """Apply batches until the log ends or the projections stall, then record the
        positions of those with nothing left to apply; events read."""
        total = 0
        self._serving = self.names
        with self._connect() as connection:
            while (batch := self._step(connection, self.names)).progressed:
                total += batch.read
            self._flush(connection)
        return total

    def _step(self, connection: Connection, names: Collection[str]) -> _Batch:
        cursor = connection.cursor()
        tracks, head = self._sync(cursor, sorted(names))
        windows = self._read(cursor, tracks, head)
        decoded: dict[int, Any] = {}
        for window, behind in windows:
            for track in behind:
                self._apply(connection, track, window, decoded)
        return _Batch(sum(len(w.events) for w, _ in windows), progressed=bool(windows))

    def _sync(self, cursor: Cursor[DictRow], names: list[str]) -> tuple[list[_Track], int]:
        """Every projection's generation, stall and position, and the log's head: one
        statement (one snapshot) while the generations are the ones last seen."""
        known = [self._tracks[name] for name in names]
        rows = None
        if known and all(t.generation for t in known):
            try:
                cursor.execute(self._states_and_positions(known), (names,), prepare=True)
                rows = cursor.fetchall()
            except psycopg.errors.UndefinedTable:  # a rebuild dropped a generation we knew
                rows = None
        if rows is None:
            cursor.execute(_STATES, (names,), prepare=True)
            rows = cursor.fetchall()
        head = int(rows[0]["head"] or 0) if rows else 0
        for track in self._tracks.values():
            track.present = False
        unknown = []
        for row in rows:
            track = self._tracks[row["name"]]
            track.present = True
            if track.generation != row["generation"]:
                track.reset(row["generation"])
            track.stalled = row["stalled_position"] is not None
            track.topics = frozenset(self.projections.projection_class(track.name).topics)
            if row.get("tracked") is None:
                unknown.append(track)
            else:
                self._seen(track, row["position"])
        if unknown:
            cursor.execute(self._positions(unknown), prepare=True)
            for row in cursor.fetchall():
                self._seen(self._tracks[row["name"]], row["position"])
        return [t for t in known if t.present and not t.stalled], head

    @staticmethod
    def _seen(track: _Track, position: int | None) -> None:
        position = int(position or 0)
        if position < track.recorded:
            log.warning(
                "projection %s is back at %d after %d: the database lost commits (a crash);"
                " replaying them",
                track.name,
                position,
                track.recorded,
            )
        track.recorded = position

    def _read(
        self, cursor: Cursor[DictRow], tracks: list[_Track], head: int
    ) -> list[tuple[Window, list[_Track]]]:
        """Batches of the log for the projections behind: usually one; more when some are
        further behind than a batch, so the others are not held back by them."""
        windows = []
        behind = [t for t in tracks if t.start() < head]
        while behind:
            after = min(t.start() for t in behind)
            topics = (
                None
                if any(not t.topics for t in behind)
                else set().union(*(t.topics for t in behind))
            )
            window = read_window(cursor, after, self.batch_size, head=head, topics=topics)
            windows.append((window, [t for t in behind if t.start() < window.upto]))
            behind = [t for t in behind if t.start() >= window.upto]
        return windows

    # --- one projection ----------------------------------------------------------------------

    def _apply(
        self, connection: Connection, track: _Track, window: Window, decoded: dict[int, Any]
    ) -> None:
        start = track.start()
        if not any(e.position > start and track.handles(e) for e in window.events):
            track.note_quiet(start, window.upto)  # no transaction at all
            return
        try:
            self._commit(connection, track, window, decoded)
        except CONNECTION_ERRORS:
            raise
        except HandlerFailedError as failure:
            self._stall(connection, track, failure.event, str(failure), window, decoded)
        except Exception as error:
            # Not a handler (a COPY of buffered rows, say): find the event one at a time.
            log.warning(
                "projection %s failed on a batch (%s): retrying per event", track.name, error
            )
            self._commit_one_by_one(connection, track, window, decoded)

    def _commit(
        self,
        connection: Connection,
        track: _Track,
        window: Window,
        decoded: dict[int, Any],
        *,
        until: int | None = None,
    ) -> None:
        """In one transaction: the events of `window` it handles, up to `until` (default:
        the window's end), and `until` as its position."""
        upto = window.upto if until is None else until
        with connection.transaction():
            cursor = connection.cursor()
            view = self._locked_view(cursor, track)
            if view is None:
                return
            cursor.execute(self._positions([track]), prepare=True)
            row = cursor.fetchone()
            recorded = int(row["position"] or 0) if row else 0
            start = track.start(recorded)
            if start >= upto:
                track.recorded = recorded
                return
            if start < window.after:
                # It fell behind this batch (a crash lost its last commit, say): read its own.
                topics = track.topics or None
                window = read_window(cursor, start, self.batch_size, head=upto, topics=topics)
                upto = window.upto
            events = [e for e in window.events if start < e.position <= upto and track.handles(e)]
            projection = track.projection
            assert projection is not None
            with view.batch(cursor):
                apply_events(projection, self.projections.mapper, events, decoded)
                view.record_position(upto)
        track.committed(upto)

    def _commit_one_by_one(
        self, connection: Connection, track: _Track, window: Window, decoded: dict[int, Any]
    ) -> None:
        for event in [e for e in window.events if e.position > track.start() and track.handles(e)]:
            try:
                self._commit(connection, track, window, decoded, until=event.position)
            except CONNECTION_ERRORS:
                raise
            except HandlerFailedError as failure:
                self._stall(connection, track, failure.event, str(failure), window, decoded)
                return
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                self._stall(connection, track, event, message, window, decoded)
                return
        self._commit(connection, track, window, decoded)

    def _stall(
        self,
        connection: Connection,
        track: _Track,
        event: RecordedEvent,
        error: str,
        window: Window,
        decoded: dict[int, Any],
    ) -> None:
        """Keep the events before the failing one, then record the stall at it."""
        self._commit(connection, track, window, decoded, until=event.position - 1)
        self.projections.record_stall(track.name, event.position, event.topic, error)
        track.stalled = True
        log.error("projection %s stalled at %d: %s", track.name, event.position, error)

    def _locked_view(self, cursor: Cursor[DictRow], track: _Track) -> ProjectionView | None:
        """Hold its state row (FOR SHARE: a rebuild's switch, FOR UPDATE, waits for this
        transaction, and this one for the switch); None if it stalled or was rebuilt."""
        cursor.execute(_LOCK_STATE, (track.name,), prepare=True)
        state = cursor.fetchone()
        if state is None or state["stalled_position"] is not None:
            track.stalled = True
            return None
        if state["generation"] != track.generation:
            return None  # the next batch starts over on the new generation
        if track.projection is None:
            view = self.projections.view(track.name, track.generation)
            track.projection = self.projections.projection(track.name, view)
        view = track.projection.view
        assert isinstance(view, ProjectionView)
        return view

    # --- positions of projections with nothing to apply ---------------------------------------

    def _flush(self, connection: Connection) -> None:
        """Record the position of every projection that has nothing to apply up to there,
        in one transaction (three statements, however many projections)."""
        self._last_flush = time.monotonic()
        pending = {t.name: t for t in self._pending()}
        if not pending:
            return
        moves: list[tuple[_Track, int]] = []
        with connection.transaction():
            cursor = connection.cursor()
            cursor.execute(_LOCK_STATES, (sorted(pending),), prepare=True)
            tracks = [
                pending[state["name"]]
                for state in cursor.fetchall()
                if state["stalled_position"] is None
                and state["generation"] == pending[state["name"]].generation
            ]
            if not tracks:
                return
            cursor.execute(self._positions(tracks), prepare=True)
            for row in cursor.fetchall():
                track = pending[row["name"]]
                recorded = track.recorded = int(row["position"] or 0)
                if track.start(recorded) > recorded:
                    moves.append((track, track.start(recorded)))
            if moves:
                cursor.execute(self._record(moves), [p for _, p in moves], prepare=True)
        for track, position in moves:
            track.recorded = position

    def _pending(self) -> list[_Track]:
        return [self._tracks[name] for name in self._serving if self._tracks[name].unrecorded]

    # --- statements, rendered once -------------------------------------------------------------

    def _text(self, key: tuple[Any, ...], build: Composable) -> bytes:
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) > 64:  # generations come and go with rebuilds
                self._texts.clear()
            text = self._texts[key] = build.as_bytes()
        return text

    @staticmethod
    def _position_of(track: _Track, *, generation: bool = False) -> Composable:
        columns = "{} AS name, {} AS generation, " if generation else "{} AS name, "
        values = (
            [Literal(track.name), Literal(track.generation)]
            if generation
            else [Literal(track.name)]
        )
        return SQL(
            columns + "max(notification_id) AS position FROM {} WHERE application_name = {}"
        ).format(*values, track.tracking, Literal(LOG_NAME))

    def _positions(self, tracks: list[_Track]) -> bytes:
        key = ("positions", *((t.name, t.generation) for t in tracks))
        if key in self._texts:
            return self._texts[key]
        parts = [SQL("SELECT ") + self._position_of(t) for t in tracks]
        return self._text(key, SQL(" UNION ALL ").join(parts))

    def _states_and_positions(self, tracks: list[_Track]) -> bytes:
        key = ("states", *((t.name, t.generation) for t in tracks))
        if key in self._texts:
            return self._texts[key]
        positions = SQL(" UNION ALL ").join(
            SQL("SELECT ") + self._position_of(t, generation=True) for t in tracks
        )
        query = SQL(
            "SELECT s.name, s.generation, s.stalled_position, p.name AS tracked, p.position, {}"
            " FROM projection_state s LEFT JOIN ({}) p"
            " ON p.name = s.name AND p.generation = s.generation WHERE s.name = ANY(%s)"
        ).format(_HEAD, positions)
        return self._text(key, query)

    def _record(self, moves: list[tuple[_Track, int]]) -> bytes:
        """One statement that moves each projection's position (only ever forward)."""
        key = ("record", *((t.name, t.generation) for t, _ in moves))
        if key in self._texts:
            return self._texts[key]
        upserts = [
            SQL(
                "{} AS (INSERT INTO {} (application_name, notification_id) VALUES ({}, %s)"
                " ON CONFLICT (application_name) DO UPDATE"
                " SET notification_id = excluded.notification_id"
                " WHERE {}.notification_id < excluded.notification_id)"
            ).format(Identifier(f"m{number}"), track.tracking, Literal(LOG_NAME), track.tracking)
            for number, (track, _) in enumerate(moves)
        ]
        return self._text(key, SQL("WITH {} SELECT 1").format(SQL(", ").join(upserts)))

    # --- following the log ---------------------------------------------------------------------

    def run(self, stop: threading.Event, *, idle_wait: float = 1.0) -> None:
        """Follow the log until `stop` is set, waking on NOTIFY from new appends."""
        while not stop.is_set():
            try:
                self._follow(stop, idle_wait)
            except CONNECTION_ERRORS as error:
                self.leased = set()
                log.warning("projection runner lost the database: %s", error)
                stop.wait(idle_wait)

    def after_turn(self) -> None:
        """Called after every turn of the follow loop (the worker beats here)."""

    def _follow(self, stop: threading.Event, idle_wait: float) -> None:
        # One connection: LISTEN, the leases (session advisory locks) and every batch.
        with self._connect() as connection:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.leased = set()
            self._serving = self.leased
            leases_tried = float("-inf")
            while not stop.is_set():
                if len(self.leased) < len(self.names) and (
                    time.monotonic() - leases_tried >= idle_wait
                ):
                    # The lease: one active runner per projection across every process.
                    self._take_leases(connection)
                    leases_tried = time.monotonic()
                batch = self._step(connection, self.leased) if self.leased else _Batch(0, False)
                self.after_turn()
                if batch.read >= self.batch_size or (batch.progressed and batch.read == 0):
                    self._flush_if_due(connection)
                    continue  # more is waiting
                if self._notified(connection, 0):
                    self._flush_if_due(connection)
                    continue  # appended meanwhile
                if self._pending():
                    # Idle: positions reach the head within `flush_interval`.
                    due = self._last_flush + self.flush_interval - time.monotonic()
                    if due > 0 and self._notified(connection, due):
                        continue
                    self._flush(connection)
                self._notified(connection, idle_wait)

    def _flush_if_due(self, connection: Connection) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self._flush(connection)

    @staticmethod
    def _notified(connection: Connection, timeout: float) -> bool:
        """Wait up to `timeout` for an append's NOTIFY; take every one already queued."""
        woken = False
        for _ in connection.notifies(timeout=timeout, stop_after=1):
            woken = True
        if woken:
            for _ in connection.notifies(timeout=0):
                pass
        return woken

    def _take_leases(self, connection: Connection) -> None:
        for name in self.names:
            if name in self.leased:
                continue
            row = connection.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s)) AS taken", (f"projection:{name}",)
            ).fetchone()
            if row and row["taken"]:
                self.leased.add(name)
