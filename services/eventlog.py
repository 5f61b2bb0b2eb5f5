"""The one command path: load, decide, save atomically, retry on a version conflict.

Every command in every area runs through `EventLog.execute`. The decision is a function of
a `UnitOfWork`; whatever aggregates it loads or creates are saved together in one
transaction, so a command touching several aggregates is all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Recording, Transcoder
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from aggregates.base import CommandContext, DomainAggregate, acting, derive_id
from aggregates.errors import ConcurrencyConflictError, IdempotencyKeyReusedError, NotFoundError
from runtime.schema import EVENTS_TABLE, LOG_NAME
from runtime.transcoder import OrjsonTranscoder

A = TypeVar("A", bound=DomainAggregate)
T = TypeVar("T")


@dataclass(frozen=True)
class Written(Generic[T]):
    """A command's result and the log position a reader can wait for."""

    result: T
    position: int


class UnitOfWork:
    """The aggregates one command reads and writes; all of them are saved together."""

    def __init__(self, event_log: EventLog) -> None:
        self._event_log = event_log
        self._aggregates: dict[UUID, DomainAggregate] = {}

    @property
    def aggregates(self) -> list[DomainAggregate]:
        return list(self._aggregates.values())

    def find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate, or None if there is none of this class with this id (an id of
        another kind of aggregate is answered the same way: it says nothing about it)."""
        aggregate = self._aggregates.get(aggregate_id)
        if aggregate is None:
            aggregate = self._event_log.stored(cls, aggregate_id)
            if aggregate is None:
                return None
        if not isinstance(aggregate, cls):
            return None
        self._aggregates[aggregate_id] = aggregate
        return aggregate

    def get(self, cls: type[A], aggregate_id: UUID) -> A:
        aggregate = self.find(cls, aggregate_id)
        if aggregate is None:
            raise NotFoundError(f"{cls.__name__} {aggregate_id} not found")
        return aggregate

    def add(self, aggregate: A) -> A:
        self._aggregates[aggregate.id] = aggregate
        return aggregate

    def create_once(
        self, cls: type[A], key: str, fingerprint: str, create: Callable[[UUID], A]
    ) -> A:
        """Create the aggregate this key names, or return it if the key was seen before.

        The id is derived from the key, so two racing creations collide in the store and
        the loser's retry finds the winner's aggregate. A reused key with a different
        request (another fingerprint) is refused.
        """
        aggregate_id = derive_id(cls.__name__, key)
        existing = self.find(cls, aggregate_id)
        if existing is None:
            return self.add(create(aggregate_id))
        if getattr(existing, "request_fingerprint", None) != fingerprint:
            raise IdempotencyKeyReusedError(f"key {key!r} was used for another request")
        return existing


def replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """The aggregate after these events. The library's `project_aggregate` first checks
    each event against a runtime `Protocol`, which on Python 3.11 costs more than the
    mutation itself; every event in our log is one of our aggregates' own events."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class _ReplayForEveryClass(dict[type, Callable[..., Any]]):
    """Snapshots are taken by `replay`, whatever the aggregate's class."""

    def __getitem__(self, key: type) -> Callable[..., Any]:
        return replay


class _IntervalsOnClasses(dict[type, int]):
    """The library looks snapshot intervals up by aggregate class; ours live on the class."""

    def get(self, key: type, default: Any = None) -> Any:
        return getattr(key, "snapshot_interval", None) or default

    def __bool__(self) -> bool:
        return True


class EventLog(Application[UUID]):
    """The event store: one application, one log, one global order."""

    name = LOG_NAME
    is_snapshotting_enabled = True

    def __init__(self, env: Mapping[str, str] | None = None, *, command_retries: int = 5) -> None:
        super().__init__(dict(env or {}))
        self.snapshotting_intervals = _IntervalsOnClasses()  # type: ignore[misc]
        self.snapshotting_projectors = _ReplayForEveryClass()  # type: ignore[misc]
        self.command_retries = command_retries

    @property
    def events_table(self) -> str:
        return EVENTS_TABLE

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def stored(self, cls: type[DomainAggregate], aggregate_id: UUID) -> DomainAggregate | None:
        """The aggregate with this id as stored, of whatever class. A class that never
        snapshots is replayed from its events alone: one query, not a snapshot lookup
        first (most such loads are of ids a command is about to create)."""
        if cls.snapshot_interval:
            try:
                return self.repository.get(aggregate_id, projector_func=replay)  # type: ignore[no-any-return]
            except AggregateNotFoundError:
                return None
        return replay(None, self.events.get(originator_id=aggregate_id))  # type: ignore[no-any-return]

    def save(self, *aggregates: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """The library's save, with the aggregates' events collected directly: its
        `collect_events` checks each object against two runtime `Protocol`s, a fifth of
        a one-event command's CPU on Python 3.11. Every object saved here is one of our
        aggregates (`UnitOfWork`)."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in aggregates:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def read(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate as stored now, outside any command (nothing is saved)."""
        return UnitOfWork(self).find(cls, aggregate_id)

    def execute(self, context: CommandContext, decide: Callable[[UnitOfWork], T]) -> Written[T]:
        """Run one command: decide on fresh state, save all, retry if another writer won."""
        retrying = Retrying(
            stop=stop_after_attempt(self.command_retries + 1),
            wait=wait_random_exponential(multiplier=0.005, max=0.1),
            retry=retry_if_exception_type(IntegrityError),
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(context, decide)
        except RetryError as error:
            raise ConcurrencyConflictError(
                "the aggregate kept changing; try the command again"
            ) from error.last_attempt.exception()
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, context: CommandContext, decide: Callable[[UnitOfWork], T]) -> Written[T]:
        unit = UnitOfWork(self)
        with acting(context):
            result = decide(unit)
        recordings = self.save(*unit.aggregates)
        if recordings:
            return Written(result, max(r.notification.id for r in recordings))
        return Written(result, self.position_of([a.id for a in unit.aggregates]))

    def position_of(self, aggregate_ids: list[UUID]) -> int:
        """The last position at which any of these aggregates changed (0 if none did)."""
        if not aggregate_ids:
            return 0
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        with datastore.get_connection() as conn:
            row = conn.execute(
                f"SELECT max(notification_id) AS position FROM {self.events_table} "
                "WHERE originator_id = ANY(%s)",
                (aggregate_ids,),
            ).fetchone()
        return int(row["position"] or 0)

    def positions_at(self, aggregate_id: UUID, versions: list[int]) -> list[int]:
        """The log positions of these versions of one aggregate, in the order asked."""
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        with datastore.get_connection() as conn:
            rows = conn.execute(
                f"SELECT originator_version AS version, notification_id AS position"
                f" FROM {self.events_table} WHERE originator_id = %s"
                " AND originator_version = ANY(%s)",
                (aggregate_id, versions),
            ).fetchall()
        found = {row["version"]: int(row["position"]) for row in rows}
        return [found[version] for version in versions]
