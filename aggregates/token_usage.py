"""A user's model tokens on one UTC day, and the daily budget generation must stay within.

One aggregate per (user, day), its id derived from both, so every generation of a user on
that day reads and adds to the same count: a count that is read and written in the same
transaction as the calls it counts, never a read model that may lag. A generation is
refused once the day's tokens (prompt + completion; cached tokens are part of the prompt's)
reach the budget; one that starts within it runs to its end, so the day may close above
the budget by at most one generation per request in flight.
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import PaymentRequiredError
from aggregates.ports import TokenUsage


class TokenBudgetExhaustedError(PaymentRequiredError):
    code = "token-budget-exhausted"

    def __init__(self, used: int, budget: int, day: str) -> None:
        super().__init__(
            f"{used} of the {budget} model tokens a day are used on {day} (UTC);"
            " generation resumes the next UTC day"
        )
        self.used = used
        self.budget = budget
        self.day = day


def usage_day_id(user_id: UUID, day: str) -> UUID:
    return derive_id("DailyTokenUsage", f"{user_id}:{day}")


class DailyTokenUsage(DomainAggregate):
    snapshot_interval: ClassVar[int | None] = 100

    class Opened(DomainAggregate.Created):
        user_id: UUID
        day: str

    class Spent(DomainAggregate.Event):
        generation_id: UUID
        prompt_tokens: int
        completion_tokens: int
        cached_tokens: int

    @event(Opened)
    def __init__(self, id: UUID, user_id: UUID, day: str) -> None:
        self.user_id = user_id
        self.day = day
        # Plain counts, not a TokenUsage: snapshots keep plain values.
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0

    @classmethod
    def open(cls, user_id: UUID, day: str) -> DailyTokenUsage:
        return cls(id=usage_day_id(user_id, day), user_id=user_id, day=day)

    @property
    def usage(self) -> TokenUsage:
        return TokenUsage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)

    @property
    def tokens(self) -> int:
        return self.usage.total_tokens

    def check_within(self, budget: int) -> None:
        check_within(self, budget, self.day)

    def spend(self, generation_id: UUID, usage: TokenUsage) -> None:
        if usage.total_tokens or usage.cached_tokens:
            self._spent(
                generation_id=generation_id,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
            )

    @event(Spent)
    def _spent(
        self, generation_id: UUID, prompt_tokens: int, completion_tokens: int, cached_tokens: int
    ) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cached_tokens += cached_tokens


def check_within(usage: DailyTokenUsage | None, budget: int, day: str) -> None:
    """Refuse once the day's tokens reach the budget (no usage yet: 0 tokens)."""
    used = usage.tokens if usage is not None else 0
    if used >= budget:
        raise TokenBudgetExhaustedError(used, budget, day)
