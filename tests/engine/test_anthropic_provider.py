"""The Anthropic provider (`kind: anthropic`) against a real HTTP server on loopback
speaking the Messages API: structured output asked for as the one tool to call and parsed
from its `tool_use` block, usage taken as reported (cache reads and writes are prompt
tokens), each failure raised as its class, the key never in an error; and a generation and a
model node through it from settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import HttpUrl, SecretStr

from aggregates.ports import ChatMessage, ModelRequest, TokenUsage
from aggregates.strategy_executor import compile_strategy, evaluate
from api.routers.clones import graph_rules
from benchmarks.engine import frame_for, graph_for
from ingest.providers import open_model_router
from ingest.providers.anthropic_messages import AnthropicProvider
from ingest.providers.errors import (
    ProviderAuthError,
    ProviderBadOutputError,
    ProviderRateLimitedError,
    ProviderRefusedRequestError,
    ProviderUnavailableError,
)
from ingest.providers.model_nodes import MODEL_NODE_PURPOSE, RoutedModel
from ingest.providers.offline import strategy_graph_answer
from runtime.settings import ModelProviderSpec, Settings
from services.prompts import PROMPT_V1
from tests.engine.servers import ChatServer, Reply
from tests.support.clones import create_clone
from tests.support.wallets import sign_in

KEY = "sk-ant-test-RETRO-CLOCK"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
REQUEST = PROMPT_V1.request("BTC sma over 24 hours", graph_rules(Settings()), max_tokens=2048)


def tool_use(
    name: str,
    data: Any,
    *,
    input_tokens: int = 900,
    output_tokens: int = 210,
    cache_read: int = 300,
    cache_write: int = 50,
    stop_reason: str = "tool_use",
) -> Reply:
    body = {
        "id": "msg_RETRO_CLOCK",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-2026-01-01",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": name, "input": data}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        },
    }
    return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


def failure(status: int, kind: str, **headers: str) -> Reply:
    body = {"type": "error", "error": {"type": kind, "message": f"{kind} {KEY[:6]}"}}
    return Reply(status, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})


def graph_answer(body: dict[str, Any]) -> Reply:
    """The default answer: the offline provider's graph for the user's idea."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    idea = user.split("\n\n", 1)[-1]
    request = ModelRequest(
        purpose="loopback",
        messages=(ChatMessage("user", idea),),
        schema_name="strategy_graph",
        json_schema={},
        inputs={"prompt": idea, "assets": ["BTC", "ETH", "SOL"], "channels": CHANNELS},
    )
    return tool_use("strategy_graph", strategy_graph_answer(request))


CHANNELS = [
    f"hyperliquid.{coin}.{feature}"
    for coin in ("BTC", "ETH", "SOL")
    for feature in ("return_1h", "return_4h", "volatility_1h", "funding_rate")
]


@pytest.fixture
def server() -> Iterator[ChatServer]:
    started = ChatServer(default=graph_answer).start()
    yield started
    started.stop()


def base_url(server: ChatServer) -> str:
    return f"http://127.0.0.1:{server.port}"  # the SDK adds /v1/messages


def provider(server: ChatServer) -> AnthropicProvider:
    return AnthropicProvider(
        "claude", base_url=base_url(server), model="claude-test", api_key=KEY, timeout=2.0
    )


def sent(server: ChatServer) -> dict[str, Any]:
    (seen,) = [s for s in server.seen if s.path == "/v1/messages"]
    assert seen.headers["x-api-key"] == KEY
    return seen.body  # type: ignore[no-any-return]


def test_structured_output_is_asked_for_as_a_tool_and_parsed(server: ChatServer) -> None:
    answer = provider(server).generate(REQUEST)

    body = sent(server)
    assert body["tools"][0]["name"] == "strategy_graph"
    assert body["tools"][0]["input_schema"] == REQUEST.json_schema
    assert body["tool_choice"] == {"type": "tool", "name": "strategy_graph"}
    assert body["system"] == REQUEST.messages[0].content  # system messages go in `system`
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert (body["model"], body["max_tokens"]) == ("claude-test", 2048)
    assert answer.data["nodes"] and answer.provider == "claude"
    assert answer.model == "claude-test-2026-01-01"
    assert json.loads(answer.raw) == json.loads(json.dumps(answer.data, default=str))


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens(server: ChatServer) -> None:
    server.reply(tool_use("strategy_graph", {"nodes": []}, input_tokens=100, output_tokens=7))
    answer = provider(server).generate(REQUEST)
    assert answer.usage == TokenUsage(prompt_tokens=450, completion_tokens=7, cached_tokens=300)


