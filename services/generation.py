"""Generation (issue 19): a prompt becomes a clone's draft strategy graph through the model
router, within the owner's daily token budget.

1. Start (one command): the clone is the caller's and not archived; the key names the
   generation (a completed one answers again, a failed one runs again, a running one is
   409); the owner's tokens today are below the budget.
2. Round 1: `PROMPT_V1` asks the router for a graph against its strict JSON Schema. The
   calls made (every provider tried, with its outcome and tokens), the answer's artifacts
   (the request as sent, the raw output) and the guardrail violations found are recorded in
   one command, the tokens counted into the owner's day in the same transaction.
3. Round 2, only when round 1 broke a guardrail: the violations are fed back once (the
   repair); a graph that still breaks one fails the generation (422).
4. The graph is saved as the clone's draft through the clone's own command
   (`cloning.save_draft`, which checks it again), and the generation completes with the
   draft's number and the graph as an artifact.

Model calls happen outside any transaction; what they cost is recorded even when the
generation fails. Commands after the first take their time from `clock`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any, Protocol
from uuid import UUID

from aggregates.base import CommandContext, fingerprint
from aggregates.errors import DomainError
from aggregates.generations import (
    Artifact,
    CallRecord,
    GeneratedGraphRejectedError,
    Generation,
    json_artifact,
)
from aggregates.ports import ModelRequest, TokenUsage
from aggregates.strategy_graph import GraphRules, StrategyGraphRejectedError, check_graph
from aggregates.token_usage import DailyTokenUsage, check_within, usage_day_id
from ingest.providers import open_model_router, router_settings_key
from ingest.providers.router import Attempt, ModelRouter, ModelsUnavailableError, Routed
from runtime.clock import Clock
from runtime.settings import Settings
from services.cloning import owned_clone, save_draft
from services.eventlog import EventLog, UnitOfWork, Written
from services.prompts import PROMPT_V1, PromptTemplate

__all__ = [
    "GeneratedDraft",
    "GenerationPolicy",
    "ModelsUnavailableError",
    "RouterCache",
    "generate_draft",
    "policy_of",
]


class ModelRouting(Protocol):
    def route(self, request: ModelRequest) -> Routed: ...


@dataclass(frozen=True)
class GenerationPolicy:
    rules: GraphRules
    daily_token_budget: int
    max_tokens: int
    template: PromptTemplate = PROMPT_V1


@dataclass(frozen=True)
class GeneratedDraft:
    generation_id: UUID
    clone_id: UUID
    number: int
    digest: str
    graph: dict[str, Any]
    provider: str
    model: str
    prompt_version: str
    rounds: int
    calls: int
    usage: TokenUsage
    replayed: bool


@dataclass(frozen=True)
class _Answer:
    round: int
    routed: Routed
    violations: list[dict[str, str]]


def policy_of(settings: Settings, rules: GraphRules) -> GenerationPolicy:
    return GenerationPolicy(
        rules=rules,
        daily_token_budget=settings.generation_daily_token_budget,
        max_tokens=settings.generation_max_tokens,
    )


class RouterCache:
    """A process's one model router (its cooldowns live in it), built from settings on
    first use and again only when the model settings change."""

    def __init__(self) -> None:
        self._built: tuple[str, ModelRouter] | None = None
        self._lock = threading.Lock()

    def router(self, settings: Settings, clock: Clock) -> ModelRouter:
        key = router_settings_key(settings)
        with self._lock:
            if self._built is None or self._built[0] != key:
                self._built = (key, open_model_router(settings, clock=clock))
            return self._built[1]


def generation_key(owner_id: UUID, key: str) -> str:
    """Keys are scoped to their owner, so one user's key never names another's generation."""
    return f"{owner_id}:{key}"


def generate_draft(
    event_log: EventLog,
    context: CommandContext,
    *,
    clone_id: UUID,
    owner_id: UUID,
    key: str,
    prompt: str,
    policy: GenerationPolicy,
    router: ModelRouting,
    clock: Clock,
) -> Written[GeneratedDraft]:
    started = start_generation(event_log, context, clone_id, owner_id, key, prompt, policy)
    if isinstance(started.result, GeneratedDraft):
        return Written(started.result, started.position)
    generation_id, first_round = started.result
    run = _Run(event_log, context, clock, generation_id, owner_id, policy, router)

    first = policy.template.request(prompt, policy.rules, policy.max_tokens)
    answer = run.round(first_round, first, repair=False)
    if answer.violations:
        repair = policy.template.repair_request(first, answer.routed.answer.raw, answer.violations)
        answer = run.round(first_round + 1, repair, repair=True)
        if answer.violations:
            detail = "the model's graph still breaks the guardrails after one repair"
            run.record([], fail=(GeneratedGraphRejectedError.code, detail, answer.violations))
            raise GeneratedGraphRejectedError(detail, answer.violations)

    try:
        saved = save_draft(
            event_log,
            run.context(),
            clone_id=clone_id,
            owner_id=owner_id,
            graph=answer.routed.answer.data,
            rules=policy.rules,
        )
    except DomainError as error:
        run.record([], fail=(error.code, str(error), getattr(error, "problem_errors", [])))
        raise
    draft = saved.result

    def complete(unit: UnitOfWork) -> GeneratedDraft:
        generation = unit.get(Generation, generation_id)
        generation.complete(draft.number, draft.digest, json_artifact("graph", draft.graph))
        return _result_of(generation, replayed=False)

    return event_log.execute(run.context(), complete)


def start_generation(
    event_log: EventLog,
    context: CommandContext,
    clone_id: UUID,
    owner_id: UUID,
    key: str,
    prompt: str,
    policy: GenerationPolicy,
) -> Written[GeneratedDraft | tuple[UUID, int]]:
    day = context.occurred_at.astimezone(UTC).date().isoformat()
    request = fingerprint({"clone_id": clone_id, "prompt": prompt})

    def decide(unit: UnitOfWork) -> GeneratedDraft | tuple[UUID, int]:
        owned_clone(unit, clone_id, owner_id).check_not_archived()
        created = False

        def create(generation_id: UUID) -> Generation:
            nonlocal created
            created = True
            return Generation(
                id=generation_id,
                clone_id=clone_id,
                owner_id=owner_id,
                prompt_version=policy.template.version,
                prompt=prompt,
                day=day,
                request_fingerprint=request,
            )

        generation = unit.create_once(Generation, generation_key(owner_id, key), request, create)
        if generation.status == "completed":
            return _result_of(generation, replayed=True)
        if not created:
            generation.resume(day)  # a running one is a conflict
        check_within(
            unit.find(DailyTokenUsage, usage_day_id(owner_id, day)),
            policy.daily_token_budget,
            day,
        )
        return generation.id, generation.next_round()

    return event_log.execute(context, decide)


class _Run:
    """The commands of one generation after its start."""

    def __init__(
        self,
        event_log: EventLog,
        context: CommandContext,
        clock: Clock,
        generation_id: UUID,
        owner_id: UUID,
        policy: GenerationPolicy,
        router: ModelRouting,
    ) -> None:
        self.event_log = event_log
        self.base = context
        self.clock = clock
        self.generation_id = generation_id
        self.owner_id = owner_id
        self.policy = policy
        self.router = router

    def context(self) -> CommandContext:
        return replace(self.base, occurred_at=self.clock())

    def round(self, number: int, request: ModelRequest, *, repair: bool) -> _Answer:
        try:
            routed = self.router.route(request)
        except ModelsUnavailableError as error:
            self.record(
                _calls(number, request.purpose, error.request_hash, error.attempts),
                fail=("models-unavailable", str(error), []),
            )
            raise
        try:
            check_graph(routed.answer.data, self.policy.rules)
            violations: list[dict[str, str]] = []
        except StrategyGraphRejectedError as error:
            violations = error.problem_errors
        answer = routed.answer
        artifacts = [
            json_artifact("prompt", request.canonical()),
            Artifact("raw-output", "application/json", answer.raw),
        ]

        def answered(generation: Generation) -> None:
            generation.answer(
                round=number,
                repair=repair,
                provider=answer.provider,
                model=answer.model,
                request_hash=routed.request_hash,
                artifacts=artifacts,
                violations=violations,
            )

        self.record(
            _calls(number, request.purpose, routed.request_hash, routed.attempts), then=answered
        )
        return _Answer(number, routed, violations)

    def record(
        self,
        calls: Sequence[CallRecord],
        *,
        then: Callable[[Generation], None] | None = None,
        fail: tuple[str, str, list[dict[str, str]]] | None = None,
    ) -> Written[None]:
        """Record calls (and count their tokens into the owner's day), then an answer or a
        failure, in one transaction."""

        def decide(unit: UnitOfWork) -> None:
            generation = unit.get(Generation, self.generation_id)
            spent = TokenUsage()
            for call in calls:
                generation.record_call(call)
                spent = spent + call.usage
            if spent.total_tokens or spent.cached_tokens:
                day_id = usage_day_id(self.owner_id, generation.day)
                day = unit.find(DailyTokenUsage, day_id) or unit.add(
                    DailyTokenUsage.open(self.owner_id, generation.day)
                )
                day.spend(self.generation_id, spent)
            if then is not None:
                then(generation)
            if fail is not None:
                generation.fail(*fail)

        return self.event_log.execute(self.context(), decide)


def _calls(
    number: int, purpose: str, request_hash: str, attempts: Sequence[Attempt]
) -> list[CallRecord]:
    return [
        CallRecord(
            round=number,
            purpose=purpose,
            provider=attempt.provider,
            model=attempt.model,
            request_hash=request_hash,
            usage=attempt.usage,
            outcome=attempt.outcome,
            detail=attempt.detail,
            retry_after_ms=None if attempt.retry_after is None else int(attempt.retry_after * 1000),
            duration_ms=attempt.duration_ms,
        )
        for attempt in attempts
    ]


def _result_of(generation: Generation, *, replayed: bool) -> GeneratedDraft:
    assert generation.draft_number is not None and generation.graph_digest is not None
    return GeneratedDraft(
        generation_id=generation.id,
        clone_id=generation.clone_id,
        number=generation.draft_number,
        digest=generation.graph_digest,
        graph=generation.graph or {},
        provider=generation.provider or "",
        model=generation.model or "",
        prompt_version=generation.prompt_version,
        rounds=generation.rounds,
        calls=generation.calls,
        usage=generation.usage,
        replayed=replayed,
    )
