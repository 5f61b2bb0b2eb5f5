"""Arena commands: queue a passing clone, admission rounds (on request and on a cadence),
admin controls over members, capacity and pauses, and the owner's retirement.

An admission round reads the queue's order from the read model (which may lag) and decides
on the store's truth: each candidate's membership must still be queued, and its clone and
profile are loaded to judge eligibility (`skip_reason`). Owner standing (no banned clone)
comes from the clones read model. The seats are counted on the one `Arena` aggregate, so
concurrent rounds conflict and the retry sees the other's admissions: capacity holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from aggregates.arena import (
    ARENA_ID,
    AdmissionRound,
    Arena,
    ArenaMembership,
    Candidate,
    EntryFacts,
    MembershipStatus,
    SkipReason,
    membership_id_for,
    skip_reason,
)
from aggregates.base import CommandContext, derive_id, fingerprint
from aggregates.clones import Clone
from aggregates.errors import NotFoundError
from aggregates.profiles import PublicProfile, profile_id_for
from runtime.clock import Clock
from runtime.leases import lease
from services.eventlog import EventLog, UnitOfWork, Written
from services.jobs import job_context

if TYPE_CHECKING:
    from runtime.settings import Settings

log = logging.getLogger(__name__)

ADMISSION_JOB = "arena_admissions"
ADMISSION_LEASE = f"job:{ADMISSION_JOB}"
"""The advisory lock one cadence round holds, across every process."""


@dataclass(frozen=True)
class AdmissionPolicy:
    """The settings an admission round applies (capacity until an admin sets one)."""

    default_capacity: int
    batch_size: int


@dataclass(frozen=True)
class Skipped:
    clone_id: UUID
    reason: SkipReason


@dataclass(frozen=True)
class RoundResult:
    round_id: UUID | None
    """None for a cadence round that admitted nobody: nothing was recorded."""
    capacity: int
    seats_before: int
    paused: bool
    admitted: list[UUID] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def __str__(self) -> str:
        """The round in a line, as the worker's heartbeat shows it."""
        if self.paused:
            return "admissions paused"
        reasons = ", ".join(sorted({s.reason.value for s in self.skipped}))
        skipped = f", skipped {len(self.skipped)} ({reasons})" if self.skipped else ""
        free = self.capacity - self.seats_before - len(self.admitted)
        return f"admitted {len(self.admitted)}{skipped}; {max(free, 0)} seats free"

    @classmethod
    def of(cls, record: AdmissionRound) -> RoundResult:
        return cls(
            record.id,
            record.capacity,
            record.seats_before,
            record.paused,
            list(record.admitted),
            [Skipped(s["clone_id"], SkipReason(s["reason"])) for s in record.skipped],
        )


@dataclass(frozen=True)
class MembershipState:
    clone_id: UUID
    status: str


@dataclass(frozen=True)
class ArenaControls:
    capacity: int
    paused: bool
    seats: int


def admission_policy(settings: Settings) -> AdmissionPolicy:
    return AdmissionPolicy(settings.arena_capacity, settings.arena_admission_batch)


def arena_in(unit: UnitOfWork) -> Arena:
    arena = unit.find(Arena, ARENA_ID)
    return arena if arena is not None else unit.add(Arena.open())


def queue_for_arena(unit: UnitOfWork, clone_id: UUID, owner_id: UUID, **entry: Any) -> bool:
    """Queue a clone whose attempt passed (inside the verdict's own command). `entry` is
    the audition id, attempt number and pass time. Whether a new entry was made."""
    membership = unit.find(ArenaMembership, membership_id_for(clone_id))
    if membership is None:
        membership = unit.add(ArenaMembership.open(clone_id, owner_id))
    return membership.queue(**entry)


def leave_arena(unit: UnitOfWork, clone_id: UUID, reason: str) -> None:
    """A banned or archived clone leaves the queue or its seat, in the same command."""
    membership = unit.find(ArenaMembership, membership_id_for(clone_id))
    if membership is not None and membership.is_active and membership.remove(reason):
        arena_in(unit).free(clone_id, reason)