def test_decimals_in_the_answer_are_read_as_decimals(server: ChatServer) -> None:
    server.reply(tool_use("strategy_graph", {"size": 0.25}))
    assert provider(server).generate(REQUEST).data == {"size": Decimal("0.25")}


@pytest.mark.parametrize(
    ("reply", "raised"),
    [
        (failure(401, "authentication_error"), ProviderAuthError),
        (failure(403, "permission_error"), ProviderAuthError),
        (failure(400, "invalid_request_error"), ProviderRefusedRequestError),
        (failure(500, "api_error"), ProviderUnavailableError),
        (failure(529, "overloaded_error"), ProviderUnavailableError),
    ],
)
def test_each_status_is_raised_as_its_class(
    server: ChatServer, reply: Reply, raised: type[Exception]
) -> None:
    server.reply(reply)
    with pytest.raises(raised) as caught:
        provider(server).generate(REQUEST)
    assert KEY not in str(caught.value)


def test_a_429_carries_its_retry_after(server: ChatServer) -> None:
    server.reply(failure(429, "rate_limit_error", **{"Retry-After": "7"}))
    with pytest.raises(ProviderRateLimitedError) as caught:
        provider(server).generate(REQUEST)
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    "reply",
    [
        tool_use("another_tool", {"nodes": []}),
        tool_use("strategy_graph", {"nodes": []}, stop_reason="max_tokens"),
        Reply(
            200,
            json.dumps(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-test",
                    "content": [{"type": "text", "text": "no"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 5, "output_tokens": 1},
                }
            ).encode(),
            {"Content-Type": "application/json"},
        ),
    ],
)
def test_an_answer_without_the_tool_call_is_bad_output_that_still_cost_tokens(
    server: ChatServer, reply: Reply
) -> None:
    server.reply(reply)
    with pytest.raises(ProviderBadOutputError) as caught:
        provider(server).generate(REQUEST)
    assert caught.value.usage.total_tokens > 0


def claude_settings(settings: Settings, server: ChatServer) -> Settings:
    spec = ModelProviderSpec(
        name="claude",
        kind="anthropic",
        base_url=HttpUrl(base_url(server)),
        model="claude-test",
        api_key=SecretStr(KEY),
    )
    route = ["claude"]
    return settings.model_copy(
        update={
            "model_providers": [spec],
            "model_routes": {
                "strategy-graph": route,
                "strategy-graph-repair": route,
                MODEL_NODE_PURPOSE: route,
            },
            "model_timeout": 2.0,
        }
    )


@pytest.fixture
def claude_server() -> Iterator[ChatServer]:
    started = ChatServer(default=graph_answer).start()
    yield started
    started.stop()


@pytest.fixture
def settings(settings: Settings, claude_server: ChatServer) -> Settings:
    return claude_settings(settings, claude_server)


def test_a_generation_goes_through_the_anthropic_provider_from_settings(
    client: TestClient, claude_server: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    response = client.post(
        f"/v1/clones/{clone_id}/generate",
        json={"prompt": "ETH momentum over 12 hours, long only"},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["provider"], body["model"]) == ("claude", "claude-test-2026-01-01")
    assert body["usage"]["prompt_tokens"] == 900 + 300 + 50
    assert body["usage"]["cached_tokens"] == 300


def test_a_model_node_goes_through_the_anthropic_provider(
    settings: Settings, claude_server: ChatServer
) -> None:
    strategy, frame = compile_strategy(graph_for("A0")), frame_for("A0", 200, seed=5)
    claude_server.reply(tool_use("model_node_scores", {"scores": [-0.4]}))
    models = RoutedModel(open_model_router(settings, clock=lambda: NOW))
    scores = evaluate(strategy, frame, models, latest_only=True).outputs["m"]
    assert scores[-1] == -0.4 and bool(np.isnan(scores[:-1]).all())
    (call,) = models.calls
    assert [(a.provider, a.outcome) for a in call.attempts] == [("claude", "ok")]
