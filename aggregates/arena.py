"""The Arena: its seats, the promotion queue's entries, and each clone's membership.

A clone whose audition attempt passed is queued (`ArenaMembership.queue`), once per passing
attempt, in the same command as the verdict. Its place is by pass time, then clone id. An
admission round admits queued clones that are eligible (`skip_reason` is None) in that
order, while the `Arena` has free seats; one that is not eligible keeps its place and is
skipped, with the reason. Every seat change goes through the one `Arena` aggregate, so
concurrent rounds conflict in the store and capacity holds under races.

    queued --admit--> admitted --suspend--> suspended --reinstate--> admitted
       |                 |                      |
       +-----------------+----------------------+--remove (admin, ban, archive)--> removed
                         +----------------------+--retire (owner)---------------> retired

A removed or retired clone leaves the arena; a later passing attempt queues it again. A
suspended member keeps its seat. Capacity starts at the service's setting and an admin may
change it; an admin may pause admissions. The aggregates never read the clock or settings:
times, defaults and facts arrive as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.entitlements import ReasonRequiredError
from aggregates.errors import ConflictError, InvalidCommandError

ARENA_ID = derive_id("Arena", "main")
"""There is one arena: every seat change serializes on it."""


class MembershipStatus(StrEnum):
    QUEUED = "queued"
    ADMITTED = "admitted"
    SUSPENDED = "suspended"
    REMOVED = "removed"
    RETIRED = "retired"


SEATED = (MembershipStatus.ADMITTED, MembershipStatus.SUSPENDED)
ACTIVE = (MembershipStatus.QUEUED, *SEATED)


class SkipReason(StrEnum):
    """Why a queued clone is passed over in a round (it keeps its place)."""

    CLONE_BANNED = "clone-banned"
    CLONE_ARCHIVED = "clone-archived"
    PROFILE_MISSING = "profile-missing"
    PROFILE_NOT_APPROVED = "profile-not-approved"
    OWNER_NOT_IN_GOOD_STANDING = "owner-not-in-good-standing"


@dataclass(frozen=True)
class EntryFacts:
    """What eligibility depends on, from the aggregates (a round) or the read models (the
    queue as shown): the same rule judges both."""

    clone_banned: bool
    clone_archived: bool
    profile_status: str | None
    """None when the clone has no public profile."""
    owner_in_good_standing: bool


def skip_reason(facts: EntryFacts) -> SkipReason | None:
    """None when the entry may be admitted: the clone is neither banned nor archived, its
    public profile is approved (and so visible), and its owner is in good standing (no
    clone of theirs is banned)."""
    if facts.clone_banned:
        return SkipReason.CLONE_BANNED
    if facts.clone_archived:
        return SkipReason.CLONE_ARCHIVED
    if facts.profile_status is None:
        return SkipReason.PROFILE_MISSING
    if facts.profile_status != "approved":
        return SkipReason.PROFILE_NOT_APPROVED
    if not facts.owner_in_good_standing:
        return SkipReason.OWNER_NOT_IN_GOOD_STANDING
    return None


@dataclass(frozen=True)
class Candidate:
    """A queued clone in queue order, as a round considers it, with its owner's standing
    (which the round takes from the clones read model; the rest it loads itself)."""

    clone_id: UUID
    owner_in_good_standing: bool


def membership_id_for(clone_id: UUID) -> UUID:
    """One membership per clone, across all its entries and seats."""
    return derive_id("ArenaMembership", str(clone_id))


class MembershipNotActiveError(ConflictError):
    code = "arena-membership-not-active"


class MembershipNotSeatedError(ConflictError):
    code = "arena-membership-not-seated"


class MembershipNotSuspendedError(ConflictError):
    code = "arena-membership-not-suspended"


class MembershipNotQueuedError(ConflictError):
    code = "arena-membership-not-queued"


class ArenaFullError(ConflictError):
    code = "arena-full"


class CapacityOutOfRangeError(InvalidCommandError):
    code = "arena-capacity-out-of-range"


def require_reason(reason: str, what: str) -> str:
    if not reason.strip():
        raise ReasonRequiredError(f"{what} needs a reason")
    return reason


class ArenaMembership(DomainAggregate):
    """One clone's history in the arena: each queue entry, admission and exit."""

    class Opened(DomainAggregate.Created):
        clone_id: UUID
        owner_id: UUID

    class Queued(DomainAggregate.Event):
        audition_id: UUID
        attempt: int
        passed_at: datetime

    class Admitted(DomainAggregate.Event):
        round_id: UUID

    class Suspended(DomainAggregate.Event):
        reason: str

    class Reinstated(DomainAggregate.Event):
        reason: str

    class Removed(DomainAggregate.Event):
        reason: str
        was_seated: bool

    class Retired(DomainAggregate.Event):
        reason: str

    @event(Opened)
    def __init__(self, id: UUID, clone_id: UUID, owner_id: UUID) -> None:
        self.clone_id = clone_id
        self.owner_id = owner_id
        self.status: str | None = None  # None until the first entry is queued
        self.entries: list[dict[str, Any]] = []
        self.round_id: UUID | None = None

    @classmethod
    def open(cls, clone_id: UUID, owner_id: UUID) -> ArenaMembership:
        return cls(id=membership_id_for(clone_id), clone_id=clone_id, owner_id=owner_id)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def is_seated(self) -> bool:
        return self.status in SEATED

    @property
    def passed_at(self) -> datetime | None:
        """The pass time of the current entry: its place in the queue."""
        return self.entries[-1]["passed_at"] if self.entries else None

    def queue(self, audition_id: UUID, attempt: int, passed_at: datetime) -> bool:
        """Queue this passing attempt, unless the clone is queued or seated already (a
        second pass adds no second entry) or this attempt was queued before. Whether an
        entry was made."""
        if self.is_active or any(
            entry["audition_id"] == audition_id and entry["attempt"] == attempt
            for entry in self.entries
        ):
            return False
        self._queued(audition_id=audition_id, attempt=attempt, passed_at=passed_at)
        return True

    def admit(self, round_id: UUID) -> None:
        if self.status != MembershipStatus.QUEUED:
            raise MembershipNotQueuedError(f"clone {self.clone_id} is not queued")
        self._admitted(round_id=round_id)

    def suspend(self, reason: str) -> None:
        require_reason(reason, "suspending a member")
        if self.status == MembershipStatus.SUSPENDED:
            return
        if self.status != MembershipStatus.ADMITTED:
            raise MembershipNotSeatedError(f"clone {self.clone_id} is not an arena member")
        self._suspended(reason=reason)

    def reinstate(self, reason: str) -> None:
        require_reason(reason, "reinstating a member")
        if self.status == MembershipStatus.ADMITTED:
            return
        if self.status != MembershipStatus.SUSPENDED:
            raise MembershipNotSuspendedError(f"clone {self.clone_id} is not suspended")
        self._reinstated(reason=reason)

    def remove(self, reason: str) -> bool:
        """Take the clone out of the queue or its seat. Whether it held a seat."""
        require_reason(reason, "removing a clone from the arena")
        if not self.is_active:
            raise MembershipNotActiveError(f"clone {self.clone_id} is not in the arena")
        seated = self.is_seated
        self._removed(reason=reason, was_seated=seated)
        return seated

    def retire(self, reason: str) -> bool:
        """The owner takes the clone out (queue or seat). Whether it held a seat."""
        if not self.is_active:
            raise MembershipNotActiveError(f"clone {self.clone_id} is not in the arena")
        seated = self.is_seated
        self._retired(reason=reason)
        return seated

    @event(Queued)
    def _queued(self, audition_id: UUID, attempt: int, passed_at: datetime) -> None:
        self.status = MembershipStatus.QUEUED.value
        self.round_id = None
        self.entries = [
            *self.entries,
            {"audition_id": audition_id, "attempt": attempt, "passed_at": passed_at},
        ]

    @event(Admitted)
    def _admitted(self, round_id: UUID) -> None:
        self.status = MembershipStatus.ADMITTED.value
        self.round_id = round_id

    @event(Suspended)
    def _suspended(self, reason: str) -> None:
        self.status = MembershipStatus.SUSPENDED.value

    @event(Reinstated)
    def _reinstated(self, reason: str) -> None:
        self.status = MembershipStatus.ADMITTED.value

    @event(Removed)
    def _removed(self, reason: str, was_seated: bool) -> None:
        self.status = MembershipStatus.REMOVED.value

    @event(Retired)
    def _retired(self, reason: str) -> None:
        self.status = MembershipStatus.RETIRED.value


