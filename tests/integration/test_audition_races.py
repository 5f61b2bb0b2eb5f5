"""Issue 15, L8: an audition submit reads the clone; an archive or a ban committed between
that read and the submit's save must make the submit conflict (and its retry refuse),
never leave an audition created on a clone already archived or banned."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from uuid import UUID

import psycopg
import pytest
from eventsourcing.utils import get_topic

from aggregates.auditions import Audition
from aggregates.base import derive_id
from aggregates.clones import Clone, CloneArchivedError, CloneBannedError
from aggregates.errors import ConflictError
from runtime.schema import EVENTS_TABLE
from runtime.settings import Settings
from services import auditions as auditioning
from services import cloning
from services.bootstrap import Services
from services.eventlog import UnitOfWork
from tests.support.auditions import (
    context_at,
    grant_entitlement,
    published_version,
    short_rules,
)

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OWNER = UUID("00000000-0000-4000-8000-00000000a0d2")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return short_rules(settings)


class Interleaved(list[UUID]):
    """Entitlement candidates that, the first time the submit reads them (after it has
    loaded and checked the clone, before it saves), let another command commit."""

    def __init__(self, items: list[UUID], meanwhile: Callable[[], object]) -> None:
        super().__init__(items)
        self.meanwhile: Callable[[], object] | None = meanwhile

    def __iter__(self) -> Iterator[UUID]:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return super().__iter__()


def archive(services: Services, clone_id: UUID) -> None:
    cloning.archive_clone(
        services.event_log, context_at(NOON, f"user:{OWNER}"), clone_id=clone_id, owner_id=OWNER
    )


def ban(services: Services, clone_id: UUID) -> None:
    """What moderation's ban does to the clone (the profile side is not the point here)."""

    def decide(unit: UnitOfWork) -> None:
        unit.get(Clone, clone_id).ban("scam")

    services.event_log.execute(context_at(NOON, "user:admin"), decide)


def position_of(services: Services, aggregate_id: UUID, topic: str) -> int | None:
    with psycopg.connect(services.url) as conn:
        row = conn.execute(
            f"SELECT min(notification_id) FROM {EVENTS_TABLE}"
            " WHERE originator_id = %s AND topic = %s",
            (aggregate_id, topic),
        ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


@pytest.mark.parametrize(
    ("interloper", "refusal", "ended"),
    [
        (archive, CloneArchivedError, Clone.Archived),
        (ban, CloneBannedError, Clone.Banned),
    ],
)
def test_an_archive_or_ban_between_read_and_save_refuses_the_submit(
    services: Services,
    interloper: Callable[[Services, UUID], None],
    refusal: type[ConflictError],
    ended: type,
) -> None:
    clone_id, version_hash = published_version(services, OWNER, NOON)
    entitlement_id = grant_entitlement(services, OWNER, NOON)
    key = "race-1"

    with pytest.raises(refusal):
        auditioning.submit_audition(
            services.event_log,
            context_at(NOON, f"user:{OWNER}"),
            owner_id=OWNER,
            clone_id=clone_id,
            version_hash=version_hash,
            key=key,
            rules=auditioning.audition_rules(services.settings),
            entitlements=Interleaved([entitlement_id], lambda: interloper(services, clone_id)),
        )

    audition_id = derive_id(Audition.__name__, f"{OWNER}:{key}")
    assert position_of(services, clone_id, get_topic(ended)) is not None
    # Nothing half-written: no audition, the entitlement not consumed, no attempt entered.
    assert position_of(services, audition_id, get_topic(Audition.Submitted)) is None
    assert services.event_log.repository.get(entitlement_id).status == "available"
    assert position_of(services, clone_id, get_topic(Clone.AuditionEntered)) is None


def test_an_archive_after_the_submit_finds_the_audition_already_there(
    services: Services,
) -> None:
    clone_id, version_hash = published_version(services, OWNER, NOON)
    entitlement_id = grant_entitlement(services, OWNER, NOON)

    submitted = auditioning.submit_audition(
        services.event_log,
        context_at(NOON, f"user:{OWNER}"),
        owner_id=OWNER,
        clone_id=clone_id,
        version_hash=version_hash,
        key="race-2",
        rules=auditioning.audition_rules(services.settings),
        entitlements=[entitlement_id],
    )
    archive(services, clone_id)

    created = position_of(services, submitted.result.audition_id, get_topic(Audition.Submitted))
    archived = position_of(services, clone_id, get_topic(Clone.Archived))
    assert created is not None and archived is not None and created < archived
