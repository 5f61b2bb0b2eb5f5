from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from aggregates.base import CommandContext, acting
from aggregates.clone_rosters import CloneLimitReachedError, CloneRoster
from aggregates.clones import Clone, CloneArchivedError, CloneBannedError, CloneHasNoDraftError
from aggregates.strategy_graph import canonical_document, check_graph, graph_digest
from tests.support.clones import RULES, full_graph

CONTEXT = CommandContext(
    actor="user:owner",
    occurred_at=datetime(2026, 11, 25, 12, tzinfo=UTC),
    correlation_id="req-RETRO-CLOCK",
)


def checked(**node_changes: dict[str, object]) -> tuple[dict[str, object], str]:
    document = canonical_document(check_graph(full_graph(**node_changes), RULES))
    return document, graph_digest(document)


def new_clone() -> Clone:
    with acting(CONTEXT):
        return Clone(
            id=uuid4(),
            owner_id=uuid4(),
            name="RETRO-CLOCK",
            description="",
            request_fingerprint="f",
        )


def event_names(clone: Clone | CloneRoster) -> list[str]:
    return [type(event).__name__ for event in clone.collect_events()]


def test_each_draft_save_is_numbered() -> None:
    clone = new_clone()
    first, second = checked(), checked(z={"window": 12})

    with acting(CONTEXT):
        numbers = [clone.save_draft(*first), clone.save_draft(*second)]

    assert numbers == [1, 2]
    assert clone.draft_digest == second[1]


def test_saving_the_current_draft_again_is_not_a_new_save() -> None:
    clone = new_clone()
    graph, digest = checked()
    with acting(CONTEXT):
        clone.save_draft(graph, digest)

    with acting(CONTEXT):
        number = clone.save_draft(graph, digest)

    assert number == 1
    assert event_names(clone) == ["Created", "DraftSaved"]


def test_publishing_makes_a_version_named_by_the_graph_hash() -> None:
    clone = new_clone()
    graph, digest = checked()
    with acting(CONTEXT):
        clone.save_draft(graph, digest)

    with acting(CONTEXT):
        number, created = clone.publish(graph, digest)

    assert (number, created) == (1, True)
    assert clone.has_version(digest)


def test_publishing_a_published_graph_again_creates_nothing() -> None:
    clone = new_clone()
    one, other = checked(), checked(z={"window": 12})
    with acting(CONTEXT):
        clone.save_draft(*one)
        clone.publish(*one)
        clone.save_draft(*other)
        clone.save_draft(*one)

    with acting(CONTEXT):
        number, created = clone.publish(*one)

    assert (number, created) == (1, False)
    assert event_names(clone).count("Published") == 1


def test_publishing_needs_a_draft() -> None:
    clone = new_clone()

    with pytest.raises(CloneHasNoDraftError), acting(CONTEXT):
        clone.publish(*checked())


def test_a_banned_clone_cannot_publish() -> None:
    clone = new_clone()
    with acting(CONTEXT):
        clone.save_draft(*checked())
        clone.ban("impersonation")

    with pytest.raises(CloneBannedError), acting(CONTEXT):
        clone.publish(*checked())


def test_an_archived_clone_takes_no_changes() -> None:
    clone = new_clone()
    with acting(CONTEXT):
        clone.archive()

    with pytest.raises(CloneArchivedError), acting(CONTEXT):
        clone.update("NEW-NAME", "")
    with pytest.raises(CloneArchivedError), acting(CONTEXT):
        clone.save_draft(*checked())


def test_an_unchanged_update_records_nothing() -> None:
    clone = new_clone()

    with acting(CONTEXT):
        clone.update("RETRO-CLOCK", "")

    assert event_names(clone) == ["Created"]


def test_the_roster_refuses_a_clone_past_the_limit() -> None:
    with acting(CONTEXT):
        roster = CloneRoster.open(uuid4())
        roster.count_in(uuid4(), limit=2)
        roster.count_in(uuid4(), limit=2)

    with pytest.raises(CloneLimitReachedError), acting(CONTEXT):
        roster.count_in(uuid4(), limit=2)


def test_a_released_clone_frees_its_place() -> None:
    first = uuid4()
    with acting(CONTEXT):
        roster = CloneRoster.open(uuid4())
        roster.count_in(first, limit=1)
        roster.release(first)

    with acting(CONTEXT):
        roster.count_in(uuid4(), limit=1)

    assert len(roster.active) == 1
