"""A generation: one prompt turned into a clone's draft strategy graph by a model.

Its history is the whole story of the request: every provider call (provider, model,
purpose, request hash, tokens as reported, outcome), every answer with the artifacts it
made (the prompt as sent, the raw output) and the guardrail violations found in it, then
the draft it became, or why it failed. Artifacts travel in the events themselves, each with
the SHA-256 of its content, so the log stays the one source of truth and the artifact
store is a read model that a rebuild refills.

A generation created with an idempotency key answers a repeat of the key with its result;
a failed one runs again (`resume`), a running one is a conflict.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import orjson
from eventsourcing.domain import event

from aggregates.base import DomainAggregate
from aggregates.errors import ConflictError, InvalidCommandError
from aggregates.ports import TokenUsage

ArtifactKind = Literal["prompt", "raw-output", "graph", "decision-record", "backtest-report"]


@dataclass(frozen=True)
class Artifact:
    """Content addressed by its SHA-256 (of the UTF-8 bytes)."""

    kind: ArtifactKind
    media_type: str
    content: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()

    def as_record(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "media_type": self.media_type,
            "sha256": self.sha256,
            "content": self.content,
        }


def json_artifact(kind: ArtifactKind, data: Any) -> Artifact:
    """JSON data as an artifact: sorted keys, no whitespace (the same data, the same hash)."""
    return Artifact(
        kind, "application/json", orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
    )


@dataclass(frozen=True)
class CallRecord:
    """One provider call as the router saw it."""

    round: int
    purpose: str
    provider: str
    model: str
    request_hash: str
    usage: TokenUsage
    outcome: str
    detail: str
    retry_after_ms: int | None
    duration_ms: int


class GenerationInProgressError(ConflictError):
    code = "generation-in-progress"


class GenerationFinishedError(ConflictError):
    code = "generation-finished"


class GeneratedGraphRejectedError(InvalidCommandError):
    """The model's graph still broke the guardrails after the repair round."""

    code = "generated-graph-rejected"

    def __init__(self, detail: str, violations: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.problem_errors = violations


class Generation(DomainAggregate):
    class Started(DomainAggregate.Created):
        clone_id: UUID
        owner_id: UUID
        prompt_version: str
        prompt: str
        day: str
        request_fingerprint: str

    class Resumed(DomainAggregate.Event):
        day: str

    class CallRecorded(DomainAggregate.Event):
        round: int
        purpose: str
        provider: str
        model: str
        request_hash: str
        prompt_tokens: int
        completion_tokens: int
        cached_tokens: int
        outcome: str
        detail: str
        retry_after_ms: int | None
        duration_ms: int

    class Answered(DomainAggregate.Event):
        round: int
        repair: bool
        provider: str
        model: str
        request_hash: str
        artifacts: list[dict[str, str]]
        violations: list[dict[str, str]]

    class Completed(DomainAggregate.Event):
        draft_number: int
        graph_digest: str
        artifacts: list[dict[str, str]]

    class Failed(DomainAggregate.Event):
        code: str
        detail: str
        violations: list[dict[str, str]]

    @event(Started)
    def __init__(
        self,
        id: UUID,
        clone_id: UUID,
        owner_id: UUID,
        prompt_version: str,
        prompt: str,
        day: str,
        request_fingerprint: str,
    ) -> None:
        self.clone_id = clone_id
        self.owner_id = owner_id
        self.prompt_version = prompt_version
        self.prompt = prompt
        self.day = day
        self.request_fingerprint = request_fingerprint
        self.status = "running"
        self.rounds = 0
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.provider: str | None = None
        self.model: str | None = None
        self.draft_number: int | None = None
        self.graph_digest: str | None = None
        self.graph_json: str | None = None
        self.failure_code: str | None = None

    @property
    def usage(self) -> TokenUsage:
        """What every call of this generation cost, as the providers reported it."""
        return TokenUsage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)

    @property
    def graph(self) -> dict[str, Any] | None:
        return orjson.loads(self.graph_json) if self.graph_json is not None else None

    def check_repeatable(self) -> None:
        """What a repeat of the key may do: a completed one answers, a failed one runs
        again, a running one is still someone's."""
        if self.status == "running":
            raise GenerationInProgressError(
                f"generation {self.id} is still running; try again when it has finished"
            )

    def resume(self, day: str) -> None:
        """Run a failed generation again (its key came back)."""
        self.check_repeatable()
        if self.status == "failed":
            self._resumed(day=day)

    @event(Resumed)
    def _resumed(self, day: str) -> None:
        self.status = "running"
        self.day = day
        self.failure_code = None

    def next_round(self) -> int:
        return self.rounds + 1

    def record_call(self, call: CallRecord) -> None:
        self._check_running()
        self._call_recorded(
            round=call.round,
            purpose=call.purpose,
            provider=call.provider,
            model=call.model,
            request_hash=call.request_hash,
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
            cached_tokens=call.usage.cached_tokens,
            outcome=call.outcome,
            detail=call.detail,
            retry_after_ms=call.retry_after_ms,
            duration_ms=call.duration_ms,
        )

    @event(CallRecorded)
    def _call_recorded(
        self,
        round: int,
        purpose: str,
        provider: str,
        model: str,
        request_hash: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int,
        outcome: str,
        detail: str,
        retry_after_ms: int | None,
        duration_ms: int,
    ) -> None:
        self.calls += 1
        self.rounds = max(self.rounds, round)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cached_tokens += cached_tokens

    def answer(
        self,
        *,
        round: int,
        repair: bool,
        provider: str,
        model: str,
        request_hash: str,
        artifacts: list[Artifact],
        violations: list[dict[str, str]],
    ) -> None:
        self._check_running()
        self._answered(
            round=round,
            repair=repair,
            provider=provider,
            model=model,
            request_hash=request_hash,
            artifacts=[artifact.as_record() for artifact in artifacts],
            violations=violations,
        )

    @event(Answered)
    def _answered(
        self,
        round: int,
        repair: bool,
        provider: str,
        model: str,
        request_hash: str,
        artifacts: list[dict[str, str]],
        violations: list[dict[str, str]],
    ) -> None:
        self.rounds = max(self.rounds, round)
        self.provider = provider
        self.model = model

    def complete(self, draft_number: int, graph_digest: str, graph: Artifact) -> None:
        self._check_running()
        self._completed(
            draft_number=draft_number, graph_digest=graph_digest, artifacts=[graph.as_record()]
        )

    @event(Completed)
    def _completed(
        self, draft_number: int, graph_digest: str, artifacts: list[dict[str, str]]
    ) -> None:
        self.status = "completed"
        self.draft_number = draft_number
        self.graph_digest = graph_digest
        self.graph_json = artifacts[0]["content"]

    def fail(self, code: str, detail: str, violations: list[dict[str, str]] | None = None) -> None:
        self._check_running()
        self._failed(code=code, detail=detail, violations=violations or [])

    @event(Failed)
    def _failed(self, code: str, detail: str, violations: list[dict[str, str]]) -> None:
        self.status = "failed"
        self.failure_code = code

    def _check_running(self) -> None:
        if self.status != "running":
            raise GenerationFinishedError(f"generation {self.id} is {self.status}")
