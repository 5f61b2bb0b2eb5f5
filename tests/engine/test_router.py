"""The model router: an ordered fallback list per purpose, decisions by error class and
Retry-After, cooldowns for failing providers, and every call reported."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from pydantic import ValidationError

from aggregates.ports import ChatMessage, ModelAnswer, ModelRequest, TokenUsage
from ingest.providers.errors import (
    ProviderAuthError,
    ProviderBadOutputError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from ingest.providers.router import (
    ModelRouter,
    ModelsUnavailableError,
    RoutingPolicy,
    UnknownProviderError,
)
from runtime.settings import Settings

REQUEST = ModelRequest(
    "strategy-graph", (ChatMessage("user", "RETRO-CLOCK"),), "strategy_graph", {}
)
POLICY = RoutingPolicy(cooldown=30, auth_cooldown=300, retry_after_max=2, backoff=0.25)


class Clock:
    """Monotonic seconds a test moves by hand; sleeping moves it too."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Scripted:
    """A provider that fails or answers as told, call by call (then answers)."""

    def __init__(self, name: str, *outcomes: ProviderError) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.outcomes = list(outcomes)
        self.calls = 0

    def generate(self, request: ModelRequest) -> ModelAnswer:
        self.calls += 1
        if self.outcomes:
            raise self.outcomes.pop(0)
        return ModelAnswer({"ok": self.name}, "{}", TokenUsage(10, 5, 2), self.name, self.model)


def router(*providers: Scripted, clock: Clock, routes: Iterable[str] | None = None) -> ModelRouter:
    names = list(routes or [p.name for p in providers])
    return ModelRouter(
        providers, {"strategy-graph": names}, ["a"], POLICY, monotonic=clock, sleep=clock.sleep
    )


def test_a_rate_limited_provider_falls_back_to_the_next_and_rests_for_its_retry_after() -> None:
    clock = Clock()
    a = Scripted("a", ProviderRateLimitedError("slow down", retry_after=7))
    routing = router(a, Scripted("b"), clock=clock)

    routed = routing.route(REQUEST)

    assert routed.answer.provider == "b"
    assert [(x.provider, x.outcome, x.retry_after) for x in routed.attempts] == [
        ("a", "rate-limited", 7),
        ("b", "ok", None),
    ]
    assert routing.cooling() == {"a": 7}
    assert clock.slept == []


def test_a_resting_provider_is_skipped_until_its_rest_is_over() -> None:
    clock = Clock()
    a = Scripted("a", ProviderRateLimitedError("slow down", retry_after=7))
    routing = router(a, Scripted("b"), clock=clock)
    routing.route(REQUEST)

    skipped = routing.route(REQUEST)
    clock.now += 7
    back = routing.route(REQUEST)

    assert [x.provider for x in skipped.attempts] == ["b"]
    assert [x.provider for x in back.attempts] == ["a"] and a.calls == 2


def test_the_last_provider_waits_out_a_short_retry_after_once() -> None:
    clock = Clock()
    routing = router(Scripted("a", ProviderRateLimitedError("wait", retry_after=1.5)), clock=clock)

    routed = routing.route(REQUEST)

    assert [x.outcome for x in routed.attempts] == ["rate-limited", "ok"]
    assert clock.slept == [1.5]


def test_a_long_retry_after_on_the_last_provider_is_not_waited_out() -> None:
    clock = Clock()
    routing = router(Scripted("a", ProviderRateLimitedError("wait", retry_after=60)), clock=clock)

    with pytest.raises(ModelsUnavailableError) as raised:
        routing.route(REQUEST)

    assert clock.slept == []
    assert raised.value.retry_after == 60
    assert [x.outcome for x in raised.value.attempts] == ["rate-limited"]


def test_an_unavailable_provider_is_tried_once_more_then_rests() -> None:
    clock = Clock()
    a = Scripted("a", ProviderUnavailableError("502"), ProviderUnavailableError("502"))
    routing = router(a, Scripted("b"), clock=clock)

    routed = routing.route(REQUEST)

    assert [(x.provider, x.outcome) for x in routed.attempts] == [
        ("a", "unavailable"),
        ("a", "unavailable"),
        ("b", "ok"),
    ]
    assert clock.slept == [0.25]
    assert routing.cooling() == {"a": 30}


def test_an_unavailable_provider_that_recovers_answers() -> None:
    clock = Clock()
    routing = router(Scripted("a", ProviderUnavailableError("reset")), Scripted("b"), clock=clock)

    routed = routing.route(REQUEST)

    assert routed.answer.provider == "a" and routing.cooling() == {}


def test_a_timeout_falls_back_and_rests_the_provider() -> None:
    clock = Clock()
    routing = router(Scripted("a", ProviderTimeoutError("slow")), Scripted("b"), clock=clock)

    routed = routing.route(REQUEST)

    assert routed.answer.provider == "b" and routing.cooling() == {"a": 30}


def test_a_refused_key_rests_the_provider_for_long() -> None:
    clock = Clock()
    routing = router(Scripted("a", ProviderAuthError("401")), Scripted("b"), clock=clock)

    routing.route(REQUEST)

    assert routing.cooling() == {"a": 300}


def test_bad_output_falls_back_without_a_rest_and_keeps_what_it_cost() -> None:
    clock = Clock()
    spent = TokenUsage(100, 40, 0)
    a = Scripted("a", ProviderBadOutputError("not JSON", usage=spent))
    routing = router(a, Scripted("b"), clock=clock)

    routed = routing.route(REQUEST)

    assert routed.attempts[0].usage == spent and routed.answer.provider == "b"
    assert routing.cooling() == {}


def test_when_no_provider_answers_every_call_is_reported_with_when_to_come_back() -> None:
    clock = Clock()
    a = Scripted("a", ProviderTimeoutError("slow"))
    b = Scripted("b", ProviderRateLimitedError("busy", retry_after=12))
    routing = router(a, b, clock=clock)

    with pytest.raises(ModelsUnavailableError) as raised:
        routing.route(REQUEST)

    assert [(x.provider, x.outcome) for x in raised.value.attempts] == [
        ("a", "timeout"),
        ("b", "rate-limited"),
    ]
    assert raised.value.retry_after == 12
    assert raised.value.request_hash == REQUEST.digest()


def test_a_purpose_without_a_route_takes_the_default_route() -> None:
    clock = Clock()
    routing = router(Scripted("a"), Scripted("b"), clock=clock)

    routed = routing.route(ModelRequest("other", REQUEST.messages, "strategy_graph", {}))

    assert routed.answer.provider == "a"


def test_a_route_naming_an_unknown_provider_is_refused() -> None:
    with pytest.raises(UnknownProviderError, match="nope"):
        router(Scripted("a"), clock=Clock(), routes=["a", "nope"])


def test_settings_refuse_a_route_naming_an_unknown_provider() -> None:
    with pytest.raises(ValidationError, match="no model provider named 'nope'"):
        Settings(model_routes={"strategy-graph": ["offline", "nope"]})


def test_settings_reserve_the_offline_name() -> None:
    with pytest.raises(ValidationError, match="built-in"):
        Settings.model_validate(
            {"model_providers": [{"name": "offline", "base_url": "http://x", "model": "m"}]}
        )
