"""The OpenAI-compatible provider against a real HTTP server on loopback: structured
output asked for and parsed, usage taken as reported, each failure raised as its class."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aggregates.ports import TokenUsage
from api.routers.clones import graph_rules
from ingest.providers.errors import (
    ProviderAuthError,
    ProviderBadOutputError,
    ProviderRateLimitedError,
    ProviderRefusedRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from ingest.providers.openai_compatible import OpenAICompatibleProvider
from runtime.settings import Settings
from services.prompts import PROMPT_V1
from tests.engine.servers import ChatServer, completion, error, hang, rate_limited

KEY = "sk-test-RETRO-CLOCK"
REQUEST = PROMPT_V1.request("BTC sma over 24 hours", graph_rules(Settings()), max_tokens=2048)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def provider(server: ChatServer, **options: object) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        "primary",
        base_url=server.url,
        model="gpt-test",
        api_key=KEY,
        timeout=float(options.pop("timeout", 2.0)),  # type: ignore[arg-type]
        clock=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )


def test_structured_output_is_asked_for_and_parsed(primary: ChatServer) -> None:
    answer = provider(primary).generate(REQUEST)

    sent = primary.requests[0]
    assert sent["model"] == "gpt-test" and sent["max_completion_tokens"] == 2048
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "strategy_graph", "strict": True, "schema": REQUEST.json_schema},
    }
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert primary.seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert answer.data["nodes"][0]["kind"] == "data_source"
    assert (answer.provider, answer.model) == ("primary", "gpt-test-2026-01-01")


def test_usage_is_taken_exactly_as_the_server_reports_it(primary: ChatServer) -> None:
    primary.reply(
        completion({"nodes": []}, prompt_tokens=1234, completion_tokens=567, cached_tokens=89)
    )

    answer = provider(primary).generate(REQUEST)

    assert answer.usage == TokenUsage(prompt_tokens=1234, completion_tokens=567, cached_tokens=89)


def test_usage_without_cache_details_counts_no_cached_tokens(primary: ChatServer) -> None:
    primary.reply(
        completion({"nodes": []}, prompt_tokens=10, completion_tokens=3, cached_tokens=None)
    )

    answer = provider(primary).generate(REQUEST)

    assert answer.usage == TokenUsage(10, 3, 0)


def test_decimals_in_the_answer_are_read_as_decimals(primary: ChatServer) -> None:
    primary.reply(completion('{"nodes": [], "x": 0.1}'))

    answer = provider(primary).generate(REQUEST)

    assert str(answer.data["x"]) == "0.1"


def test_the_older_token_parameter_can_be_chosen(primary: ChatServer) -> None:
    provider(primary, token_parameter="max_tokens").generate(REQUEST)

    assert primary.requests[0]["max_tokens"] == 2048
    assert "max_completion_tokens" not in primary.requests[0]


def test_a_429_carries_its_retry_after_in_seconds(primary: ChatServer) -> None:
    primary.reply(rate_limited("7"))

    with pytest.raises(ProviderRateLimitedError) as raised:
        provider(primary).generate(REQUEST)

    assert raised.value.retry_after == 7.0
    assert len(primary.requests) == 1  # the SDK itself never retries


def test_a_retry_after_given_as_a_date_is_counted_from_now(primary: ChatServer) -> None:
    primary.reply(rate_limited("Wed, 25 Nov 2026 12:00:30 GMT"))

    with pytest.raises(ProviderRateLimitedError) as raised:
        provider(primary).generate(REQUEST)

    assert raised.value.retry_after == 30.0


@pytest.mark.parametrize(
    ("status", "raised"),
    [
        (401, ProviderAuthError),
        (403, ProviderAuthError),
        (500, ProviderUnavailableError),
        (503, ProviderUnavailableError),
        (400, ProviderRefusedRequestError),
        (404, ProviderRefusedRequestError),
    ],
)
def test_each_status_is_raised_as_its_class(
    primary: ChatServer, status: int, raised: type[Exception]
) -> None:
    primary.reply(error(status, "no"))

    with pytest.raises(raised):
        provider(primary).generate(REQUEST)


def test_no_answer_in_time_is_a_timeout(primary: ChatServer) -> None:
    primary.reply(hang())

    with pytest.raises(ProviderTimeoutError):
        provider(primary, timeout=0.3).generate(REQUEST)


def test_a_server_that_is_gone_is_unavailable(primary: ChatServer) -> None:
    gone = provider(primary)
    primary.stop()

    with pytest.raises(ProviderUnavailableError):
        gone.generate(REQUEST)


@pytest.mark.parametrize(
    "reply",
    [
        completion("this is not JSON", completion_tokens=5),
        completion("[1, 2, 3]", completion_tokens=5),
        completion('{"nodes": [', finish_reason="length", completion_tokens=5),
        completion('{"x": NaN}', completion_tokens=5),
        completion("", completion_tokens=5),
    ],
    ids=["not-json", "not-an-object", "cut-off", "nan", "empty"],
)
def test_an_unusable_answer_is_bad_output_that_still_cost_tokens(
    primary: ChatServer, reply: object
) -> None:
    primary.reply(reply)  # type: ignore[arg-type]

    with pytest.raises(ProviderBadOutputError) as raised:
        provider(primary).generate(REQUEST)

    assert raised.value.usage.completion_tokens == 5


def test_an_answer_over_the_size_limit_is_bad_output(primary: ChatServer) -> None:
    primary.reply(completion({"pad": "x" * 5000}))

    with pytest.raises(ProviderBadOutputError, match="bytes"):
        provider(primary, max_output_bytes=1024).generate(REQUEST)


def test_the_key_never_appears_in_an_error(primary: ChatServer) -> None:
    primary.reply(error(401, "Incorrect API key provided"))

    with pytest.raises(ProviderAuthError) as raised:
        provider(primary).generate(REQUEST)

    assert KEY not in str(raised.value)