def _facts(unit: UnitOfWork, membership: ArenaMembership, candidate: Candidate) -> EntryFacts:
    clone = unit.get(Clone, membership.clone_id)
    profile = unit.find(PublicProfile, profile_id_for(membership.clone_id))
    return EntryFacts(
        clone_banned=clone.banned,
        clone_archived=clone.archived,
        profile_status=None if profile is None else profile.status,
        owner_in_good_standing=candidate.owner_in_good_standing,
    )


def _hold_round(
    unit: UnitOfWork,
    round_id: UUID,
    request: str,
    candidates: Sequence[Candidate],
    policy: AdmissionPolicy,
) -> AdmissionRound:
    # Not added to the unit unless someone is admitted: an idle round writes nothing.
    arena = unit.find(Arena, ARENA_ID) or Arena.open()
    capacity, seats_before = arena.capacity_or(policy.default_capacity), len(arena.seats)
    room = 0 if arena.paused else min(arena.free_seats(policy.default_capacity), policy.batch_size)
    admitted: list[UUID] = []
    skipped: list[dict[str, Any]] = []
    for candidate in candidates:
        if len(admitted) >= room:
            break
        membership = unit.find(ArenaMembership, membership_id_for(candidate.clone_id))
        if membership is None or membership.status != MembershipStatus.QUEUED:
            continue  # the read model lags: admitted, removed or retired meanwhile
        reason = skip_reason(_facts(unit, membership, candidate))
        if reason is not None:
            skipped.append({"clone_id": candidate.clone_id, "reason": reason.value})
            continue
        membership.admit(round_id)
        admitted.append(candidate.clone_id)
    if admitted:
        unit.add(arena).fill(round_id, admitted, policy.default_capacity)
    return AdmissionRound(
        id=round_id,
        request_fingerprint=request,
        capacity=capacity,
        seats_before=seats_before,
        paused=arena.paused,
        admitted=admitted,
        skipped=skipped,
    )


def sync_admissions(
    event_log: EventLog,
    context: CommandContext,
    *,
    key: str,
    candidates: Sequence[Candidate],
    policy: AdmissionPolicy,
) -> Written[RoundResult]:
    """One admission round under an idempotency key: the same key answers the first round
    again. The round is recorded even when it admits nobody (its answer is kept)."""
    request = fingerprint({})

    def decide(unit: UnitOfWork) -> RoundResult:
        def create(round_id: UUID) -> AdmissionRound:
            return _hold_round(unit, round_id, request, candidates, policy)

        return RoundResult.of(unit.create_once(AdmissionRound, f"sync:{key}", request, create))

    return event_log.execute(context, decide)


def admit_on_cadence(
    event_log: EventLog,
    context: CommandContext,
    candidates: Sequence[Candidate],
    policy: AdmissionPolicy,
) -> Written[RoundResult]:
    """A worker round: recorded only when it admits someone, so an idle arena writes
    nothing. Its id comes from the run (job and time), so a replayed run is one round."""
    round_id = derive_id("AdmissionRound", context.correlation_id)

    def decide(unit: UnitOfWork) -> RoundResult:
        record = unit.find(AdmissionRound, round_id)
        if record is not None:
            return RoundResult.of(record)
        record = _hold_round(unit, round_id, "", candidates, policy)
        if not record.admitted:
            return replace(RoundResult.of(record), round_id=None)
        return RoundResult.of(unit.add(record))

    return event_log.execute(context, decide)


