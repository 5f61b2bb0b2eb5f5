"""A user's roster of active clones: what the per-user limit on active clones counts.

Creating a clone counts it here and archiving releases it, in the same transaction as the
clone's own event. Two concurrent creates by one user both change this one aggregate, so
one of them is retried on fresh state and sees the other: the limit holds under races.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import ConflictError


class CloneLimitReachedError(ConflictError):
    code = "clone-limit-reached"


def roster_id_for(owner_id: UUID) -> UUID:
    return derive_id("CloneRoster", str(owner_id))


class CloneRoster(DomainAggregate):
    class Opened(DomainAggregate.Created):
        owner_id: UUID

    class CloneCounted(DomainAggregate.Event):
        clone_id: UUID
        limit: int

    class CloneReleased(DomainAggregate.Event):
        clone_id: UUID

    @event(Opened)
    def __init__(self, id: UUID, owner_id: UUID) -> None:
        self.owner_id = owner_id
        self.active: list[UUID] = []

    @classmethod
    def open(cls, owner_id: UUID) -> CloneRoster:
        return cls(id=roster_id_for(owner_id), owner_id=owner_id)

    def count_in(self, clone_id: UUID, limit: int) -> None:
        if clone_id in self.active:
            return
        if len(self.active) >= limit:
            raise CloneLimitReachedError(
                f"{len(self.active)} active clones is the limit; archive one to make another"
            )
        self._clone_counted(clone_id=clone_id, limit=limit)

    def release(self, clone_id: UUID) -> None:
        if clone_id in self.active:
            self._clone_released(clone_id=clone_id)

    @event(CloneCounted)
    def _clone_counted(self, clone_id: UUID, limit: int) -> None:
        self.active = [*self.active, clone_id]

    @event(CloneReleased)
    def _clone_released(self, clone_id: UUID) -> None:
        self.active = [c for c in self.active if c != clone_id]
