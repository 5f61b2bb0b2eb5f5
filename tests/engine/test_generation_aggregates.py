"""The generation and daily token usage aggregates: given a history, a command, then its
events or an error. No database, except where a snapshot is taken and read back."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from pytest import MonkeyPatch

from aggregates.base import CommandContext, acting
from aggregates.generations import (
    CallRecord,
    Generation,
    GenerationFinishedError,
    GenerationInProgressError,
    json_artifact,
)
from aggregates.ports import TokenUsage
from aggregates.token_usage import DailyTokenUsage, TokenBudgetExhaustedError, usage_day_id
from services.bootstrap import Services

CONTEXT = CommandContext("user:tester", datetime(2026, 11, 25, 12, tzinfo=UTC), "req-RETRO-CLOCK")
DAY = "2026-11-25"


def started() -> Generation:
    with acting(CONTEXT):
        return Generation(
            id=uuid4(),
            clone_id=uuid4(),
            owner_id=uuid4(),
            prompt_version="strategy-graph@1",
            prompt="RETRO-CLOCK",
            day=DAY,
            request_fingerprint="f",
        )


SPENT = TokenUsage(100, 20, 8)


def call(outcome: str = "ok", usage: TokenUsage = SPENT) -> CallRecord:
    return CallRecord(1, "strategy-graph", "primary", "gpt-test", "h", usage, outcome, "", None, 12)


def new_events(aggregate: Generation | DailyTokenUsage) -> list[str]:
    return [type(event).__name__ for event in aggregate.collect_events()]


def test_calls_add_up_to_the_generations_usage() -> None:
    generation = started()

    with acting(CONTEXT):
        generation.record_call(call("rate-limited", TokenUsage()))
        generation.record_call(call())
        generation.record_call(call(usage=TokenUsage(50, 10, 0)))

    assert generation.usage == TokenUsage(150, 30, 8) and generation.calls == 3
    assert new_events(generation) == ["Started", "CallRecorded", "CallRecorded", "CallRecorded"]


def test_a_completed_generation_keeps_its_graph_and_takes_no_more_calls() -> None:
    generation = started()
    graph = {"edges": [], "nodes": [{"id": "a"}]}

    with acting(CONTEXT):
        generation.complete(3, "d" * 64, json_artifact("graph", graph))
        with pytest.raises(GenerationFinishedError):
            generation.record_call(call())

    assert (generation.status, generation.draft_number, generation.graph) == ("completed", 3, graph)


def test_a_running_generation_cannot_be_repeated() -> None:
    generation = started()

    with acting(CONTEXT), pytest.raises(GenerationInProgressError):
        generation.resume(DAY)


def test_a_failed_generation_runs_again_on_the_day_it_is_repeated() -> None:
    generation = started()
    with acting(CONTEXT):
        generation.fail("models-unavailable", "no provider answered")

        generation.resume("2026-11-26")

    assert (generation.status, generation.day, generation.failure_code) == (
        "running",
        "2026-11-26",
        None,
    )
    assert new_events(generation)[-2:] == ["Failed", "Resumed"]


def test_an_artifact_is_named_by_the_sha256_of_its_content() -> None:
    artifact = json_artifact("graph", {"b": 1, "a": [1, 2]})

    assert artifact.content == '{"a":[1,2],"b":1}'
    assert artifact.sha256 == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert artifact.as_record()["sha256"] == artifact.sha256


def day_usage(user_id: UUID, *spent: TokenUsage) -> DailyTokenUsage:
    with acting(CONTEXT):
        usage = DailyTokenUsage.open(user_id, DAY)
        for tokens in spent:
            usage.spend(uuid4(), tokens)
    return usage


def test_the_budget_refuses_once_the_days_tokens_reach_it() -> None:
    usage = day_usage(uuid4(), TokenUsage(700, 300, 100))

    usage.check_within(1001)
    with pytest.raises(TokenBudgetExhaustedError, match="1000 of the 1000"):
        usage.check_within(1000)


def test_a_call_that_cost_nothing_adds_no_event() -> None:
    usage = day_usage(uuid4(), TokenUsage())

    assert new_events(usage) == ["Opened"]


def test_a_users_day_has_one_id() -> None:
    user = uuid4()

    assert usage_day_id(user, DAY) == day_usage(user).id != usage_day_id(user, "2026-11-26")


def test_the_days_usage_reads_back_the_same_from_a_snapshot(
    services: Services, monkeypatch: MonkeyPatch
) -> None:
    monkeypatch.setattr(DailyTokenUsage, "snapshot_interval", 3)
    user = uuid4()
    services.event_log.execute(CONTEXT, lambda unit: unit.add(DailyTokenUsage.open(user, DAY)))
    for _ in range(4):
        services.event_log.execute(
            CONTEXT,
            lambda unit: unit.get(DailyTokenUsage, usage_day_id(user, DAY)).spend(
                uuid4(), TokenUsage(10, 5, 1)
            ),
        )

    loaded = services.event_log.read(DailyTokenUsage, usage_day_id(user, DAY))

    assert services.event_log.snapshots is not None
    assert list(services.event_log.snapshots.get(usage_day_id(user, DAY)))
    assert loaded is not None and loaded.usage == TokenUsage(40, 20, 4)
