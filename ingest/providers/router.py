"""The model router: an ordered fallback list of providers per purpose, and the only retry
loop for model calls (every provider SDK runs with `max_retries=0`).

For each provider on the purpose's list, in order, skipping those cooling down:

| outcome | what the router does |
|---|---|
| ok | answer, and the provider's cooldown ends |
| rate-limited (429) | cool it down for its Retry-After (else the cooldown); fall back. On the last provider a Retry-After up to `retry_after_max` is waited out and the call tried once more |
| timeout | cool it down; fall back |
| unavailable (5xx, connection) | try again after `backoff` (`unavailable_retries` times), then cool it down and fall back |
| auth-failed (401/403) | cool it down for `auth_cooldown`; fall back |
| bad-output, refused | fall back (the provider is healthy; no cooldown) |

Every call made is returned as an `Attempt` (provider, model, outcome, tokens, Retry-After,
duration), for the caller to record; providers skipped while cooling are not calls. When no
provider answers, `ModelsUnavailableError` carries the attempts and when to try again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aggregates.ports import ModelAnswer, ModelProvider, ModelRequest, TokenUsage
from ingest.providers.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    printable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutingPolicy:
    cooldown: float = 30.0
    """Seconds a provider rests after a timeout, an outage or a 429 without Retry-After."""
    auth_cooldown: float = 300.0
    """Seconds a provider rests after refusing our key."""
    retry_after_max: float = 2.0
    """The longest Retry-After waited out, and only on the last provider of a list."""
    unavailable_retries: int = 1
    """Further tries of a provider that answered 5xx or could not be reached."""
    backoff: float = 0.25
    """Seconds before the first such try (doubling after each)."""


@dataclass(frozen=True)
class Attempt:
    provider: str
    model: str
    outcome: str
    usage: TokenUsage
    detail: str
    retry_after: float | None
    duration_ms: int


@dataclass(frozen=True)
class Routed:
    answer: ModelAnswer
    attempts: tuple[Attempt, ...]
    request_hash: str


class ModelsUnavailableError(Exception):
    """No provider on the purpose's list answered."""

    def __init__(
        self,
        purpose: str,
        attempts: Sequence[Attempt],
        retry_after: float | None,
        request_hash: str,
    ) -> None:
        tried = ", ".join(f"{a.provider}: {a.outcome}" for a in attempts) or "all cooling down"
        super().__init__(f"no model provider answered for {purpose} ({tried})")
        self.purpose = purpose
        self.attempts = tuple(attempts)
        self.retry_after = retry_after
        self.request_hash = request_hash


class UnknownProviderError(ValueError):
    pass


class ModelRouter:
    """Itself a `ModelProvider`: `generate` answers with the first provider that can."""

    name = "router"
    model = "routed"

    def __init__(
        self,
        providers: Iterable[ModelProvider],
        routes: Mapping[str, Sequence[str]],
        default_route: Sequence[str],
        policy: RoutingPolicy | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.providers = {provider.name: provider for provider in providers}
        self.routes = {purpose: tuple(names) for purpose, names in routes.items()}
        self.default_route = tuple(default_route)
        for names in (self.default_route, *self.routes.values()):
            unknown = [name for name in names if name not in self.providers]
            if unknown:
                raise UnknownProviderError(f"no model provider named {unknown[0]!r}")
        self.policy = policy or RoutingPolicy()
        self.monotonic = monotonic
        self.sleep = sleep
        self._resting_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def route_for(self, purpose: str) -> tuple[str, ...]:
        return self.routes.get(purpose) or self.default_route

    def cooling(self) -> dict[str, float]:
        """Seconds each resting provider still rests."""
        now = self.monotonic()
        with self._lock:
            return {n: until - now for n, until in self._resting_until.items() if until > now}

    def generate(self, request: ModelRequest) -> ModelAnswer:
        return self.route(request).answer

    def route(self, request: ModelRequest) -> Routed:
        attempts: list[Attempt] = []
        names = self.route_for(request.purpose)
        request_hash = request.digest()
        for index, name in enumerate(names):
            if self._resting(name):
                continue
            answer = self._try(
                self.providers[name], request, attempts, last=index == len(names) - 1
            )
            if answer is not None:
                return Routed(answer, tuple(attempts), request_hash)
        raise ModelsUnavailableError(request.purpose, attempts, self._soonest(names), request_hash)

    def _try(
        self, provider: ModelProvider, request: ModelRequest, attempts: list[Attempt], *, last: bool
    ) -> ModelAnswer | None:
        """Call one provider (again, where its outcome allows); None: fall back."""
        policy = self.policy
        retries = 0
        waited = False
        while True:
            started = self.monotonic()
            try:
                answer = provider.generate(request)
            except ProviderError as error:
                attempts.append(self._attempt(provider, error, started))
                log.info("model call %s failed: %s (%s)", provider.name, error.outcome, error)
                if isinstance(error, ProviderRateLimitedError):
                    wait = error.retry_after
                    if last and not waited and wait is not None and wait <= policy.retry_after_max:
                        waited = True
                        self.sleep(wait)
                        continue
                    self._rest(provider.name, wait if wait is not None else policy.cooldown)
                elif isinstance(error, ProviderUnavailableError):
                    if retries < policy.unavailable_retries:
                        self.sleep(policy.backoff * 2**retries)
                        retries += 1
                        continue
                    self._rest(provider.name, policy.cooldown)
                elif isinstance(error, ProviderTimeoutError):
                    self._rest(provider.name, policy.cooldown)
                elif isinstance(error, ProviderAuthError):
                    self._rest(provider.name, policy.auth_cooldown)
                return None
            except Exception as error:  # a provider's own bug: fall back, and say so loudly
                log.exception("model provider %s failed unexpectedly", provider.name)
                attempts.append(
                    Attempt(
                        provider.name,
                        provider.model,
                        "error",
                        TokenUsage(),
                        printable(f"{type(error).__name__}: {error}"),
                        None,
                        self._elapsed_ms(started),
                    )
                )
                return None
            attempts.append(
                Attempt(
                    answer.provider,
                    answer.model,
                    "ok",
                    answer.usage,
                    "",
                    None,
                    self._elapsed_ms(started),
                )
            )
            with self._lock:
                self._resting_until.pop(provider.name, None)
            return answer

    def _attempt(self, provider: ModelProvider, error: ProviderError, started: float) -> Attempt:
        return Attempt(
            provider.name,
            provider.model,
            error.outcome,
            error.usage,
            error.detail,
            error.retry_after,
            self._elapsed_ms(started),
        )

    def _elapsed_ms(self, started: float) -> int:
        return max(int((self.monotonic() - started) * 1000), 0)

    def _rest(self, name: str, seconds: float) -> None:
        until = self.monotonic() + max(seconds, 0.0)
        with self._lock:
            self._resting_until[name] = max(until, self._resting_until.get(name, 0.0))

    def _resting(self, name: str) -> bool:
        with self._lock:
            until = self._resting_until.get(name)
        return until is not None and until > self.monotonic()

    def _soonest(self, names: Sequence[str]) -> float | None:
        now = self.monotonic()
        with self._lock:
            waits = [self._resting_until[n] - now for n in names if n in self._resting_until]
        waits = [wait for wait in waits if wait > 0]
        return min(waits) if waits else None

    def close(self) -> None:
        for provider in self.providers.values():
            close = getattr(provider, "close", None)
            if callable(close):
                close()
