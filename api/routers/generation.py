"""Generation (owner routes): a prompt becomes the clone's draft through the model router;
what each clone and each user spent in tokens; the artifacts generations made.

Someone else's clone is answered exactly like a missing one. Beyond the daily token budget
a generation is 429 `token-budget-exhausted` (Retry-After: the next UTC day); when no
provider answers, 503 `models-unavailable` (Retry-After: the soonest provider back).
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from aggregates.clones import FREE_TEXT
from aggregates.errors import NotFoundError
from aggregates.token_usage import TokenBudgetExhaustedError
from api.auth import CurrentUser
from api.commands import UserCommand, items_of
from api.deps import ClockDep, ServicesDep, SettingsDep, wait_for
from api.pagination import PageDep
from api.problems import PROBLEM_MEDIA_TYPE, ApiError, Problem
from api.routers.clones import DraftWrittenPublic, graph_rules, owned
from api.routing import APIRouter
from api.schemas import IdempotencyKey
from projections import clones, generations
from runtime.clock import Clock
from services import generation
from services.bootstrap import Services

router = APIRouter(tags=["generation"])

BY_CLONE_LIMIT = 100
"""How many clones `GET /v1/me/usage` breaks the usage down by (the biggest users)."""

Prompt = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=4000, pattern=FREE_TEXT),
]


class TokenBudgetProblem(ApiError):
    status = 429
    code = "token-budget-exhausted"


class ModelsUnavailableProblem(ApiError):
    status = 503
    code = "models-unavailable"


def _problem(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": description}
    }


GENERATE_PROBLEMS = {
    **_problem(
        422,
        "bad input, or the model's graph still broke the guardrails after one repair (`generated-graph-rejected`, each violation in `errors`)",
    ),
    **_problem(429, "the daily token budget is used up (`token-budget-exhausted`)"),
    **_problem(503, "no model provider answered (`models-unavailable`)"),
}


class GenerationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Prompt


class TokenUsagePublic(BaseModel):
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


class GeneratedDraftPublic(DraftWrittenPublic):
    generation_id: UUID
    provider: str
    model: str
    prompt_version: str
    rounds: int
    usage: TokenUsagePublic
    replayed: bool


class UsageTotalsPublic(BaseModel):
    calls: int
    failed_calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int


class ModelUsagePublic(UsageTotalsPublic):
    provider: str
    model: str
    purpose: str


class CloneUsagePublic(BaseModel):
    clone_id: UUID
    total: UsageTotalsPublic
    by_model: list[ModelUsagePublic]


class CloneTotalPublic(UsageTotalsPublic):
    clone_id: UUID


class BudgetPublic(BaseModel):
    day: date
    daily_token_budget: int
    used_tokens: int
    remaining_tokens: int
    resets_at: datetime


class MyUsagePublic(BaseModel):
    today: UsageTotalsPublic
    budget: BudgetPublic
    total: UsageTotalsPublic
    by_clone: list[CloneTotalPublic]


class ArtifactPublic(BaseModel):
    sha256: str
    kind: str
    media_type: str
    size_bytes: int
    generation_id: UUID | None
    """The generation that made it (None for a decision record)."""
    account_id: UUID | None
    """The prop account a decision record was decided for (None for a generation's)."""
    job_id: UUID | None
    """The backtest job whose report it is."""
    round: int | None
    created_at: datetime


class ArtifactsPublic(BaseModel):
    items: list[ArtifactPublic]
    next_cursor: str | None


async def model_routers(request: Request) -> generation.RouterCache:
    """The process's one router cache (its providers' cooldowns live there)."""
    state = request.app.state
    cache: generation.RouterCache | None = getattr(state, "model_routers", None)
    if cache is None:
        cache = state.model_routers = generation.RouterCache()
    return cache


RoutersDep = Annotated[generation.RouterCache, Depends(model_routers)]


def next_utc_day(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), UTC)


def seconds_until(moment: datetime, clock: Clock) -> str:
    return str(max(math.ceil((moment - clock()).total_seconds()), 1))


