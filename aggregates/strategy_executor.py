"""The strategy executor: a published strategy graph run over closed candles with numpy.

`compile_strategy` reads a graph (canonical JSON or parsed) once: `graphlib` orders its
nodes, the action names the traded asset, the risk rules give the position's limits.
`evaluate` runs every node as one vectorised step over the frame's bar timeline. A step
at bar i reads bars i-w+1..i of its inputs only (trailing windows), so nothing computed at
a bar can depend on a later bar. Windows are summed element by element in a fixed order
(no re-association across elements), so a bar's value is the same bits whether the frame
holds its trailing `lookback` bars or ten years: `decide_latest` (what the cadence driver
calls for one account and asset each closed bar) evaluates only the latest `lookback` bars
and gets exactly what a backtest over the whole history decides at that bar.

Nodes, per bar (undetermined values are NaN and propagate; an undetermined target is flat):
- data_source: a channel as of the bar's close. Channels of the candle source are computed
  from the frame's candles: `<source>.<coin>.open|high|low|close|volume`, `return_<w>` (the
  close over the close `w` earlier, minus one) and `volatility_<w>` (square root of the sum
  of squared simple returns of consecutive closes over `w`), ingest/channels.py's
  definitions, so a backtest reaches as far back as its candles do. Any other channel is
  its stored value (feature_values) as of the bar's close.
- feature_transform over the trailing `window` bars: sma; ema (weights (1-a)^k, a =
  2/(window+1), over the window only, normalised); zscore ((x - mean) / population std, 0
  when the window is flat); rolling_std (population); rolling_min; rolling_max; diff and
  pct_change against the value `window` bars earlier.
- model: through a `ModelEvaluator` (the port a provider adapter implements); the default,
  `OfflineModel`, is deterministic: d / (1 + |d|) where d is the first variable the template
  names minus the others (no network, no randomness, no clock).
- signal: `threshold`: +1 above long_above, -1 below short_below, 0 between; `sign`: its sign.
- risk_rule: passes its signal on; its limits hold for the action's position (`Limits`).
- action: the mean of its signals (each clipped to [-1, 1]), kept to its direction, times
  size_fraction, capped at the tightest max_position_fraction: the raw target exposure (a
  fraction of equity; negative is short). `policy_step` then applies the stop-loss.

Pure: numpy and the standard library; the clock, prices and model answers come in.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from graphlib import CycleError, TopologicalSorter
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import ValidationError

from aggregates.errors import InvalidCommandError
from aggregates.strategy_graph import (
    PLACEHOLDER,
    ActionNode,
    DataSourceNode,
    FeatureTransformNode,
    GraphNode,
    ModelNode,
    RiskRuleNode,
    SignalNode,
    StrategyGraph,
    canonical_document,
    graph_digest,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

CANDLE_SOURCE = "hyperliquid"
"""The source whose candles the market-data store keeps (ingest/sources.py)."""
CANDLE_FIELDS = ("open", "high", "low", "close", "volume")
_CANDLE_FEATURE = re.compile(r"^(return|volatility)_([1-9][0-9]{0,3})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}

INTERVAL_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
"""The candle intervals ingestion stores (`PUMPPARTY_INGEST_CANDLE_INTERVAL`)."""


class GraphNotExecutableError(InvalidCommandError):
    """The graph passed the guardrails but cannot run here (a risk rule guarding another
    asset than the action trades, a channel window that is no whole number of bars)."""

    code = "graph-not-executable"


# --- market data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bars:
    """One instrument's candles on the frame's bar timeline (NaN where it has none)."""

    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def field(self, name: str) -> FloatArray:
        array: FloatArray = getattr(self, name)
        return array

    def sliced(self, part: slice) -> Bars:
        return Bars(*(self.field(name)[part] for name in CANDLE_FIELDS))


@dataclass(frozen=True)
class MarketFrame:
    """Closed candles of the traded asset (its bars are the timeline), the candles of other
    instruments and the stored channels a graph reads, aligned to those bars, and the
    asset's funding rate summed over each bar (0 where none was paid)."""

    asset: str
    interval: str
    open_time: IntArray
    """Each bar's open, in milliseconds since the epoch."""
    close_time: IntArray
    """Each bar's close (the candle's `T`), in milliseconds since the epoch."""
    candles: Mapping[str, Bars]
    channels: Mapping[str, FloatArray] = field(default_factory=dict)
    funding: FloatArray | None = None
    source: str = CANDLE_SOURCE

    def __post_init__(self) -> None:
        n = len(self.open_time)
        if self.asset not in self.candles:
            raise GraphNotExecutableError(f"the frame has no candles of {self.asset}")
        arrays = [self.close_time, *self.channels.values()]
        arrays += [bars.field(name) for bars in self.candles.values() for name in CANDLE_FIELDS]
        if self.funding is not None:
            arrays.append(self.funding)
        if any(len(array) != n for array in arrays):
            raise ValueError("every array of a market frame has one value per bar")

    def __len__(self) -> int:
        return len(self.open_time)

    @property
    def interval_seconds(self) -> int:
        return INTERVAL_SECONDS[self.interval]

    @property
    def bars(self) -> Bars:
        return self.candles[self.asset]

    @property
    def funding_rates(self) -> FloatArray:
        return self.funding if self.funding is not None else np.zeros(len(self))

    def sliced(self, part: slice) -> MarketFrame:
        return replace(
            self,
            open_time=self.open_time[part],
            close_time=self.close_time[part],
            candles={name: bars.sliced(part) for name, bars in self.candles.items()},
            channels={name: values[part] for name, values in self.channels.items()},
            funding=None if self.funding is None else self.funding[part],
        )

    def head(self, n: int) -> MarketFrame:
        return self.sliced(slice(0, n))

    def tail(self, n: int) -> MarketFrame:
        return self.sliced(slice(max(len(self) - n, 0), None))

    def digest(self) -> str:
        """SHA-256 of everything the frame holds, in a fixed order and byte layout: the hash
        of the market data a backtest used."""
        digest = hashlib.sha256()
        header = {
            "asset": self.asset,
            "interval": self.interval,
            "source": self.source,
            "instruments": sorted(self.candles),
            "channels": sorted(self.channels),
            "funding": self.funding is not None,
            "bars": len(self),
        }
        digest.update(orjson.dumps(header, option=orjson.OPT_SORT_KEYS))
        digest.update(self.open_time.astype("<i8").tobytes())
        digest.update(self.close_time.astype("<i8").tobytes())
        for name in sorted(self.candles):
            for column in CANDLE_FIELDS:
                digest.update(self.candles[name].field(column).astype("<f8").tobytes())
        for name in sorted(self.channels):
            digest.update(self.channels[name].astype("<f8").tobytes())
        if self.funding is not None:
            digest.update(self.funding.astype("<f8").tobytes())
        return digest.hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (NaN as null); `frame_from_json` reads it back bit for bit."""

        def floats(array: FloatArray) -> list[float | None]:
            return [None if math.isnan(v) else v for v in array.tolist()]

        return {
            "asset": self.asset,
            "interval": self.interval,
            "source": self.source,
            "open_time": self.open_time.tolist(),
            "close_time": self.close_time.tolist(),
            "candles": {
                name: {column: floats(bars.field(column)) for column in CANDLE_FIELDS}
                for name, bars in self.candles.items()
            },
            "channels": {name: floats(values) for name, values in self.channels.items()},
            "funding": None if self.funding is None else floats(self.funding),
        }


def frame_from_json(data: Mapping[str, Any]) -> MarketFrame:
    """A frame sent as `MarketFrame.to_json` (a remote backtest worker's inputs)."""

    def floats(values: Sequence[float | None]) -> FloatArray:
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

    try:
        return MarketFrame(
            asset=str(data["asset"]),
            interval=str(data["interval"]),
            source=str(data["source"]),
            open_time=np.array(data["open_time"], dtype=np.int64),
            close_time=np.array(data["close_time"], dtype=np.int64),
            candles={
                str(name): Bars(*(floats(columns[c]) for c in CANDLE_FIELDS))
                for name, columns in data["candles"].items()
            },
            channels={str(k): floats(v) for k, v in data["channels"].items()},
            funding=None if data.get("funding") is None else floats(data["funding"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise GraphNotExecutableError(f"not a market frame: {error}") from None


def as_of(
    bar_times: IntArray, times: IntArray, values: FloatArray, max_age: int | None = None
) -> FloatArray:
    """Each bar's newest value observed at or before its time (ms), NaN before the first
    (or when older than `max_age` ms). `times` ascending."""
    out = np.full(len(bar_times), np.nan)
    if len(times) == 0:
        return out
    index = np.searchsorted(times, bar_times, side="right") - 1
    found = index >= 0
    out[found] = values[index[found]]
    if max_age is not None:
        stale = found & (bar_times - times[np.maximum(index, 0)] > max_age)
        out[stale] = np.nan
    return out


def per_bar_sum(
    open_time: IntArray, close_time: IntArray, times: IntArray, values: FloatArray
) -> FloatArray:
    """The sum of the values whose time falls within each bar (open <= t <= close)."""
    out = np.zeros(len(open_time))
    if len(times) == 0 or len(open_time) == 0:
        return out
    index = np.searchsorted(open_time, times, side="right") - 1
    inside = (index >= 0) & (times <= close_time[np.maximum(index, 0)])
    np.add.at(out, index[inside], values[inside])
    return out


# --- channels ------------------------------------------------------------------------------

ChannelKind = Literal["field", "return", "volatility", "stored"]


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    kind: ChannelKind
    instrument: str = ""
    column: str = ""
    window_seconds: int = 0

    def bars(self, interval_seconds: int) -> int:
        """The candle channel's window in bars."""
        if self.window_seconds % interval_seconds:
            raise GraphNotExecutableError(
                f"{self.name}: its window is no whole number of {interval_seconds}s bars"
            )
        return self.window_seconds // interval_seconds

    def lookback(self, interval_seconds: int) -> int:
        return 1 if self.kind in ("field", "stored") else self.bars(interval_seconds) + 1


def channel_spec(name: str, candle_source: str = CANDLE_SOURCE) -> ChannelSpec:
    """How a channel is read: from the candles of `candle_source`, or stored."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == candle_source:
        instrument, feature = ".".join(parts[1:-1]), parts[-1]
        if feature in CANDLE_FIELDS:
            return ChannelSpec(name, "field", instrument, feature)
        match = _CANDLE_FEATURE.match(feature)
        if match:
            kind: ChannelKind = "return" if match[1] == "return" else "volatility"
            seconds = int(match[2]) * _UNIT_SECONDS[match[3]]
            return ChannelSpec(name, kind, instrument, window_seconds=seconds)
    return ChannelSpec(name, "stored")


def _shifted_ratio(x: FloatArray, k: int) -> FloatArray:
    out = np.full(len(x), np.nan)
    if 0 < k < len(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            before = x[:-k]
            out[k:] = np.where(before != 0, x[k:] / np.where(before != 0, before, 1.0) - 1, np.nan)
    return out


def channel_values(spec: ChannelSpec, frame: MarketFrame) -> FloatArray:
    n = len(frame)
    if spec.kind == "stored":
        return frame.channels.get(spec.name, np.full(n, np.nan))
    bars = frame.candles.get(spec.instrument)
    if bars is None:
        return np.full(n, np.nan)
    if spec.kind == "field":
        return bars.field(spec.column)
    k = spec.bars(frame.interval_seconds)
    if spec.kind == "return":
        return _shifted_ratio(bars.close, k)
    step = _shifted_ratio(bars.close, 1)
    return np.sqrt(_window_sum(step * step, k))


# --- trailing windows, summed element by element in a fixed order --------------------------


def _window_sum(x: FloatArray, w: int, weights: Sequence[float] | None = None) -> FloatArray:
    """out[i] = sum of x[i-w+1..i] (times weights[0..w-1], oldest first), added oldest
    first; NaN for i < w-1."""
    n = len(x)
    out = np.full(n, np.nan)
    if w > n:
        return out
    m = n - w + 1
    total = x[0:m].copy() if weights is None else x[0:m] * weights[0]
    for k in range(1, w):
        part = x[k : k + m]
        total += part if weights is None else part * weights[k]
    out[w - 1 :] = total
    return out


def _window_extreme(x: FloatArray, w: int, pick: Any) -> FloatArray:
    n = len(x)
    out = np.full(n, np.nan)
    if w > n:
        return out
    m = n - w + 1
    best = x[0:m].copy()
    for k in range(1, w):
        best = pick(best, x[k : k + m])
    out[w - 1 :] = best
    return out


def _window_std(x: FloatArray, w: int, mean: FloatArray) -> FloatArray:
    """Population standard deviation: two passes (the mean, then squared deviations)."""
    n = len(x)
    out = np.full(n, np.nan)
    if w > n:
        return out
    m = n - w + 1
    centre = mean[w - 1 :]
    total = np.zeros(m)
    for k in range(w):
        deviation = x[k : k + m] - centre
        total += deviation * deviation
    out[w - 1 :] = np.sqrt(total / w)
    return out


def _ema_weights(w: int) -> list[float]:
    alpha = 2.0 / (w + 1)
    raw = [(1.0 - alpha) ** (w - 1 - k) for k in range(w)]  # oldest first
    total = math.fsum(raw)
    return [r / total for r in raw]


def transform(node: FeatureTransformNode, x: FloatArray) -> FloatArray:
    w = node.window
    if node.transform == "sma":
        return _window_sum(x, w) / w
    if node.transform == "ema":
        return _window_sum(x, w, _ema_weights(w))
    if node.transform in ("zscore", "rolling_std"):
        mean = _window_sum(x, w) / w
        std = _window_std(x, w, mean)
        if node.transform == "rolling_std":
            return std
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1.0), 0.0)
        z[np.isnan(std)] = np.nan
        return z
    if node.transform == "rolling_min":
        return _window_extreme(x, w, np.minimum)
    if node.transform == "rolling_max":
        return _window_extreme(x, w, np.maximum)
    if node.transform == "diff":
        out = np.full(len(x), np.nan)
        if w < len(x):
            out[w:] = x[w:] - x[:-w]
        return out
    return _shifted_ratio(x, w)  # pct_change


# --- models ---------------------------------------------------------------------------------


def template_variables(node: ModelNode) -> list[str]:
    """The prompt's variables in the order its template first names them."""
    seen: dict[str, None] = {}
    for name in PLACEHOLDER.findall(node.prompt.template):
        seen.setdefault(name, None)
    return list(seen)


def render_prompt(node: ModelNode, values: Mapping[str, float]) -> str:
    """The prompt with each `{{variable}}` replaced by its value at one bar (what a provider
    adapter sends; NaN is written `unknown`)."""

    def value(match: re.Match[str]) -> str:
        number = values.get(match[1], math.nan)
        return "unknown" if math.isnan(number) else repr(float(number))

    return PLACEHOLDER.sub(value, node.prompt.template)


class ModelEvaluator(Protocol):
    """The port a model node calls. `inputs` holds each bound variable's series over the
    frame's bars; answer a score in [-1, 1] (or NaN: no answer) for each bar in `bars`
    (indexes into those series), from that bar's values and earlier ones only."""

    @property
    def name(self) -> str: ...

    def evaluate(
        self, node: ModelNode, inputs: Mapping[str, FloatArray], bars: IntArray
    ) -> FloatArray: ...


class OfflineModel:
    """The deterministic default: d / (1 + |d|), d = the first variable the template names
    minus the sum of the others; a model without variables answers 0. The same inputs give
    the same bits every time, on any machine (additions and one division per bar)."""

    name = "offline-deterministic@1: d/(1+|d|), d = first template variable - the others"

    def evaluate(
        self, node: ModelNode, inputs: Mapping[str, FloatArray], bars: IntArray
    ) -> FloatArray:
        names = template_variables(node)
        if not names:
            return np.zeros(len(bars))
        d = inputs[names[0]][bars].copy()
        for name in names[1:]:
            d -= inputs[name][bars]
        result: FloatArray = d / (1.0 + np.abs(d))
        return result


OFFLINE_MODEL = OfflineModel()


# --- the compiled strategy ----------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The risk rules' limits on the action's position: the exposure cap (the tightest
    max_position_fraction), the stop (the tightest stop_loss_fraction: a position whose
    bar closes that far against its entry price is closed at the next open, and the
    strategy stays out until its signal leaves that direction), and the leverage the
    orders ask for (the lowest max_leverage; 1 without risk rules)."""

    cap: float = 1.0
    stop_loss: float | None = None
    leverage: int = 1


@dataclass(frozen=True)
class Strategy:
    graph: StrategyGraph
    version: str
    """The graph's id: SHA-256 of its canonical JSON."""
    order: tuple[str, ...]
    nodes: Mapping[str, GraphNode]
    inputs: Mapping[str, Mapping[str, tuple[str, ...]]]
    """Per node, per input port, the nodes feeding it (in edge order)."""
    action: ActionNode
    limits: Limits

    @property
    def asset(self) -> str:
        return self.action.asset

    def channels(self, candle_source: str = CANDLE_SOURCE) -> list[ChannelSpec]:
        return [
            channel_spec(node.channel, candle_source)
            for node in self.nodes.values()
            if isinstance(node, DataSourceNode)
        ]

    def instruments(self, candle_source: str = CANDLE_SOURCE) -> list[str]:
        """Whose candles the graph reads: the asset's, then its candle channels'."""
        names = [self.asset]
        for spec in self.channels(candle_source):
            if spec.kind != "stored" and spec.instrument not in names:
                names.append(spec.instrument)
        return names

    def stored_channels(self, candle_source: str = CANDLE_SOURCE) -> list[str]:
        return sorted({s.name for s in self.channels(candle_source) if s.kind == "stored"})

    def lookback(self, interval: str, candle_source: str = CANDLE_SOURCE) -> int:
        """How many bars, the current one included, a decision reads: evaluate the latest
        this many bars and the last bar's decision is the one the whole history gives."""
        seconds = INTERVAL_SECONDS[interval]
        need: dict[str, int] = {}
        for node_id in self.order:
            node = self.nodes[node_id]
            upstream = max(
                (need[s] for sources in self.inputs[node_id].values() for s in sources),
                default=1,
            )
            if isinstance(node, DataSourceNode):
                need[node_id] = channel_spec(node.channel, candle_source).lookback(seconds)
            elif isinstance(node, FeatureTransformNode):
                extra = node.window if node.transform in ("diff", "pct_change") else node.window - 1
                need[node_id] = upstream + extra
            else:
                need[node_id] = upstream
        return need[self.action.id]


def compile_strategy(graph: StrategyGraph | Mapping[str, Any]) -> Strategy:
    """Read a (published, so checked) graph for execution."""
    if not isinstance(graph, StrategyGraph):
        try:
            graph = StrategyGraph.model_validate(graph)
        except ValidationError as error:
            detail = error.errors()[0]["msg"]
            raise GraphNotExecutableError(f"not a strategy graph: {detail}") from None
    nodes: dict[str, GraphNode] = {node.id: node for node in graph.nodes}
    inputs: dict[str, dict[str, list[str]]] = {node_id: {} for node_id in nodes}
    sorter: TopologicalSorter[str] = TopologicalSorter({node_id: () for node_id in nodes})
    for edge in graph.edges:
        if edge.source not in nodes or edge.target not in nodes:
            raise GraphNotExecutableError(
                f"an edge joins unknown nodes: {edge.source} -> {edge.target}"
            )
        inputs[edge.target].setdefault(edge.port, []).append(edge.source)
        sorter.add(edge.target, edge.source)
    try:
        order = tuple(sorter.static_order())
    except CycleError:
        raise GraphNotExecutableError("the graph has a cycle") from None
    actions = [node for node in nodes.values() if isinstance(node, ActionNode)]
    if len(actions) != 1:
        raise GraphNotExecutableError("a graph runs with exactly one action node")
    action = actions[0]
    for node_id, node in nodes.items():
        missing = [port for port in node.inputs() if not inputs[node_id].get(port)]
        if missing:
            raise GraphNotExecutableError(f"{node_id}: nothing feeds {', '.join(missing)}")
    risks = [node for node in nodes.values() if isinstance(node, RiskRuleNode)]
    for risk in risks:
        if risk.asset != action.asset:
            raise GraphNotExecutableError(
                f"risk rule {risk.id} guards {risk.asset}, but the action trades {action.asset}"
            )
    limits = Limits(
        cap=min((float(r.max_position_fraction) for r in risks), default=1.0),
        stop_loss=min((float(r.stop_loss_fraction) for r in risks), default=None),
        leverage=min((r.max_leverage for r in risks), default=1),
    )
    return Strategy(
        graph=graph,
        version=graph_digest(canonical_document(graph)),
        order=order,
        nodes=nodes,
        inputs={k: {p: tuple(s) for p, s in v.items()} for k, v in inputs.items()},
        action=action,
        limits=limits,
    )


# --- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    outputs: Mapping[str, FloatArray]
    """Every node's value per bar; the action's is the raw target exposure."""
    target: FloatArray
    warmup: int
    """Leading bars whose target is undetermined (the windows are still filling)."""
    missing_channels: tuple[str, ...]
    """Channels with no value at any bar of the frame."""


def evaluate(
    strategy: Strategy,
    frame: MarketFrame,
    evaluator: ModelEvaluator = OFFLINE_MODEL,
    *,
    latest_only: bool = False,
) -> Evaluation:
    """Every node over every bar of `frame` (with `latest_only`, models answer for the last
    bar alone: the cadence driver's one call per bar)."""
    if frame.asset != strategy.asset:
        raise GraphNotExecutableError(
            f"the frame's bars are {frame.asset}'s; the graph trades {strategy.asset}"
        )
    n = len(frame)
    outputs: dict[str, FloatArray] = {}
    missing: list[str] = []
    for node_id in strategy.order:
        node = strategy.nodes[node_id]
        ports = {
            port: [outputs[s] for s in sources]
            for port, sources in strategy.inputs[node_id].items()
        }
        if isinstance(node, DataSourceNode):
            values = channel_values(channel_spec(node.channel, frame.source), frame)
            if n and bool(np.isnan(values).all()):
                missing.append(node.channel)
            outputs[node_id] = values
        elif isinstance(node, FeatureTransformNode):
            outputs[node_id] = transform(node, ports["in"][0])
        elif isinstance(node, ModelNode):
            outputs[node_id] = _model(node, ports, n, evaluator, latest_only)
        elif isinstance(node, SignalNode):
            outputs[node_id] = _signal(node, ports["in"][0])
        elif isinstance(node, RiskRuleNode):
            outputs[node_id] = np.clip(ports["in"][0], -1.0, 1.0)
        elif isinstance(node, ActionNode):
            outputs[node_id] = _action(node, ports["in"], strategy.limits)
    target = outputs[strategy.action.id]
    determined = np.flatnonzero(~np.isnan(target))
    warmup = int(determined[0]) if determined.size else n
    return Evaluation(outputs, target, warmup, tuple(sorted(set(missing))))


def _model(
    node: ModelNode,
    ports: Mapping[str, list[FloatArray]],
    n: int,
    evaluator: ModelEvaluator,
    latest_only: bool,
) -> FloatArray:
    inputs = {name: values[0] for name, values in ports.items()}
    ready = np.ones(n, dtype=bool)
    for values in inputs.values():
        ready &= ~np.isnan(values)
    if latest_only:
        ready[: max(n - 1, 0)] = False
    bars = np.flatnonzero(ready).astype(np.int64)
    out = np.full(n, np.nan)
    if bars.size:
        scores = np.asarray(evaluator.evaluate(node, inputs, bars), dtype=np.float64)
        out[bars] = np.clip(scores, -1.0, 1.0)
    return out


def _signal(node: SignalNode, x: FloatArray) -> FloatArray:
    if node.rule == "sign":
        return np.sign(x)
    long_above, short_below = float(node.long_above), float(node.short_below)
    out = np.where(x > long_above, 1.0, np.where(x < short_below, -1.0, 0.0))
    out[np.isnan(x)] = np.nan
    return out


def _action(node: ActionNode, signals: list[FloatArray], limits: Limits) -> FloatArray:
    total = np.clip(signals[0], -1.0, 1.0)
    for signal in signals[1:]:
        total = total + np.clip(signal, -1.0, 1.0)
    combined = total / len(signals)
    if node.direction == "long_only":
        combined = np.maximum(combined, 0.0)
    elif node.direction == "short_only":
        combined = np.minimum(combined, 0.0)
    exposure = combined * float(node.size_fraction)
    return np.clip(exposure, -limits.cap, limits.cap)


# --- the position policy: the stop-loss ------------------------------------------------------


class Holding(NamedTuple):
    """The position a decision starts from: units held (negative: short), their average
    entry price, and the direction a stop-loss closed (+1 or -1; 0 when none is in force)."""

    units: float = 0.0
    entry_price: float = math.nan
    stopped: int = 0


def _sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


def adverse(limits: Limits, holding: Holding, close: float) -> bool:
    """Has the bar closed at or beyond the stop, against the position?"""
    if limits.stop_loss is None or holding.units == 0 or math.isnan(holding.entry_price):
        return False
    if holding.units > 0:
        return close <= holding.entry_price * (1.0 - limits.stop_loss)
    return close >= holding.entry_price * (1.0 + limits.stop_loss)


def policy_step(
    limits: Limits, holding: Holding, raw_target: float, close: float
) -> tuple[float, int]:
    """The target exposure at a bar's close and the stop in force after it.

    An undetermined raw target is flat. A stop in force keeps the strategy flat while its
    signal stays in the stopped direction, and lifts once it leaves it. A position whose
    bar closed at or beyond the stop, while the signal still holds its direction, is
    stopped: the target is flat and the stop is in force."""
    x = 0.0 if math.isnan(raw_target) else float(raw_target)
    side = _sign(x)
    if holding.stopped:
        if side == holding.stopped:
            return 0.0, holding.stopped
    elif side != 0 and side == _sign(holding.units) and adverse(limits, holding, close):
        return 0.0, side
    return x, 0


@dataclass(frozen=True)
class Decision:
    """The decision at one closed bar: what the cadence driver submits at the next open."""

    bar_open_time: int
    bar_close_time: int
    close: float
    raw_target: float
    """The graph's target exposure before the stop (NaN: undetermined)."""
    target_exposure: float
    """The position to hold from the next open, as a fraction of equity (negative: short)."""
    stopped: int
    """The stop in force after this bar: carry it into the next decision's `Holding`."""
    leverage: int
    outputs: Mapping[str, float]
    """Every node's value at the bar."""

    @property
    def determined(self) -> bool:
        return not math.isnan(self.raw_target)


def decide_latest(
    strategy: Strategy,
    frame: MarketFrame,
    holding: Holding,
    evaluator: ModelEvaluator = OFFLINE_MODEL,
) -> Decision:
    """The decision at the frame's last (closed) bar for an account holding `holding`: only
    the latest `lookback` bars are evaluated, and models are asked about the last bar only."""
    if len(frame) == 0:
        raise GraphNotExecutableError(f"no closed candle of {frame.asset} to decide on")
    window = frame.tail(strategy.lookback(frame.interval, frame.source))
    evaluation = evaluate(strategy, window, evaluator, latest_only=True)
    last = len(window) - 1
    close = float(window.bars.close[last])
    raw = float(evaluation.target[last])
    target, stopped = policy_step(strategy.limits, holding, raw, close)
    return Decision(
        bar_open_time=int(window.open_time[last]),
        bar_close_time=int(window.close_time[last]),
        close=close,
        raw_target=raw,
        target_exposure=target,
        stopped=stopped,
        leverage=strategy.limits.leverage,
        outputs={node_id: float(values[last]) for node_id, values in evaluation.outputs.items()},
    )
