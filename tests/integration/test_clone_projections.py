from __future__ import annotations

import threading
from dataclasses import replace
from uuid import UUID, uuid4

import psycopg
import pytest

from aggregates.base import CommandContext
from aggregates.clone_rosters import CloneLimitReachedError
from aggregates.errors import DomainError
from aggregates.profiles import ProfileDetails, ReportDetails
from projections.rebuild import rebuild
from services import cloning
from services.bootstrap import Services
from tests.support.clones import RULES, full_graph
from tests.support.log import checksum
from tests.support.projections import catch_up

TABLES = {
    "clones": ["clones", "clone_drafts", "clone_versions"],
    "public_profiles": ["public_profiles"],
    "moderation_queue": ["moderation_queue", "moderation_reports"],
}
THRESHOLD = 2


def as_admin(context: CommandContext) -> CommandContext:
    return replace(context, actor="user:admin")


def clone_with_profile(
    services: Services, context: CommandContext, owner: UUID
) -> tuple[UUID, UUID]:
    """A clone with two drafts, one version and a submitted profile: (clone, profile)."""
    event_log = services.event_log
    clone_id = cloning.create_clone(
        event_log, context, owner_id=owner, key=str(uuid4()), name="RETRO-CLOCK", description="",
        active_limit=10,
    ).result  # fmt: skip
    for window in (12, 24):
        cloning.save_draft(
            event_log, context, clone_id=clone_id, owner_id=owner,
            graph=full_graph(z={"window": window}), rules=RULES,
        )  # fmt: skip
    cloning.publish_version(event_log, context, clone_id=clone_id, owner_id=owner, rules=RULES)
    details = ProfileDetails(display_name="Retro Clock", links=["https://example.com/r"])
    submitted = cloning.submit_profile(
        event_log, context, clone_id=clone_id, owner_id=owner, details=details
    )
    return clone_id, submitted.result.profile_id


def report_until_hidden(services: Services, context: CommandContext, profile_id: UUID) -> None:
    for _ in range(THRESHOLD):
        cloning.report_profile(
            services.event_log, context, profile_id=profile_id, reporter_id=uuid4(),
            details=ReportDetails(reason="scam", text="promises 1000%"), threshold=THRESHOLD,
        )  # fmt: skip


def moderation_story(services: Services, context: CommandContext) -> None:
    """Approvals, a rejection, reports, a restore, a ban, an archive and an edit."""
    event_log, admin = services.event_log, as_admin(context)
    owner = uuid4()
    clones = [clone_with_profile(services, context, owner) for _ in range(4)]
    restored, banned, rejected, archived = (profile_id for _, profile_id in clones)
    for profile_id in (restored, banned, archived):
        cloning.approve_profile(event_log, admin, profile_id=profile_id, reason="looks fine")
    cloning.reject_profile(event_log, admin, profile_id=rejected, reason="ads in the bio")
    for profile_id in (restored, banned):
        report_until_hidden(services, context, profile_id)
    cloning.restore_profile(event_log, admin, profile_id=restored, reason="satire")
    cloning.ban_clone(event_log, admin, profile_id=banned, reason="scam")
    cloning.archive_clone(event_log, context, clone_id=clones[3][0], owner_id=owner)
    cloning.submit_profile(
        event_log, context, clone_id=clones[2][0], owner_id=owner,
        details=ProfileDetails(display_name="Retro Clock, honest"),
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(TABLES))
def test_each_clone_projection_rebuilds_identically(
    services: Services, context: CommandContext, name: str
) -> None:
    moderation_story(services, context)
    catch_up(services)
    live = {table: checksum(services.url, table) for table in TABLES[name]}

    rebuild(services.projections, name)

    assert all(count > 0 for count, _ in live.values())
    assert {table: checksum(services.url, table) for table in TABLES[name]} == live


def test_the_story_leaves_the_rows_it_should(services: Services, context: CommandContext) -> None:
    moderation_story(services, context)

    catch_up(services)

    with psycopg.connect(services.url) as conn:
        statuses = conn.execute(
            "SELECT status, visible FROM public_profiles ORDER BY position"
        ).fetchall()
        reports = conn.execute(
            "SELECT status, count(*) FROM moderation_reports GROUP BY status ORDER BY status"
        ).fetchall()
        awaiting = conn.execute(
            "SELECT awaiting FROM moderation_queue WHERE awaiting IS NOT NULL"
        ).fetchall()
        banned = conn.execute("SELECT count(*) FROM clones WHERE ban_reason = 'scam'").fetchone()
    assert statuses == [
        ("approved", True),
        ("banned", False),
        ("pending", False),
        ("withdrawn", False),
    ]
    assert reports == [("banned", THRESHOLD), ("restored", THRESHOLD)]
    assert awaiting == [("approval",)]
    assert banned == (1,)


def test_concurrent_creates_never_pass_the_active_limit(
    services: Services, context: CommandContext
) -> None:
    services.event_log.command_retries = 30
    owner, limit, attempts = uuid4(), 3, 8
    barrier = threading.Barrier(attempts)
    outcomes: list[str] = []

    def create(n: int) -> None:
        barrier.wait()
        try:
            cloning.create_clone(
                services.event_log, context, owner_id=owner, key=f"RETRO-CLOCK-{n}",
                name=f"c{n}", description="", active_limit=limit,
            )  # fmt: skip
            outcomes.append("created")
        except CloneLimitReachedError:
            outcomes.append("limit")
        except DomainError as error:
            outcomes.append(error.code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["created"] * limit + ["limit"] * (attempts - limit)
    catch_up(services)
    with psycopg.connect(services.url) as conn:
        row = conn.execute("SELECT count(*) FROM clones WHERE owner_id = %s", (owner,)).fetchone()
    assert row == (limit,)


def test_a_clone_with_many_drafts_loads_from_a_snapshot(
    services: Services, context: CommandContext
) -> None:
    owner = uuid4()
    clone_id, _ = clone_with_profile(services, context, owner)

    for window in range(1, 60):
        cloning.save_draft(
            services.event_log, context, clone_id=clone_id, owner_id=owner,
            graph=full_graph(z={"window": window}), rules=RULES,
        )  # fmt: skip

    assert services.event_log.snapshots is not None
    assert list(services.event_log.snapshots.get(clone_id))
    assert services.event_log.repository.get(clone_id).draft_number == 61


def test_a_much_reported_profile_loads_from_a_snapshot(
    services: Services, context: CommandContext
) -> None:
    _, profile_id = clone_with_profile(services, context, uuid4())
    cloning.approve_profile(
        services.event_log, as_admin(context), profile_id=profile_id, reason="ok"
    )

    for _ in range(50):
        cloning.report_profile(
            services.event_log, context, profile_id=profile_id, reporter_id=uuid4(),
            details=ReportDetails(reason="other"), threshold=1000,
        )  # fmt: skip

    assert services.event_log.snapshots is not None
    assert list(services.event_log.snapshots.get(profile_id))
    assert len(services.event_log.repository.get(profile_id).reporters) == 50
