"""The offline provider: no network, the same request gets the same answer, and the graph
it builds from a prompt passes every guardrail."""

from __future__ import annotations

import math

import pytest

from aggregates.ports import ChatMessage, ModelRequest
from aggregates.strategy_graph import GraphRules, check_graph
from api.routers.clones import graph_rules
from ingest.providers.errors import ProviderRefusedRequestError
from ingest.providers.offline import OfflineProvider, tokens
from runtime.settings import Settings
from services.prompts import PROMPT_V1
from tests.support.clones import RULES

DEFAULT_RULES = graph_rules(Settings())

PROMPTS = [
    "Buy bitcoin when the 20-period SMA of hourly returns is positive",
    "ETH momentum over 12 hours, long only, 3x leverage, 2% stop",
    "mean reversion on solana with a z-score over 3 days, conservative",
    "aggressive EMA crossover on ETH using the 4h return",
    "trade BTC funding rate extremes",
    "follow aave TVL changes",
    "use prediction market odds",
    "something vague with no keywords at all",
    "Ünïcödé ☃ prompt: short only volatility breakout on SOL",
]


def ask(prompt: str, rules: GraphRules = DEFAULT_RULES) -> ModelRequest:
    return PROMPT_V1.request(prompt, rules, max_tokens=4096)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_graph_from_any_prompt_passes_every_guardrail(prompt: str) -> None:
    answer = OfflineProvider().generate(ask(prompt))

    check_graph(answer.data, DEFAULT_RULES)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_graph_keeps_to_a_smaller_catalog(prompt: str) -> None:
    answer = OfflineProvider().generate(ask(prompt, RULES))

    check_graph(answer.data, RULES)


def test_the_same_prompt_gets_the_same_graph_raw_text_and_usage() -> None:
    first = OfflineProvider().generate(ask(PROMPTS[1]))

    again = OfflineProvider().generate(ask(PROMPTS[1]))

    assert (again.data, again.raw, again.usage) == (first.data, first.raw, first.usage)


def test_keywords_pick_the_asset_transform_window_direction_and_leverage() -> None:
    graph = OfflineProvider().generate(ask(PROMPTS[1])).data

    nodes = {node["id"]: node for node in graph["nodes"]}
    assert nodes["source"]["channel"] == "hyperliquid.ETH.return_1h"
    assert (nodes["feature"]["transform"], nodes["feature"]["window"]) == ("pct_change", 12)
    assert nodes["action"]["asset"] == "ETH" and nodes["action"]["direction"] == "long_only"
    assert nodes["risk"]["max_leverage"] == 3 and nodes["risk"]["stop_loss_fraction"] == "0.02"


def test_days_are_counted_in_hourly_bars() -> None:
    graph = OfflineProvider().generate(ask(PROMPTS[2])).data

    feature = next(node for node in graph["nodes"] if node["id"] == "feature")
    assert (feature["transform"], feature["window"]) == ("zscore", 72)


def test_tokens_follow_the_documented_formula() -> None:
    request = ask("Ünïcödé ☃ and BTC")

    answer = OfflineProvider().generate(request)

    sent = "\n".join(message.content for message in request.messages).encode("utf-8")
    assert answer.usage.prompt_tokens == math.ceil(len(sent) / 4)
    assert answer.usage.completion_tokens == math.ceil(len(answer.raw.encode("utf-8")) / 4)
    assert answer.usage.cached_tokens == 0
    assert tokens("☃") == 1 and tokens("abcde") == 2


def test_tight_limits_give_a_shorter_graph_that_still_passes() -> None:
    rules = GraphRules(3, 2, 3, DEFAULT_RULES.channels, DEFAULT_RULES.assets)

    answer = OfflineProvider().generate(ask("BTC sma", rules))

    assert [node["kind"] for node in answer.data["nodes"]] == ["data_source", "signal", "action"]
    check_graph(answer.data, rules)


def test_a_schema_it_does_not_know_is_refused() -> None:
    request = ModelRequest("other", (ChatMessage("user", "hi"),), "score", {})

    with pytest.raises(ProviderRefusedRequestError, match="strategy_graph"):
        OfflineProvider().generate(request)