def _on_membership(
    event_log: EventLog,
    context: CommandContext,
    clone_id: UUID,
    change: Callable[[UnitOfWork, ArenaMembership], None],
    owner_id: UUID | None = None,
) -> Written[MembershipState]:
    def decide(unit: UnitOfWork) -> MembershipState:
        if owner_id is not None and unit.get(Clone, clone_id).owner_id != owner_id:
            raise NotFoundError(f"Clone {clone_id} not found")
        membership = unit.find(ArenaMembership, membership_id_for(clone_id))
        if membership is None:
            raise NotFoundError(f"clone {clone_id} has no arena membership")
        change(unit, membership)
        return MembershipState(clone_id, str(membership.status))

    return event_log.execute(context, decide)


def suspend_member(
    event_log: EventLog, context: CommandContext, *, clone_id: UUID, reason: str
) -> Written[MembershipState]:
    """A suspended member keeps its seat until reinstated or removed."""
    return _on_membership(event_log, context, clone_id, lambda _, m: m.suspend(reason))


def reinstate_member(
    event_log: EventLog, context: CommandContext, *, clone_id: UUID, reason: str
) -> Written[MembershipState]:
    return _on_membership(event_log, context, clone_id, lambda _, m: m.reinstate(reason))


def remove_member(
    event_log: EventLog, context: CommandContext, *, clone_id: UUID, reason: str
) -> Written[MembershipState]:
    """Out of the queue or the arena; a seat it held is free for the next round."""

    def remove(unit: UnitOfWork, membership: ArenaMembership) -> None:
        if membership.remove(reason):
            arena_in(unit).free(clone_id, reason)

    return _on_membership(event_log, context, clone_id, remove)


def retire_clone(
    event_log: EventLog, context: CommandContext, *, clone_id: UUID, owner_id: UUID
) -> Written[MembershipState]:
    """The owner takes their clone out of the queue or the arena."""
    reason = "retired by the owner"

    def retire(unit: UnitOfWork, membership: ArenaMembership) -> None:
        if membership.retire(reason):
            arena_in(unit).free(clone_id, reason)

    return _on_membership(event_log, context, clone_id, retire, owner_id=owner_id)


def _on_arena(
    event_log: EventLog,
    context: CommandContext,
    default_capacity: int,
    change: Callable[[Arena], None],
) -> Written[ArenaControls]:
    def decide(unit: UnitOfWork) -> ArenaControls:
        arena = arena_in(unit)
        change(arena)
        return ArenaControls(arena.capacity_or(default_capacity), arena.paused, len(arena.seats))

    return event_log.execute(context, decide)


def set_capacity(
    event_log: EventLog,
    context: CommandContext,
    *,
    capacity: int,
    reason: str,
    default_capacity: int,
) -> Written[ArenaControls]:
    """A lower capacity than the seats taken removes nobody: no one is admitted until
    members leave."""
    return _on_arena(
        event_log, context, default_capacity, lambda a: a.set_capacity(capacity, reason)
    )


def pause_admissions(
    event_log: EventLog, context: CommandContext, *, reason: str, default_capacity: int
) -> Written[ArenaControls]:
    return _on_arena(event_log, context, default_capacity, lambda a: a.pause(reason))


def resume_admissions(
    event_log: EventLog, context: CommandContext, *, reason: str, default_capacity: int
) -> Written[ArenaControls]:
    return _on_arena(event_log, context, default_capacity, lambda a: a.resume(reason))


# --- the admission job ---------------------------------------------------------------------


@dataclass(frozen=True)
class AdmitFromQueue:
    """One cadence round: admits eligible queued clones while seats are free. One round at
    a time across processes (the `job:arena_admissions` lease). Answers how many were
    admitted."""

    event_log: EventLog
    candidates: Callable[[], list[Candidate]]
    policy: AdmissionPolicy
    clock: Clock
    url: str

    def __call__(self) -> RoundResult | None:
        with lease(self.url, ADMISSION_LEASE) as held:
            if not held:
                log.info("%s: another round holds the lease", ADMISSION_JOB)
                return None
            now: datetime = self.clock()
            context = job_context(ADMISSION_JOB, lambda: now, "round")
            return admit_on_cadence(self.event_log, context, self.candidates(), self.policy).result
