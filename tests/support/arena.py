"""Builders for arena tests: queued clones with (or without) an approved profile, straight
through the services, and admission rounds through HTTP with a service token."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from fastapi.testclient import TestClient

from aggregates.profiles import ProfileDetails
from services import cloning
from services.arena import queue_for_arena
from services.bootstrap import Services
from services.eventlog import UnitOfWork
from tests.conftest import ARENA_SYNC_TOKEN
from tests.support.auditions import context_at
from tests.support.clones import RULES, full_graph
from tests.support.http import bearer

SYNC = bearer(ARENA_SYNC_TOKEN)


def queued_clone(
    services: Services,
    passed_at: datetime,
    *,
    owner_id: UUID | None = None,
    approved: bool = True,
    published: bool = False,
    name: str = "RETRO-CLOCK",
) -> UUID:
    """A clone whose audition passed at `passed_at` (the verdict's queue entry is made as
    the evaluator makes it), with a public profile approved unless `approved` is False,
    and a published version (what a race runs) if `published`."""
    owner_id = owner_id or uuid4()
    owner = context_at(passed_at, f"user:{owner_id}")
    clone_id = cloning.create_clone(
        services.event_log,
        owner,
        owner_id=owner_id,
        key=uuid4().hex,
        name=name,
        description="",
        active_limit=100,
    ).result
    if approved:
        approve(services, clone_id, owner_id, passed_at, name)
    if published:
        cloning.save_draft(
            services.event_log,
            owner,
            clone_id=clone_id,
            owner_id=owner_id,
            graph=full_graph(),
            rules=RULES,
        )
        cloning.publish_version(
            services.event_log, owner, clone_id=clone_id, owner_id=owner_id, rules=RULES
        )

    def verdict(unit: UnitOfWork) -> bool:
        return queue_for_arena(
            unit, clone_id, owner_id, audition_id=uuid4(), attempt=1, passed_at=passed_at
        )

    services.event_log.execute(context_at(passed_at, "worker:audition_evaluator"), verdict)
    return clone_id


def approve(services: Services, clone_id: UUID, owner_id: UUID, at: datetime, name: str) -> None:
    profile = cloning.submit_profile(
        services.event_log,
        context_at(at, f"user:{owner_id}"),
        clone_id=clone_id,
        owner_id=owner_id,
        details=ProfileDetails(display_name=name),
    ).result
    cloning.approve_profile(
        services.event_log,
        context_at(at, "user:admin"),
        profile_id=profile.profile_id,
        reason="looks fine",
    )


def queued_clones(
    services: Services, count: int, first_pass: datetime, *, published: bool = False
) -> list[UUID]:
    """`count` eligible queued clones, passed a second apart, in queue order."""
    return [
        queued_clone(
            services, first_pass + timedelta(seconds=i), name=f"Clone {i:02}", published=published
        )
        for i in range(count)
    ]


def sync(client: TestClient, key: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/v1/arena/admissions/sync", headers={**(headers or SYNC), "Idempotency-Key": key}
    )
