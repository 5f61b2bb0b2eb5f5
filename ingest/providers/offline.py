"""The offline provider: a deterministic stand-in for a model, with no network.

The same request always gets the same answer, so `make run`, the tests and the demo need
nothing from outside. For a strategy graph it reads the request's inputs (the user's
prompt, the tradable assets and feature channels, the limits) and builds a small valid
graph from keywords in the prompt:

- asset: the first one named ("btc"/"bitcoin", "eth"/"ether", "sol"/"solana", or any
  tradable symbol), else the first tradable one in alphabetical order;
- feature channel: that asset's `return_1h`, or `return_4h` ("4h"), `volatility_1h`
  ("volatility"), `funding_rate` ("funding"); other words pick DefiLlama ("tvl") or
  Polymarket ("odds", "prediction") channels;
- transform: the first of "ema", "sma"/"moving average"/"crossover", "zscore"/"mean
  reversion", "momentum"/"trend" (pct_change), "volatility" (rolling_std), "change"/"diff"
  named, else sma; its window from "N hours"/"N bars"/"N-period" ("N days": 24 N), else
  the transform's default;
- direction: "long only", "short only", else both; size and stop from "conservative" or
  "aggressive"; leverage from "Nx"; a stop from "N% stop".

Token counts follow one fixed formula, `tokens(text) = ceil(UTF-8 bytes / 4)`: prompt
tokens are `tokens` of the messages' contents joined by newlines, completion tokens
`tokens` of the raw answer, cached tokens 0.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from aggregates.graph_schema import SCHEMA_NAME
from aggregates.ports import ModelAnswer, ModelRequest, TokenUsage
from ingest.providers.errors import ProviderRefusedRequestError

OFFLINE_NAME = "offline"
OFFLINE_MODEL = "pumpparty-offline-1"


def tokens(text: str) -> int:
    """The offline token count: one token per 4 bytes of UTF-8, rounded up."""
    return math.ceil(len(text.encode("utf-8")) / 4)


Answerer = Callable[[ModelRequest], Any]


class OfflineProvider:
    """Answers the schemas it knows (`answerers`, by schema name) deterministically."""

    def __init__(
        self,
        name: str = OFFLINE_NAME,
        model: str = OFFLINE_MODEL,
        answerers: Mapping[str, Answerer] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.answerers = dict(answerers or {SCHEMA_NAME: strategy_graph_answer})

    def generate(self, request: ModelRequest) -> ModelAnswer:
        answerer = self.answerers.get(request.schema_name)
        if answerer is None:
            known = ", ".join(sorted(self.answerers))
            raise ProviderRefusedRequestError(
                f"the offline provider answers only these schemas: {known}"
            )
        data = answerer(request)
        raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
        prompt_text = "\n".join(message.content for message in request.messages)
        usage = TokenUsage(prompt_tokens=tokens(prompt_text), completion_tokens=tokens(raw))
        return ModelAnswer(data=data, raw=raw, usage=usage, provider=self.name, model=self.model)


# --- a strategy graph from keywords -----------------------------------------------------

_ASSET_WORDS = {"BTC": ("bitcoin", "xbt"), "ETH": ("ether", "ethereum"), "SOL": ("solana",)}

_TRANSFORMS: list[tuple[str, tuple[str, ...]]] = [
    ("ema", ("ema", "exponential")),
    ("sma", ("sma", "moving average", "crossover", "cross over")),
    ("zscore", ("zscore", "z-score", "mean reversion", "mean-reversion", "revert")),
    ("pct_change", ("momentum", "trend")),
    ("rolling_std", ("volatility", "volatile")),
    ("diff", ("change", "diff")),
]

_WINDOWS = {"sma": 24, "ema": 12, "zscore": 48, "pct_change": 6, "rolling_std": 24, "diff": 1}

# (rule, long_above, short_below) per transform: returns-like series trade on their sign.
_SIGNALS = {
    "zscore": ("threshold", "1", "-1"),
    "rolling_std": ("threshold", "0.02", "0.005"),
}

_APPETITES = {
    # (size_fraction, max_position_fraction, stop_loss_fraction)
    "conservative": ("0.1", "0.1", "0.02"),
    "balanced": ("0.25", "0.25", "0.05"),
    "aggressive": ("0.5", "0.5", "0.1"),
}


def _first_match(text: str, words: tuple[str, ...]) -> int | None:
    found = [m.start() for w in words if (m := re.search(rf"\b{re.escape(w)}\b", text))]
    return min(found) if found else None


def _asset(text: str, assets: list[str]) -> str:
    named = []
    for asset in assets:
        at = _first_match(text, (asset.lower(), *_ASSET_WORDS.get(asset, ())))
        if at is not None:
            named.append((at, asset))
    return min(named)[1] if named else assets[0]


def _channel(text: str, asset: str, channels: list[str]) -> str:
    if _first_match(text, ("tvl", "aave", "lido", "defi")) is not None:
        defi = [c for c in channels if c.startswith("defillama.")]
        if defi:
            return defi[0]
    if _first_match(text, ("odds", "prediction", "polymarket")) is not None:
        odds = [c for c in channels if c.startswith("polymarket.")]
        if odds:
            return odds[0]
    feature = "return_1h"
    if _first_match(text, ("funding",)) is not None:
        feature = "funding_rate"
    elif _first_match(text, ("volatility", "volatile")) is not None:
        feature = "volatility_1h"
    elif re.search(r"\b4\s*h", text):
        feature = "return_4h"
    of_asset = [c for c in channels if f".{asset}." in c]
    wanted = [c for c in of_asset if c.endswith("." + feature)]
    return (wanted or of_asset or channels)[0]


def _transform(text: str) -> str:
    named = [
        (at, transform)
        for transform, words in _TRANSFORMS
        if (at := _first_match(text, words)) is not None
    ]
    return min(named)[1] if named else "sma"


def _window(text: str, transform: str) -> int:
    match = re.search(r"\b(\d{1,4})\s*-?\s*(hours?|hrs?|h|bars?|periods?|candles?|days?|d)\b", text)
    if match is None:
        return _WINDOWS[transform]
    count = int(match.group(1)) * (24 if match.group(2).startswith("d") else 1)
    return min(max(count, 1), 720)


def _direction(text: str) -> str:
    if re.search(r"\blong[- ]only\b|\bonly long\b|\bno shorts?\b", text):
        return "long_only"
    if re.search(r"\bshort[- ]only\b|\bonly short\b", text):
        return "short_only"
    return "long_short"


def _appetite(text: str) -> tuple[str, str, str]:
    if _first_match(text, ("conservative", "cautious", "safe", "low risk", "low-risk")) is not None:
        return _APPETITES["conservative"]
    if _first_match(text, ("aggressive", "degen", "high risk", "high-risk")) is not None:
        return _APPETITES["aggressive"]
    return _APPETITES["balanced"]


def _leverage(text: str) -> int:
    match = re.search(r"\b(\d{1,2})\s*x\b", text)
    return min(max(int(match.group(1)), 1), 20) if match else 1


def _stop(text: str, default: str) -> str:
    match = re.search(r"\b(\d{1,2}(?:\.\d{1,2})?)\s*%\s*(?:trailing\s+)?stop", text)
    if match is None:
        return default
    fraction = Decimal(match.group(1)) / 100
    if not 0 < fraction <= Decimal("0.5"):
        return default
    return format(fraction.normalize(), "f")


def strategy_graph_answer(request: ModelRequest) -> dict[str, Any]:
    """A valid strategy graph for the prompt in `request.inputs` (see the module's rules)."""
    inputs = request.inputs
    text = str(inputs.get("prompt", "")).lower()
    assets = sorted(str(a) for a in inputs.get("assets", ())) or ["BTC"]
    channels = sorted(str(c) for c in inputs.get("channels", ())) or ["hyperliquid.BTC.return_1h"]
    max_depth = int(inputs.get("max_depth", 16))
    max_nodes = int(inputs.get("max_nodes", 64))

    asset = _asset(text, assets)
    transform = _transform(text)
    rule, long_above, short_below = _SIGNALS.get(transform, ("sign", "0", "0"))
    size, max_position, stop = _appetite(text)
    # source -> [feature] -> signal -> [risk] -> action, within the depth and node limits.
    with_feature = min(max_depth, max_nodes) >= 4
    with_risk = min(max_depth, max_nodes) >= (5 if with_feature else 4)

    nodes: list[dict[str, Any]] = [
        {"id": "source", "kind": "data_source", "channel": _channel(text, asset, channels)}
    ]
    chain = ["source"]
    if with_feature:
        window = _window(text, transform)
        nodes.append(
            {"id": "feature", "kind": "feature_transform", "transform": transform, "window": window}
        )
        chain.append("feature")
    nodes.append(
        {"id": "signal", "kind": "signal", "rule": rule}
        | {"long_above": long_above, "short_below": short_below}
    )
    chain.append("signal")
    if with_risk:
        nodes.append(
            {
                "id": "risk",
                "kind": "risk_rule",
                "asset": asset,
                "max_position_fraction": max_position,
                "stop_loss_fraction": _stop(text, stop),
                "max_leverage": _leverage(text),
            }
        )
        chain.append("risk")
    nodes.append(
        {
            "id": "action",
            "kind": "action",
            "asset": asset,
            "order_type": "market",
            "direction": _direction(text),
            "size_fraction": size,
        }
    )
    chain.append("action")
    edges = [
        {"from": source, "to": target, "port": "in"} for source, target in itertools.pairwise(chain)
    ]
    return {"nodes": nodes, "edges": edges}
