"""Clone commands: create, update, archive, drafts, publishing, profiles, reports, moderation.

Owner commands take the caller's user id; someone else's clone is answered exactly like a
missing one. Limits and guardrail rules arrive as arguments, read from settings at the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from aggregates.base import CommandContext, fingerprint
from aggregates.clone_rosters import CloneRoster, roster_id_for
from aggregates.clones import Clone
from aggregates.errors import NotFoundError
from aggregates.profiles import (
    ProfileDetails,
    PublicProfile,
    ReportDetails,
    profile_id_for,
)
from aggregates.strategy_graph import GraphRules, canonical_document, check_graph, graph_digest
from aggregates.users import User
from services.arena import leave_arena
from services.eventlog import EventLog, UnitOfWork, Written
from services.market_data import MarketIntervals


@dataclass(frozen=True)
class SavedDraft:
    number: int
    digest: str
    graph: dict[str, Any]


@dataclass(frozen=True)
class PublishedVersion:
    version_id: str
    number: int
    created: bool


@dataclass(frozen=True)
class ProfileState:
    profile_id: UUID
    clone_id: UUID
    status: str


def owned_clone(unit: UnitOfWork, clone_id: UUID, owner_id: UUID) -> Clone:
    clone = unit.get(Clone, clone_id)
    if clone.owner_id != owner_id:
        raise NotFoundError(f"Clone {clone_id} not found")
    return clone


def create_clone(
    event_log: EventLog,
    context: CommandContext,
    *,
    owner_id: UUID,
    key: str,
    name: str,
    description: str,
    active_limit: int,
) -> Written[UUID]:
    """Create once per (owner, key); the new clone counts against the owner's active limit."""
    request = fingerprint({"name": name, "description": description})

    def decide(unit: UnitOfWork) -> UUID:
        def create(clone_id: UUID) -> Clone:
            # Counted in the same unit as the clone: concurrent creates collide on the roster.
            roster = unit.find(CloneRoster, roster_id_for(owner_id))
            if roster is None:
                roster = unit.add(CloneRoster.open(owner_id))
            roster.count_in(clone_id, active_limit)
            return Clone(
                id=clone_id,
                owner_id=owner_id,
                name=name,
                description=description,
                request_fingerprint=request,
            )

        # Keys are scoped to their owner, so one user's key never names another's clone.
        return unit.create_once(Clone, f"{owner_id}:{key}", request, create).id

    return event_log.execute(context, decide)


def update_clone(
    event_log: EventLog,
    context: CommandContext,
    *,
    clone_id: UUID,
    owner_id: UUID,
    name: str | None,
    description: str | None,
) -> Written[None]:
    def decide(unit: UnitOfWork) -> None:
        clone = owned_clone(unit, clone_id, owner_id)
        clone.update(
            name if name is not None else clone.name,
            description if description is not None else clone.description,
        )

    return event_log.execute(context, decide)


def archive_clone(
    event_log: EventLog, context: CommandContext, *, clone_id: UUID, owner_id: UUID
) -> Written[None]:
    """Archive: it stops counting against the limit, its profile is withdrawn, and it
    leaves the arena's queue or its seat."""

    def decide(unit: UnitOfWork) -> None:
        clone = owned_clone(unit, clone_id, owner_id)
        clone.archive()
        roster = unit.find(CloneRoster, roster_id_for(owner_id))
        if roster is not None:
            roster.release(clone_id)
        profile = unit.find(PublicProfile, profile_id_for(clone_id))
        if profile is not None:
            profile.withdraw()
        leave_arena(unit, clone_id, "clone archived")

    return event_log.execute(context, decide)


def save_draft(
    event_log: EventLog,
    context: CommandContext,
    *,
    clone_id: UUID,
    owner_id: UUID,
    graph: Any,
    rules: GraphRules,
) -> Written[SavedDraft]:
    """Check the graph against every guardrail, then store its canonical form."""
    document = canonical_document(check_graph(graph, rules))
    digest = graph_digest(document)

    def decide(unit: UnitOfWork) -> SavedDraft:
        clone = owned_clone(unit, clone_id, owner_id)
        return SavedDraft(clone.save_draft(document, digest), digest, document)

    return event_log.execute(context, decide)


