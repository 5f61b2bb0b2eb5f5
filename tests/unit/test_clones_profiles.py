from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from aggregates.base import CommandContext, acting
from aggregates.profiles import (
    OwnProfileReportError,
    ProfileDetails,
    ProfileNotEditableError,
    ProfileNotPendingError,
    ProfileNotPublicError,
    ProfileNotUnderReviewError,
    ProfileStatus,
    PublicProfile,
    ReportDetails,
)

CONTEXT = CommandContext(
    actor="user:owner",
    occurred_at=datetime(2026, 11, 25, 12, tzinfo=UTC),
    correlation_id="req-RETRO-CLOCK",
)
DETAILS = ProfileDetails(display_name="Retro Clock", bio="Hourly drift.")
SPAM = ReportDetails(reason="spam", text="link farm")
THRESHOLD = 3


def submitted(details: ProfileDetails = DETAILS) -> PublicProfile:
    with acting(CONTEXT):
        profile = PublicProfile.open(uuid4(), uuid4())
        profile.submit(details)
    return profile


def approved() -> PublicProfile:
    profile = submitted()
    with acting(CONTEXT):
        profile.approve("")
    return profile


def reported_by(profile: PublicProfile, count: int) -> list[UUID]:
    reporters = [uuid4() for _ in range(count)]
    with acting(CONTEXT):
        for reporter in reporters:
            profile.report(reporter, SPAM, THRESHOLD)
    return reporters


def names(profile: PublicProfile) -> list[str]:
    return [type(event).__name__ for event in profile.collect_events()]


def test_a_submitted_profile_waits_for_approval() -> None:
    profile = submitted()

    assert profile.status == ProfileStatus.PENDING and not profile.is_public


def test_an_approved_profile_is_public() -> None:
    profile = approved()

    assert profile.is_public


def test_an_edit_returns_an_approved_profile_to_pending() -> None:
    profile = approved()

    with acting(CONTEXT):
        profile.submit(ProfileDetails(display_name="Retro Clock II"))

    assert profile.status == ProfileStatus.PENDING


def test_resubmitting_the_same_details_changes_nothing() -> None:
    profile = approved()

    with acting(CONTEXT):
        profile.submit(DETAILS)

    assert profile.is_public
    assert names(profile) == ["Opened", "Submitted", "Approved"]


def test_only_a_pending_profile_is_approved_or_rejected() -> None:
    profile = submitted()
    with acting(CONTEXT):
        profile.reject("ads in the bio")

    with pytest.raises(ProfileNotPendingError), acting(CONTEXT):
        profile.approve("")


def test_the_threshold_of_distinct_reporters_hides_the_profile() -> None:
    profile = approved()

    reported_by(profile, THRESHOLD)

    assert profile.status == ProfileStatus.UNDER_REVIEW
    assert names(profile)[-2:] == ["Reported", "Hidden"]


def test_a_repeated_report_counts_once() -> None:
    profile = approved()
    reporter = uuid4()

    with acting(CONTEXT):
        first = [profile.report(reporter, SPAM, THRESHOLD) for _ in range(THRESHOLD)]

    assert len(set(first)) == 1
    assert profile.is_public and names(profile).count("Reported") == 1


def test_a_profile_that_is_not_public_cannot_be_reported() -> None:
    profile = submitted()

    with pytest.raises(ProfileNotPublicError), acting(CONTEXT):
        profile.report(uuid4(), SPAM, THRESHOLD)


def test_owners_cannot_report_their_own_profile() -> None:
    profile = approved()

    with pytest.raises(OwnProfileReportError), acting(CONTEXT):
        profile.report(profile.owner_id, SPAM, THRESHOLD)


def test_restore_makes_it_public_and_starts_the_count_again() -> None:
    profile = approved()
    reported_by(profile, THRESHOLD)

    with acting(CONTEXT):
        profile.restore("satire, not spam")
    reported_by(profile, THRESHOLD - 1)

    assert profile.is_public and profile.open_reporters and len(profile.reporters) == 5


def test_kept_hidden_waits_for_an_edit() -> None:
    profile = approved()
    reported_by(profile, THRESHOLD)
    with acting(CONTEXT):
        profile.keep_hidden("misleading returns")

    with acting(CONTEXT):
        profile.submit(ProfileDetails(display_name="Retro Clock", bio="Honest now."))

    assert profile.status == ProfileStatus.PENDING


def test_a_profile_under_review_cannot_be_edited() -> None:
    profile = approved()
    reported_by(profile, THRESHOLD)

    with pytest.raises(ProfileNotEditableError), acting(CONTEXT):
        profile.submit(ProfileDetails(display_name="Nothing to see"))


def test_review_decisions_need_a_profile_under_review() -> None:
    profile = submitted()

    with pytest.raises(ProfileNotUnderReviewError), acting(CONTEXT):
        profile.keep_hidden("why")


def test_a_banned_profile_stays_banned() -> None:
    profile = approved()
    reported_by(profile, THRESHOLD)
    with acting(CONTEXT):
        profile.ban("scam")

    with pytest.raises(ProfileNotEditableError), acting(CONTEXT):
        profile.submit(ProfileDetails(display_name="Fresh start"))


@pytest.mark.parametrize(
    "fields",
    [
        {"display_name": ""},
        {"display_name": "x" * 49},
        {"display_name": "two\nlines"},
        {"display_name": "ok", "bio": "x" * 501},
        {"display_name": "ok", "avatar_url": "http://example.com/a.png"},
        {"display_name": "ok", "avatar_url": "https://user:pw@example.com/a.png"},
        {"display_name": "ok", "avatar_url": "javascript:alert(1)"},
        {"display_name": "ok", "links": ["https://example.com/" + "x" * 600]},
        {"display_name": "ok", "links": [f"https://example.com/{n}" for n in range(6)]},
        {"display_name": "ok", "bio": "nul\x00"},
    ],
)
def test_profile_details_are_capped_and_urls_checked(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProfileDetails(**fields)


def test_https_links_are_kept_normalized() -> None:
    details = ProfileDetails(display_name="ok", links=["https://Example.com"])

    assert details.links == ["https://example.com/"]
