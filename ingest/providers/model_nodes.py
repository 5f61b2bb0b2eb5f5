"""Model nodes through the router: the adapter behind the executor's `ModelEvaluator` port.

A graph's model node asks the router (purpose `model-node`, so `PUMPPARTY_MODEL_ROUTES`
can send it elsewhere than generation) for one score in [-1, 1] per bar it is asked
about, in one request per node and evaluation: the cadence driver asks about the latest
closed bar alone (the request's message is the node's prompt with that bar's values
filled in); a backtest asks about every bar at once (the template, then each variable's
values over the bars, oldest first), so a 5,000-bar backtest costs one call per model
node, not 5,000. The answer is `{"scores": [...]}`, one number (or null: no answer) per
bar; a missing, short or non-numeric answer, or no provider answering at all, leaves the
node undetermined at those bars (its target is flat), never a guess.

The offline provider answers this schema with the executor's offline formula (d / (1 +
|d|), d = the first variable the template names minus the others), computed from the
request's inputs with the same float operations, so a backtest through the router gives
the same bits as the pure `OfflineModel`, and its tokens follow the offline formula.

Every call the router made is kept (`calls`), for the caller to record: the cadence driver
writes them into the decision, a backtest sums them into its report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import orjson

from aggregates.graph_schema import SCHEMA_NAME
from aggregates.ports import ChatMessage, ModelRequest, TokenUsage
from aggregates.strategy_executor import FloatArray, IntArray, render_prompt, template_variables
from aggregates.strategy_graph import ModelNode
from ingest.providers.offline import OFFLINE_NAME, OfflineProvider, strategy_graph_answer
from ingest.providers.router import Attempt, ModelRouter, ModelsUnavailableError, Routed

MODEL_NODE_PURPOSE = "model-node"
SCORES_SCHEMA_NAME = "model_node_scores"
SCORES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "scores": {
            "type": "array",
            "description": "one score per bar, oldest first: -1 short .. 1 long, null unknown",
            "items": {"type": ["number", "null"]},
        }
    },
    "required": ["scores"],
    "additionalProperties": False,
}
INSTRUCTIONS = (
    "You are one node of a trading strategy. For each bar you are given, answer a score"
    " from -1 (go short) to 1 (go long), or null when the values do not tell. Answer JSON"
    ' {"scores": [...]} with exactly one score per bar, oldest bar first.'
)


class ModelRouting(Protocol):
    def route(self, request: ModelRequest) -> Routed: ...

    def route_for(self, purpose: str) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class ModelNodeCall:
    """One request of a model node and every provider call the router made for it."""

    node_id: str
    purpose: str
    request_hash: str
    bars: int
    attempts: tuple[Attempt, ...]

    @property
    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for attempt in self.attempts:
            total = total + attempt.usage
        return total

    def records(self) -> list[dict[str, Any]]:
        """The calls as plain JSON data (what a decision event carries)."""
        return [
            {
                "node_id": self.node_id,
                "purpose": self.purpose,
                "provider": attempt.provider,
                "model": attempt.model,
                "request_hash": self.request_hash,
                "prompt_tokens": attempt.usage.prompt_tokens,
                "completion_tokens": attempt.usage.completion_tokens,
                "cached_tokens": attempt.usage.cached_tokens,
                "outcome": attempt.outcome,
                "detail": attempt.detail,
                "retry_after_ms": None
                if attempt.retry_after is None
                else int(attempt.retry_after * 1000),
                "duration_ms": attempt.duration_ms,
            }
            for attempt in self.attempts
        ]


def scores_request(
    node: ModelNode,
    inputs: Mapping[str, FloatArray],
    bars: IntArray,
    purpose: str = MODEL_NODE_PURPOSE,
) -> ModelRequest:
    """The request asking `node` about `bars` (indexes into its input series)."""
    names = template_variables(node)
    values = {name: _floats(inputs[name][bars]) for name in names}
    if len(bars) == 1:
        at = int(bars[0])
        content = render_prompt(node, {name: float(inputs[name][at]) for name in names})
    else:
        table = orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()
        content = (
            f"{node.prompt.template}\n\nThe variables over {len(bars)} bars, oldest first:\n{table}"
        )
    return ModelRequest(
        purpose=purpose,
        messages=(ChatMessage("system", INSTRUCTIONS), ChatMessage("user", content)),
        schema_name=SCORES_SCHEMA_NAME,
        json_schema=SCORES_SCHEMA,
        inputs={"node": node.id, "variables": names, "values": values},
        max_tokens=min(node.max_tokens * len(bars), 64 * 1024),
        temperature=node.temperature,
    )


def _floats(array: FloatArray) -> list[float | None]:
    # JSON has no NaN or infinity: those travel as null and come back as NaN.
    values: list[float | None] = array.tolist()
    if bool(np.isfinite(array).all()):
        return values
    return [v if v is not None and math.isfinite(v) else None for v in values]


_FLOATS = frozenset({float, type(None)})


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an integer past float's range (10**400): no score to read
        return math.nan


def _array(values: Sequence[Any]) -> FloatArray:
    """Numbers (decimals too: the OpenAI-compatible provider parses them so) as floats;
    null, anything not a number, and a number that is no finite float (an integer or a
    decimal past float's range, an infinity) as NaN: undetermined, like a malformed answer."""
    if set(map(type, values)) <= _FLOATS:
        array = np.array(values, dtype=np.float64)  # None becomes NaN
    else:
        array = np.array([_number(v) for v in values], dtype=np.float64)
    array[~np.isfinite(array)] = math.nan
    return array


def offline_scores(request: ModelRequest) -> dict[str, Any]:
    """The offline provider's answer to a model node: the executor's offline formula."""
    names: list[str] = list(request.inputs.get("variables", []))
    values: Mapping[str, Sequence[Any]] = request.inputs.get("values", {})
    if not names:
        bars = len(next(iter(values.values()), []))
        return {"scores": [0.0] * bars}
    d = _array(values[names[0]])
    for name in names[1:]:
        d -= _array(values[name])
    scores: FloatArray = d / (1.0 + np.abs(d))
    return {"scores": _floats(scores)}


def offline_provider() -> OfflineProvider:
    """The offline provider answering strategy graphs and model nodes."""
    return OfflineProvider(
        answerers={SCHEMA_NAME: strategy_graph_answer, SCORES_SCHEMA_NAME: offline_scores}
    )


def offline_router() -> ModelRouter:
    """A router with the offline provider alone: what backtests use by default, so a report
    is the same on any worker."""
    return ModelRouter([offline_provider()], {}, [OFFLINE_NAME])


class RoutedModel:
    """The `ModelEvaluator` port through a router. One instance per evaluation: it keeps the
    calls it made (`calls`) for the caller to record."""

    def __init__(self, router: ModelRouting, purpose: str = MODEL_NODE_PURPOSE) -> None:
        self.router = router
        self.purpose = purpose
        self.calls: list[ModelNodeCall] = []

    @property
    def name(self) -> str:
        return f"router:{self.purpose} ({', '.join(self.router.route_for(self.purpose))})"

    @property
    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for call in self.calls:
            total = total + call.usage
        return total

    def evaluate(
        self, node: ModelNode, inputs: Mapping[str, FloatArray], bars: IntArray
    ) -> FloatArray:
        request = scores_request(node, inputs, bars, self.purpose)
        try:
            routed = self.router.route(request)
        except ModelsUnavailableError as error:
            self.calls.append(
                ModelNodeCall(node.id, self.purpose, error.request_hash, len(bars), error.attempts)
            )
            return np.full(len(bars), math.nan)
        self.calls.append(
            ModelNodeCall(node.id, self.purpose, routed.request_hash, len(bars), routed.attempts)
        )
        data = routed.answer.data
        scores = data.get("scores") if isinstance(data, dict) else None
        if not isinstance(scores, list) or len(scores) != len(bars):
            return np.full(len(bars), math.nan)
        return _array(scores)