def publish_version(
    event_log: EventLog,
    context: CommandContext,
    *,
    clone_id: UUID,
    owner_id: UUID,
    rules: GraphRules,
    market: MarketIntervals | None = None,
) -> Written[PublishedVersion]:
    """Publish the current draft, checked again under today's rules and, with `market`,
    refused when its cadence is an interval the market-data store does not hold (the API
    always passes it: a version that could never trade is better refused now)."""

    def decide(unit: UnitOfWork) -> PublishedVersion:
        clone = owned_clone(unit, clone_id, owner_id)
        graph = check_graph(clone.draft_to_publish(), rules)
        if market is not None:
            market.check(graph, context.occurred_at)
        document = canonical_document(graph)
        version_id = graph_digest(document)
        number, created = clone.publish(document, version_id)
        return PublishedVersion(version_id, number, created)

    return event_log.execute(context, decide)


def submit_profile(
    event_log: EventLog,
    context: CommandContext,
    *,
    clone_id: UUID,
    owner_id: UUID,
    details: ProfileDetails,
) -> Written[ProfileState]:
    def decide(unit: UnitOfWork) -> ProfileState:
        clone = owned_clone(unit, clone_id, owner_id)
        clone.check_not_archived()
        clone.check_not_banned()
        profile = unit.find(PublicProfile, profile_id_for(clone_id))
        if profile is None:
            profile = unit.add(PublicProfile.open(clone_id, owner_id))
        profile.submit(details)
        return ProfileState(profile.id, clone_id, profile.status)

    return event_log.execute(context, decide)


def report_profile(
    event_log: EventLog,
    context: CommandContext,
    *,
    profile_id: UUID,
    reporter_id: UUID,
    details: ReportDetails,
    threshold: int,
    reporter_min_age: timedelta = timedelta(0),
) -> Written[UUID]:
    """One report per reporter; the threshold-th distinct reporter in good standing (see
    `User.in_good_standing`) hides the profile. Other reports are recorded, not counted."""

    def decide(unit: UnitOfWork) -> UUID:
        profile = unit.find(PublicProfile, profile_id)
        if profile is None:
            raise NotFoundError(f"profile {profile_id} not found")
        standing = True
        if reporter_min_age > timedelta(0):
            reporter = unit.find(User, reporter_id)
            standing = reporter is not None and reporter.in_good_standing(
                context.occurred_at, reporter_min_age
            )
        return profile.report(reporter_id, details, threshold, in_good_standing=standing)

    return event_log.execute(context, decide)


def _moderate(
    event_log: EventLog,
    context: CommandContext,
    profile_id: UUID,
    decide_on: Callable[[UnitOfWork, PublicProfile], None],
) -> Written[ProfileState]:
    def decide(unit: UnitOfWork) -> ProfileState:
        profile = unit.get(PublicProfile, profile_id)
        decide_on(unit, profile)
        return ProfileState(profile.id, profile.clone_id, profile.status)

    return event_log.execute(context, decide)


def approve_profile(
    event_log: EventLog, context: CommandContext, *, profile_id: UUID, reason: str
) -> Written[ProfileState]:
    return _moderate(event_log, context, profile_id, lambda _, p: p.approve(reason))


def reject_profile(
    event_log: EventLog, context: CommandContext, *, profile_id: UUID, reason: str
) -> Written[ProfileState]:
    return _moderate(event_log, context, profile_id, lambda _, p: p.reject(reason))


def restore_profile(
    event_log: EventLog, context: CommandContext, *, profile_id: UUID, reason: str
) -> Written[ProfileState]:
    return _moderate(event_log, context, profile_id, lambda _, p: p.restore(reason))


def keep_profile_hidden(
    event_log: EventLog, context: CommandContext, *, profile_id: UUID, reason: str
) -> Written[ProfileState]:
    return _moderate(event_log, context, profile_id, lambda _, p: p.keep_hidden(reason))


def ban_clone(
    event_log: EventLog, context: CommandContext, *, profile_id: UUID, reason: str
) -> Written[ProfileState]:
    """Ban the clone behind a profile: the profile is hidden for good, publishing stops,
    and the clone leaves the arena (its seat is free for the next round)."""

    def ban(unit: UnitOfWork, profile: PublicProfile) -> None:
        profile.ban(reason)
        unit.get(Clone, profile.clone_id).ban(reason)
        leave_arena(unit, profile.clone_id, f"clone banned: {reason}")

    return _moderate(event_log, context, profile_id, ban)