class Arena(DomainAggregate):
    """The seats and the admission controls. Capacity is None until an admin sets one:
    until then the service's setting applies (passed in), so changing the setting works."""

    # Every admission and exit is an event here; snapshots keep loads cheap.
    snapshot_interval: ClassVar[int | None] = 50

    MAX_CAPACITY: ClassVar[int] = 10_000

    class Opened(DomainAggregate.Created):
        pass

    class CapacityChanged(DomainAggregate.Event):
        capacity: int
        reason: str

    class AdmissionsPaused(DomainAggregate.Event):
        reason: str

    class AdmissionsResumed(DomainAggregate.Event):
        reason: str

    class SeatsFilled(DomainAggregate.Event):
        round_id: UUID
        clone_ids: list[UUID]

    class SeatFreed(DomainAggregate.Event):
        clone_id: UUID
        reason: str

    @event(Opened)
    def __init__(self, id: UUID) -> None:
        self.capacity: int | None = None
        self.paused = False
        self.pause_reason: str | None = None
        self.seats: list[UUID] = []

    @classmethod
    def open(cls) -> Arena:
        return cls(id=ARENA_ID)

    def capacity_or(self, default: int) -> int:
        return default if self.capacity is None else self.capacity

    def free_seats(self, default_capacity: int) -> int:
        return max(0, self.capacity_or(default_capacity) - len(self.seats))

    def set_capacity(self, capacity: int, reason: str) -> None:
        require_reason(reason, "changing the arena's capacity")
        if not 0 <= capacity <= self.MAX_CAPACITY:
            raise CapacityOutOfRangeError(f"capacity must be 0..{self.MAX_CAPACITY}")
        if capacity != self.capacity:
            self._capacity_changed(capacity=capacity, reason=reason)

    def pause(self, reason: str) -> None:
        require_reason(reason, "pausing admissions")
        if not self.paused:
            self._paused(reason=reason)

    def resume(self, reason: str) -> None:
        require_reason(reason, "resuming admissions")
        if self.paused:
            self._resumed(reason=reason)

    def fill(self, round_id: UUID, clone_ids: list[UUID], default_capacity: int) -> None:
        """Seat these clones; never past capacity (a lower capacity seats nobody new, and
        current members keep their seats)."""
        if not clone_ids:
            return
        if len(clone_ids) > self.free_seats(default_capacity):
            raise ArenaFullError("the arena has fewer free seats than clones to admit")
        self._seats_filled(round_id=round_id, clone_ids=clone_ids)

    def free(self, clone_id: UUID, reason: str) -> None:
        if clone_id in self.seats:
            self._seat_freed(clone_id=clone_id, reason=reason)

    @event(CapacityChanged)
    def _capacity_changed(self, capacity: int, reason: str) -> None:
        self.capacity = capacity

    @event(AdmissionsPaused)
    def _paused(self, reason: str) -> None:
        self.paused = True
        self.pause_reason = reason

    @event(AdmissionsResumed)
    def _resumed(self, reason: str) -> None:
        self.paused = False
        self.pause_reason = None

    @event(SeatsFilled)
    def _seats_filled(self, round_id: UUID, clone_ids: list[UUID]) -> None:
        self.seats = [*self.seats, *clone_ids]

    @event(SeatFreed)
    def _seat_freed(self, clone_id: UUID, reason: str) -> None:
        self.seats = [seat for seat in self.seats if seat != clone_id]


class AdmissionRound(DomainAggregate):
    """One admission round's record and answer: asked again with its key, the same answer."""

    class Held(DomainAggregate.Created):
        request_fingerprint: str
        capacity: int
        seats_before: int
        paused: bool
        admitted: list[UUID]
        skipped: list[dict[str, Any]]
        """`{"clone_id": ..., "reason": SkipReason}` in queue order."""

    @event(Held)
    def __init__(
        self,
        id: UUID,
        request_fingerprint: str,
        capacity: int,
        seats_before: int,
        paused: bool,
        admitted: list[UUID],
        skipped: list[dict[str, Any]],
    ) -> None:
        self.request_fingerprint = request_fingerprint
        self.capacity = capacity
        self.seats_before = seats_before
        self.paused = paused
        self.admitted = admitted
        self.skipped = skipped
