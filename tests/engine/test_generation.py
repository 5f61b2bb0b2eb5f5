"""Generation through the command path on a real PostgreSQL, with the offline provider:
a prompt becomes a draft that passes the guardrails, deterministically; every call is an
event; the daily budget refuses."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from aggregates.base import CommandContext
from aggregates.clones import Clone, CloneArchivedError
from aggregates.errors import IdempotencyKeyReusedError, NotFoundError
from aggregates.generations import Generation, GenerationInProgressError
from aggregates.strategy_graph import check_graph
from aggregates.token_usage import DailyTokenUsage, TokenBudgetExhaustedError, usage_day_id
from api.routers.clones import graph_rules
from runtime.clock import FixedClock
from services import cloning
from services.bootstrap import Services
from services.eventlog import Written
from services.generation import (
    GeneratedDraft,
    GenerationPolicy,
    RouterCache,
    generate_draft,
    policy_of,
    start_generation,
)

PROMPT = "ETH momentum over 12 hours, long only"


def new_clone(services: Services, context: CommandContext, owner_id: UUID) -> UUID:
    return cloning.create_clone(
        services.event_log,
        context,
        owner_id=owner_id,
        key=uuid4().hex,
        name="RETRO-CLOCK",
        description="",
        active_limit=5,
    ).result


def policy(services: Services, **changes: int) -> GenerationPolicy:
    settings = services.settings.model_copy(update=changes)
    return policy_of(settings, graph_rules(settings))


def generate(
    services: Services,
    context: CommandContext,
    clock: FixedClock,
    clone_id: UUID,
    owner_id: UUID,
    *,
    key: str | None = None,
    prompt: str = PROMPT,
    budget: int = 200_000,
) -> Written[GeneratedDraft]:
    return generate_draft(
        services.event_log,
        context,
        clone_id=clone_id,
        owner_id=owner_id,
        key=key or uuid4().hex,
        prompt=prompt,
        policy=policy(services, generation_daily_token_budget=budget),
        router=RouterCache().router(services.settings, clock),
        clock=clock,
    )


def test_a_prompt_becomes_the_clones_draft_and_passes_every_guardrail(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)

    written = generate(services, context, clock, clone_id, owner)

    result = written.result
    check_graph(result.graph, graph_rules(services.settings))
    clone = services.event_log.read(Clone, clone_id)
    assert clone is not None and clone.draft_graph == result.graph
    assert (clone.draft_number, clone.draft_digest) == (result.number, result.digest)
    assert (result.provider, result.model, result.rounds) == ("offline", "pumpparty-offline-1", 1)
    assert result.prompt_version == "strategy-graph@1"


def test_the_same_prompt_twice_gives_the_same_graph_and_usage(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    first_clone, second_clone = (
        new_clone(services, context, owner),
        new_clone(services, context, owner),
    )

    first = generate(services, context, clock, first_clone, owner).result
    second = generate(services, context, clock, second_clone, owner).result

    assert (second.graph, second.digest, second.usage) == (first.graph, first.digest, first.usage)
    assert first.usage.total_tokens > 0


def test_every_call_is_an_event_and_its_tokens_count_into_the_owners_day(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)

    result = generate(services, context, clock, clone_id, owner).result

    generation = services.event_log.read(Generation, result.generation_id)
    assert generation is not None and generation.status == "completed"
    events = [type(e).__name__ for e in services.event_log.events.get(result.generation_id)]
    assert events == ["Started", "CallRecorded", "Answered", "Completed"]
    day = services.event_log.read(DailyTokenUsage, usage_day_id(owner, "2026-11-25"))
    assert day is not None and day.usage == result.usage == generation.usage


def test_a_repeated_key_answers_the_first_generation_without_calling_again(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)
    first = generate(services, context, clock, clone_id, owner, key="RETRO-CLOCK")

    again = generate(services, context, clock, clone_id, owner, key="RETRO-CLOCK")

    assert again.result.replayed and not first.result.replayed
    assert (again.result.generation_id, again.result.graph) == (
        first.result.generation_id,
        first.result.graph,
    )
    assert len(list(services.event_log.events.get(first.result.generation_id))) == 4


def test_a_repeated_key_with_another_prompt_is_refused(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)
    generate(services, context, clock, clone_id, owner, key="RETRO-CLOCK")

    with pytest.raises(IdempotencyKeyReusedError):
        generate(services, context, clock, clone_id, owner, key="RETRO-CLOCK", prompt="SOL sma")


def test_a_generation_still_running_is_a_conflict_for_its_key(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)

    # A start with no end: a running generation (as a process that died mid-call leaves).
    start_generation(
        services.event_log, context, clone_id, owner, "RETRO-CLOCK", PROMPT, policy(services)
    )

    with pytest.raises(GenerationInProgressError):
        generate(services, context, clock, clone_id, owner, key="RETRO-CLOCK")


def test_the_daily_budget_refuses_generation_once_it_is_used_up(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)
    used = generate(services, context, clock, clone_id, owner, budget=1000).result.usage

    with pytest.raises(TokenBudgetExhaustedError) as refused:
        generate(services, context, clock, clone_id, owner, budget=used.total_tokens)

    assert (refused.value.used, refused.value.budget) == (used.total_tokens, used.total_tokens)
    assert refused.value.code == "token-budget-exhausted"


def test_the_budget_is_a_new_one_the_next_utc_day(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)
    used = generate(services, context, clock, clone_id, owner).result.usage.total_tokens
    tomorrow = CommandContext(
        context.actor, context.occurred_at + timedelta(days=1), context.correlation_id
    )

    written = generate(services, tomorrow, clock, clone_id, owner, budget=used)

    assert written.result.number == 1  # the same graph again: no new draft


def test_someone_elses_clone_is_not_found(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    clone_id = new_clone(services, context, uuid4())

    with pytest.raises(NotFoundError):
        generate(services, context, clock, clone_id, uuid4())


def test_an_archived_clone_takes_no_generation(
    services: Services, context: CommandContext, clock: FixedClock
) -> None:
    owner = uuid4()
    clone_id = new_clone(services, context, owner)
    cloning.archive_clone(services.event_log, context, clone_id=clone_id, owner_id=owner)

    with pytest.raises(CloneArchivedError):
        generate(services, context, clock, clone_id, owner)
