"""Model nodes through the router (issue 19, item 3): the executor's `ModelEvaluator` port
answered by `RoutedModel`. With the offline provider a backtest gives exactly the bits of
the pure offline formula, in one call per model node, its tokens by the offline formula; an
answer that is not one score per bar, or no provider answering, leaves the node
undetermined (a flat target), never a guess."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from aggregates.backtests import backtest
from aggregates.ports import ModelAnswer, ModelRequest, TokenUsage
from aggregates.prop_rules import rule_set
from aggregates.strategy_executor import (
    OFFLINE_MODEL,
    Holding,
    MarketFrame,
    Strategy,
    compile_strategy,
    decide_latest,
    evaluate,
)
from aggregates.strategy_graph import ModelNode
from benchmarks.engine import frame_for, graph_for
from ingest.providers.errors import ProviderUnavailableError
from ingest.providers.model_nodes import (
    MODEL_NODE_PURPOSE,
    SCORES_SCHEMA_NAME,
    RoutedModel,
    offline_router,
    scores_request,
)
from ingest.providers.offline import tokens
from ingest.providers.router import ModelRouter, RoutingPolicy
from services.backtests import BacktestPayload, BacktestTerms, run_backtest


@pytest.fixture(scope="module")
def run() -> tuple[Strategy, MarketFrame]:
    return compile_strategy(graph_for("A0")), frame_for("A0", 600, seed=3)


def model_node(strategy: Strategy) -> ModelNode:
    (node,) = [n for n in strategy.nodes.values() if isinstance(n, ModelNode)]
    return node


def test_a_backtest_through_the_offline_provider_is_the_offline_formula_bit_for_bit(
    run: tuple[Strategy, MarketFrame],
) -> None:
    strategy, frame = run
    audition = rule_set("audition")
    models = RoutedModel(offline_router())
    routed = backtest(strategy, frame, audition, Decimal("10000"), models)
    pure = backtest(strategy, frame, audition, Decimal("10000"), OFFLINE_MODEL)
    assert routed.trades > 0
    assert routed.model_dump(exclude={"model_evaluator"}) == pure.model_dump(
        exclude={"model_evaluator"}
    )
    assert routed.model_evaluator == "router:model-node (offline)"

    # One call for the model node, every bar in it, its tokens by the offline formula.
    (call,) = models.calls
    (attempt,) = call.attempts
    assert (call.node_id, call.purpose, attempt.provider, attempt.outcome) == (
        "m",
        MODEL_NODE_PURPOSE,
        "offline",
        "ok",
    )
    ready = evaluate(strategy, frame).outputs
    inputs = {name: ready[name] for name in ("fast", "slow", "vol")}
    bars = np.flatnonzero(~np.isnan(ready["fast"] + ready["slow"] + ready["vol"]))
    assert call.bars == len(bars)
    request = scores_request(model_node(strategy), inputs, bars)
    assert call.request_hash == request.digest()
    prompt = "\n".join(message.content for message in request.messages)
    assert attempt.usage.prompt_tokens == tokens(prompt)
    assert attempt.usage.completion_tokens > 0


def test_the_same_request_gets_the_same_answer(run: tuple[Strategy, MarketFrame]) -> None:
    strategy, frame = run
    first, second = RoutedModel(offline_router()), RoutedModel(offline_router())
    a = evaluate(strategy, frame, first).outputs["m"]
    b = evaluate(strategy, frame, second).outputs["m"]
    assert np.array_equal(a, b, equal_nan=True)
    assert first.calls[0].request_hash == second.calls[0].request_hash
    assert first.usage == second.usage


def test_a_backtest_job_reports_its_model_calls(run: tuple[Strategy, MarketFrame]) -> None:
    strategy, frame = run
    payload = BacktestPayload(
        clone_id="00000000-0000-0000-0000-000000000001",  # type: ignore[arg-type]
        version_id=strategy.version,
        owner_id="00000000-0000-0000-0000-000000000002",  # type: ignore[arg-type]
        graph=graph_for("A0"),
        terms=BacktestTerms(
            bars=len(frame),
            interval="5m",
            end="2026-11-25T12:00:00Z",  # type: ignore[arg-type]
            starting_equity=Decimal("10000"),
            rule_set="audition@1",
        ),
    )
    report = run_backtest(payload.model_dump(mode="json"), frame)
    assert report.model_calls == 1
    assert report.model_prompt_tokens > 0 and report.model_completion_tokens > 0
    assert run_backtest(payload.model_dump(mode="json"), frame) == report


@dataclass
class Scripted:
    """A provider answering model nodes with whatever it is given (or failing)."""

    answers: list[Any]
    name: str = "scripted"
    model: str = "scripted-1"
    seen: list[ModelRequest] = field(default_factory=list)

    def generate(self, request: ModelRequest) -> ModelAnswer:
        self.seen.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return ModelAnswer(answer, str(answer), TokenUsage(10, 2), self.name, self.model)


def routed(provider: Scripted) -> RoutedModel:
    policy = RoutingPolicy(unavailable_retries=0)
    return RoutedModel(ModelRouter([provider], {}, [provider.name], policy, sleep=lambda _: None))


@pytest.mark.parametrize(
    "answer",
    [{"scores": []}, {"scores": "0.5"}, {"score": 0.5}, ["0.5"], {"scores": [0.5, 0.5]}],
)
def test_an_answer_that_is_not_one_score_per_bar_leaves_the_node_undetermined(
    run: tuple[Strategy, MarketFrame], answer: Any
) -> None:
    strategy, frame = run
    provider = Scripted([answer])
    decision = decide_latest(strategy, frame, Holding(), routed(provider))
    assert math.isnan(decision.outputs["m"])
    assert (provider.seen[0].schema_name, provider.seen[0].purpose) == (
        SCORES_SCHEMA_NAME,
        MODEL_NODE_PURPOSE,
    )


def test_scores_are_clipped_and_nulls_are_no_answer(run: tuple[Strategy, MarketFrame]) -> None:
    strategy, frame = run
    window = frame.tail(strategy.lookback(frame.interval))
    inputs = evaluate(strategy, window).outputs
    bars = np.array([len(window) - 2, len(window) - 1], dtype=np.int64)
    models = routed(Scripted([{"scores": [Decimal("7"), None]}]))
    scores = models.evaluate(model_node(strategy), inputs, bars)
    assert scores[0] == 7.0 and math.isnan(scores[1])  # the executor clips to [-1, 1]
    strong = decide_latest(strategy, frame, Holding(), routed(Scripted([{"scores": [7]}])))
    assert strong.outputs["m"] == 1.0


def test_no_provider_answering_is_no_answer_and_the_calls_are_kept(
    run: tuple[Strategy, MarketFrame],
) -> None:
    strategy, frame = run
    models = routed(Scripted([ProviderUnavailableError("down")]))
    decision = decide_latest(strategy, frame, Holding(), models)
    assert math.isnan(decision.outputs["m"])
    (call,) = models.calls
    assert [a.outcome for a in call.attempts] == ["unavailable"]
    assert call.records()[0]["outcome"] == "unavailable"
