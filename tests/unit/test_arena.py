"""The arena on its own: eligibility, queue entries, memberships, seats.

Given an arena or a membership, when a command, then its events, state or error. No database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from aggregates.arena import (
    Arena,
    ArenaFullError,
    ArenaMembership,
    CapacityOutOfRangeError,
    EntryFacts,
    MembershipNotActiveError,
    MembershipNotQueuedError,
    MembershipNotSeatedError,
    MembershipNotSuspendedError,
    SkipReason,
    membership_id_for,
    skip_reason,
)
from aggregates.base import CommandContext, acting
from aggregates.entitlements import ReasonRequiredError

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ELIGIBLE = EntryFacts(
    clone_banned=False, clone_archived=False, profile_status="approved", owner_in_good_standing=True
)


@pytest.fixture(autouse=True)
def command() -> Iterator[None]:
    with acting(CommandContext("user:tester", NOON, "req-arena")):
        yield


def queued() -> ArenaMembership:
    membership = ArenaMembership.open(uuid4(), uuid4())
    assert membership.queue(uuid4(), 1, NOON)
    return membership


def event_names(aggregate: ArenaMembership | Arena) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"clone_banned": True, "profile_status": None}, SkipReason.CLONE_BANNED),
        ({"clone_archived": True, "profile_status": None}, SkipReason.CLONE_ARCHIVED),
        ({"profile_status": None}, SkipReason.PROFILE_MISSING),
        ({"profile_status": "pending"}, SkipReason.PROFILE_NOT_APPROVED),
        ({"profile_status": "under_review"}, SkipReason.PROFILE_NOT_APPROVED),
        ({"profile_status": "kept_hidden"}, SkipReason.PROFILE_NOT_APPROVED),
        ({"owner_in_good_standing": False}, SkipReason.OWNER_NOT_IN_GOOD_STANDING),
    ],
)
def test_an_entry_is_eligible_only_with_an_approved_profile_and_nothing_against_it(
    changes: dict[str, object], reason: SkipReason | None
) -> None:
    facts = EntryFacts(**{**ELIGIBLE.__dict__, **changes})  # type: ignore[arg-type]
    assert skip_reason(facts) == reason


def test_a_banned_clone_is_named_before_its_other_faults() -> None:
    facts = EntryFacts(
        clone_banned=True, clone_archived=True, profile_status=None, owner_in_good_standing=False
    )
    assert skip_reason(facts) is SkipReason.CLONE_BANNED


def test_one_membership_per_clone() -> None:
    clone_id = uuid4()
    assert ArenaMembership.open(clone_id, uuid4()).id == membership_id_for(clone_id)
    assert membership_id_for(clone_id) != membership_id_for(uuid4())


def test_a_passing_attempt_queues_the_clone_once() -> None:
    membership = ArenaMembership.open(uuid4(), uuid4())
    audition_id = uuid4()
    assert membership.queue(audition_id, 1, NOON)
    assert not membership.queue(audition_id, 1, NOON)
    assert not membership.queue(uuid4(), 1, NOON + timedelta(days=1))  # queued already
    assert event_names(membership) == ["Opened", "Queued"]
    assert (membership.status, membership.passed_at) == ("queued", NOON)


def test_a_retired_clone_is_queued_again_by_a_new_pass_but_never_by_an_old_one() -> None:
    membership = ArenaMembership.open(uuid4(), uuid4())
    first = uuid4()
    membership.queue(first, 1, NOON)
    membership.retire("retired by the owner")
    assert not membership.queue(first, 1, NOON)
    later = NOON + timedelta(days=3)
    assert membership.queue(first, 2, later)
    assert (membership.status, membership.passed_at, len(membership.entries)) == (
        "queued",
        later,
        2,
    )


def test_membership_lifecycle() -> None:
    membership = queued()
    round_id = uuid4()
    membership.admit(round_id)
    assert (membership.status, membership.round_id, membership.is_seated) == (
        "admitted",
        round_id,
        True,
    )
    membership.suspend("spamming the order book")
    membership.suspend("again")  # already suspended: nothing more
    assert membership.status == "suspended" and membership.is_seated
    membership.reinstate("appeal upheld")
    assert membership.status == "admitted"
    assert membership.remove("rules broken") is True
    assert membership.status == "removed" and not membership.is_active
    assert event_names(membership) == [
        "Opened",
        "Queued",
        "Admitted",
        "Suspended",
        "Reinstated",
        "Removed",
    ]


def test_commands_on_the_wrong_state_are_refused() -> None:
    membership = queued()
    with pytest.raises(MembershipNotSeatedError):
        membership.suspend("not a member yet")
    with pytest.raises(MembershipNotSuspendedError):
        membership.reinstate("not suspended")
    membership.admit(uuid4())
    with pytest.raises(MembershipNotQueuedError):
        membership.admit(uuid4())
    assert membership.retire("retired by the owner") is True
    with pytest.raises(MembershipNotActiveError):
        membership.remove("gone already")
    with pytest.raises(MembershipNotActiveError):
        membership.retire("gone already")


def test_a_queued_clone_removed_held_no_seat() -> None:
    assert queued().remove("clone banned: scam") is False


@pytest.mark.parametrize("reason", ["", "   "])
def test_admin_changes_need_a_reason(reason: str) -> None:
    membership = queued()
    membership.admit(uuid4())
    with pytest.raises(ReasonRequiredError):
        membership.suspend(reason)
    with pytest.raises(ReasonRequiredError):
        membership.remove(reason)
    arena = Arena.open()
    for change in (arena.pause, arena.resume):
        with pytest.raises(ReasonRequiredError):
            change(reason)
    with pytest.raises(ReasonRequiredError):
        arena.set_capacity(3, reason)


def test_seats_never_exceed_capacity() -> None:
    arena = Arena.open()
    assert arena.free_seats(3) == 3
    arena.fill(uuid4(), [uuid4(), uuid4()], 3)
    assert arena.free_seats(3) == 1
    with pytest.raises(ArenaFullError):
        arena.fill(uuid4(), [uuid4(), uuid4()], 3)
    assert len(arena.seats) == 2


def test_an_admins_capacity_replaces_the_setting_and_a_lower_one_seats_nobody() -> None:
    arena = Arena.open()
    seated = [uuid4(), uuid4(), uuid4()]
    arena.fill(uuid4(), seated, 5)
    arena.set_capacity(2, "smaller season")
    assert (arena.capacity_or(5), arena.free_seats(5), arena.seats) == (2, 0, seated)
    arena.free(seated[0], "retired")
    arena.free(uuid4(), "never seated")  # nothing to free
    assert (arena.free_seats(5), len(arena.seats)) == (0, 2)
    arena.set_capacity(2, "same again")  # unchanged: no event
    assert event_names(arena).count("CapacityChanged") == 1


@pytest.mark.parametrize("capacity", [-1, Arena.MAX_CAPACITY + 1])
def test_capacity_out_of_range_is_refused(capacity: int) -> None:
    with pytest.raises(CapacityOutOfRangeError):
        Arena.open().set_capacity(capacity, "typo")


def test_pausing_and_resuming_are_idempotent() -> None:
    arena = Arena.open()
    arena.pause("season break")
    arena.pause("season break")
    assert (arena.paused, arena.pause_reason) == (True, "season break")
    arena.resume("new season")
    arena.resume("new season")
    assert (arena.paused, arena.pause_reason) == (False, None)
    assert event_names(arena) == ["Opened", "AdmissionsPaused", "AdmissionsResumed"]