@router.post(
    "/v1/clones/{clone_id}/generate",
    operation_id="clone_generate",
    responses=GENERATE_PROBLEMS,
)
def generate(
    clone_id: UUID,
    body: GenerationCreate,
    user: UserCommand,
    services: ServicesDep,
    clock: ClockDep,
    routers: RoutersDep,
    idempotency_key: IdempotencyKey = None,
) -> GeneratedDraftPublic:
    """Ask the model router for a strategy graph from `prompt` (prompt `strategy-graph@1`),
    check it against every guardrail (one repair round feeding the violations back), and
    save it as the clone's draft. The same `Idempotency-Key` answers the first result."""
    settings = services.settings
    try:
        written = generation.generate_draft(
            user.event_log,
            user.context,
            clone_id=clone_id,
            owner_id=user.user_id,
            key=idempotency_key or secrets.token_hex(16),
            prompt=body.prompt,
            policy=generation.policy_of(settings, graph_rules(settings)),
            router=routers.router(settings, clock),
            clock=clock,
        )
    except TokenBudgetExhaustedError as error:
        resets_at = next_utc_day(date.fromisoformat(error.day))
        raise TokenBudgetProblem(
            str(error), headers={"Retry-After": seconds_until(resets_at, clock)}
        ) from None
    except generation.ModelsUnavailableError as error:
        wait = error.retry_after if error.retry_after is not None else settings.model_cooldown
        raise ModelsUnavailableProblem(
            str(error), headers={"Retry-After": str(max(math.ceil(wait), 1))}
        ) from None
    result = written.result
    return GeneratedDraftPublic(
        clone_id=result.clone_id,
        number=result.number,
        digest=result.digest,
        graph=result.graph,
        position=written.position,
        generation_id=result.generation_id,
        provider=result.provider,
        model=result.model,
        prompt_version=result.prompt_version,
        rounds=result.rounds,
        usage=TokenUsagePublic(
            calls=result.calls,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            cached_tokens=result.usage.cached_tokens,
            total_tokens=result.usage.total_tokens,
        ),
        replayed=result.replayed,
    )


async def _own_clone(services: Services, clone_id: UUID, user: CurrentUser) -> None:
    await owned(
        services,
        "clones",
        lambda: clones.clone_owner(services.reads, clone_id),
        user,
        f"clone {clone_id}",
    )


@router.get(
    "/v1/clones/{clone_id}/usage",
    operation_id="clone_usage",
    dependencies=[Depends(wait_for("generations"))],
)
async def clone_usage(clone_id: UUID, user: CurrentUser, services: ServicesDep) -> CloneUsagePublic:
    """Every model call made for the clone's generations: totals, and by provider, model
    and purpose."""
    await _own_clone(services, clone_id, user)
    total = await generations.usage_of_clone(services.reads, clone_id)
    by_model = await generations.usage_of_clone_by_model(services.reads, clone_id)
    return CloneUsagePublic(
        clone_id=clone_id,
        total=UsageTotalsPublic.model_validate(total, from_attributes=True),
        by_model=items_of(ModelUsagePublic, by_model),
    )


@router.get(
    "/v1/me/usage",
    operation_id="me_usage",
    dependencies=[Depends(wait_for("generations"))],
)
async def my_usage(
    user: CurrentUser, services: ServicesDep, settings: SettingsDep, clock: ClockDep
) -> MyUsagePublic:
    """Your model tokens today (the budget's UTC day) and over all time, by clone; the
    budget counts generations' tokens (model nodes' calls while trading are not in it)."""
    day = clock().astimezone(UTC).date()
    reads = services.reads
    today = await generations.usage_of_user(reads, user.user_id, day)
    # The budget counts generation only: a running account's model nodes never stop it.
    generated = await generations.usage_of_user(reads, user.user_id, day, generations_only=True)
    total = await generations.usage_of_user(reads, user.user_id, None)
    by_clone = await generations.usage_of_user_by_clone(reads, user.user_id, BY_CLONE_LIMIT)
    budget = settings.generation_daily_token_budget
    return MyUsagePublic(
        today=UsageTotalsPublic.model_validate(today, from_attributes=True),
        budget=BudgetPublic(
            day=day,
            daily_token_budget=budget,
            used_tokens=generated.total_tokens,
            remaining_tokens=max(budget - generated.total_tokens, 0),
            resets_at=next_utc_day(day),
        ),
        total=UsageTotalsPublic.model_validate(total, from_attributes=True),
        by_clone=items_of(CloneTotalPublic, by_clone),
    )


@router.get(
    "/v1/clones/{clone_id}/artifacts",
    operation_id="clone_artifacts_list",
    dependencies=[Depends(wait_for("generations"))],
)
async def list_artifacts(
    clone_id: UUID, user: CurrentUser, services: ServicesDep, page: PageDep
) -> ArtifactsPublic:
    """What the clone's generations made (the prompt as sent, each raw output, the graph)
    and its backtests' reports and the cadence driver's decision records for its accounts,
    each by the SHA-256 of its content, in the order they were made."""
    await _own_clone(services, clone_id, user)
    rows, next_cursor = page.cut(
        await generations.artifacts_of_clone(services.reads, clone_id, page),
        "position",
        "ordinal",
    )
    return ArtifactsPublic(items=items_of(ArtifactPublic, rows), next_cursor=next_cursor)


@router.get(
    "/v1/clones/{clone_id}/artifacts/{sha256}",
    operation_id="clone_artifact_get",
    dependencies=[Depends(wait_for("generations"))],
    response_class=Response,
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def get_artifact(
    clone_id: UUID,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
    user: CurrentUser,
    services: ServicesDep,
) -> Response:
    """One artifact's content, as stored (its SHA-256 is its name and its ETag)."""
    await _own_clone(services, clone_id, user)
    row = await generations.artifact_of_clone(services.reads, clone_id, sha256)
    if row is None:
        raise NotFoundError(f"clone {clone_id} has no artifact {sha256}")
    return Response(row.content, media_type=row.media_type, headers={"ETag": f'"{row.sha256}"'})
