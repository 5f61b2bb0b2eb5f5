"""Backtests: a strategy's decisions filled honestly over closed candles, and the report.

- **Fill rule.** A decision taken at a bar's close fills at the next bar's open; the last
  bar's decision is reported as pending, never filled. Buys pay the open x (1 +
  slippage_bps/10^4), sells get the open x (1 - slippage_bps/10^4), and the fee is
  fee_bps/10^4 of the fill's notional: the prop rule set's values, charged the way the prop
  engine charges them (aggregates/prop_accounts.py `fill_price`).
- **Sizing.** When the target exposure e changes at bar i, the position becomes
  e x equity(close of i) / open(i+1) units (a notional order converted at the fill's
  mark, as a prop action's `notional` is). While the target stays the same the position
  is held: no rebalancing trades.
- **Funding.** The asset's funding rates summed over each bar: the position held during
  the bar pays units x the bar's open x rate (longs pay a positive rate, shorts receive it).
- **Metrics** over the bars after warm-up (the leading bars whose decision is still
  undetermined): returns are bar-to-bar changes of equity at the close; Sharpe and Sortino
  are the mean return over the sample standard deviation (Sortino: over the downside
  deviation, the root mean square of the negative returns, target 0) times the square root
  of the bars in a year (365 x 86,400 s / the interval: 8,760 for hourly bars, 105,120 for
  5-minute bars); the risk-free rate is 0. Max drawdown is the largest fall of equity from
  its running peak (starting equity included), as a fraction of the peak. A trade runs
  from a flat (or reversed) position to flat (or the next reversal); its PnL is net of its
  fees and funding; the win rate is over closed trades.

Pure: numpy; every input arrives as an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from aggregates.prop_rules import RuleSet
from aggregates.strategy_executor import (
    OFFLINE_MODEL,
    Evaluation,
    FloatArray,
    Holding,
    MarketFrame,
    ModelEvaluator,
    Strategy,
    evaluate,
    policy_step,
)

YEAR_SECONDS = 365 * 86_400
TRADE_LOG_LIMIT = 100
"""The report lists at most the latest this many trades (it counts them all)."""
FILL_RULE = (
    "decided at a bar's close, filled at the next bar's open; buys at open x (1 +"
    " slippage_bps/10^4), sells at open x (1 - slippage_bps/10^4); fee = fee_bps/10^4 of"
    " the fill's notional; the last bar's decision is pending, never filled"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment(milliseconds: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(milliseconds))


def text(value: float, places: int = 8) -> str | None:
    """A float as plain decimal text with at most `places` decimals; None when not finite."""
    if not math.isfinite(value):
        return None
    shown = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if shown in ("", "-0") else shown


@dataclass(frozen=True)
class Costs:
    fee_bps: float
    slippage_bps: float

    @classmethod
    def of(cls, rules: RuleSet) -> Costs:
        return cls(float(rules.fee_bps), float(rules.slippage_bps))


class Fill(NamedTuple):
    bar: int
    """The bar at whose open it filled."""
    decided_at: int
    units: float
    """Signed: positive bought, negative sold."""
    mark: float
    price: float
    fee: float
    slippage: float
    position: float
    """Units held after the fill."""


class Trade(NamedTuple):
    direction: int
    opened_bar: int
    closed_bar: int | None
    """The bar at whose open the closing fill filled (None: still open at the end)."""
    entry_price: float
    exit_price: float | None
    size: float
    """The most units held during the trade."""
    realized: float
    fees: float
    funding: float

    @property
    def pnl(self) -> float:
        return self.realized - self.fees - self.funding


@dataclass(frozen=True)
class Simulation:
    strategy: Strategy
    frame: MarketFrame
    evaluation: Evaluation
    costs: Costs
    starting_equity: float
    target: FloatArray
    """The exposure decided at each bar's close, after the stop."""
    stopped: FloatArray
    """The stop in force after each bar's decision (+1, -1 or 0)."""
    units: FloatArray
    """Units held during each bar (after the fill at its open)."""
    equity: FloatArray
    """Equity at each bar's close."""
    funding: FloatArray
    """Funding paid during each bar (negative: received)."""
    fills: tuple[Fill, ...]
    trades: tuple[Trade, ...]
    pending: tuple[int, float] | None
    """A decision at the last bar that changed the target: (bar, target exposure)."""

    @property
    def warmup(self) -> int:
        return min(self.evaluation.warmup, len(self.frame))


class _OpenTrade:
    __slots__ = ("direction", "entry_price", "fees", "opened_bar", "realized", "size")

    def __init__(self, direction: int, opened_bar: int, entry_price: float, size: float) -> None:
        self.direction = direction
        self.opened_bar = opened_bar
        self.entry_price = entry_price
        self.size = size
        self.realized = 0.0
        self.fees = 0.0

    def done(self, closed_bar: int | None, exit_price: float | None) -> Trade:
        return Trade(
            self.direction,
            self.opened_bar,
            closed_bar,
            self.entry_price,
            exit_price,
            self.size,
            self.realized,
            self.fees,
            0.0,
        )


class _Book:
    """Cash, the position, its entry price and the trade it belongs to, fill by fill."""

    def __init__(self, starting_equity: float, costs: Costs, funding_index: list[float]) -> None:
        self.cash = starting_equity
        self.units = 0.0
        self.entry = math.nan
        self.fee_rate = costs.fee_bps / 10_000
        self.slip_rate = costs.slippage_bps / 10_000
        self.funding_index = funding_index  # [0, then the running sum of open x rate]
        self.funded_from = 0
        self.fills: list[Fill] = []
        self.trades: list[Trade] = []
        self.open_trade: _OpenTrade | None = None

    def settle_funding(self, through: int) -> None:
        """Charge the position held over bars funded_from..through."""
        if through >= self.funded_from:
            index = self.funding_index
            self.cash -= self.units * (index[through + 1] - index[self.funded_from])
            self.funded_from = through + 1

    def fill(self, bar: int, decided_at: int, units: float, mark: float) -> None:
        price = mark * (1 + self.slip_rate) if units > 0 else mark * (1 - self.slip_rate)
        size = abs(units)
        fee = size * price * self.fee_rate
        self.cash -= units * price + fee
        before = self.units
        after = before + units
        reverses = before != 0 and (after == 0 or (after > 0) != (before > 0))
        closing = min(size, abs(before)) if before * units < 0 else 0.0
        trade = self.open_trade
        if closing and trade is not None:
            trade.realized += closing * (price - self.entry) * (1.0 if before > 0 else -1.0)
            trade.fees += fee * closing / size
        if reverses and trade is not None:
            self.trades.append(trade.done(bar, price))
            trade = self.open_trade = None
        if after != 0:
            if trade is None:
                trade = self.open_trade = _OpenTrade(1 if after > 0 else -1, bar, price, 0.0)
            # Growing, opening, or the rest of a reversal (a reduction leaves none).
            trade.fees += fee - fee * closing / size
            trade.size = max(trade.size, abs(after))
        # The entry price: averaged when the position grows, kept when it shrinks, the
        # fill's price when it opens or reverses.
        if after == 0:
            self.entry = math.nan
        elif before == 0 or (after > 0) != (before > 0):
            self.entry = price
        elif abs(after) > abs(before):
            self.entry = (before * self.entry + units * price) / after
        self.units = after
        self.fills.append(
            Fill(bar, decided_at, units, mark, price, fee, size * abs(price - mark), after)
        )


def simulate(
    strategy: Strategy,
    frame: MarketFrame,
    costs: Costs,
    starting_equity: float,
    evaluator: ModelEvaluator = OFFLINE_MODEL,
) -> Simulation:
    """Run the strategy over every bar of the frame and fill its decisions.

    The decisions are `policy_step`'s at every bar; only the bars where one can differ
    from the last (the raw target changed, or a bar closed beyond the stop) are visited,
    the rest hold."""
    evaluation = evaluate(strategy, frame, evaluator)
    n = len(frame)
    raw_array = evaluation.target
    x_array = np.where(np.isnan(raw_array), 0.0, raw_array)
    changes = np.flatnonzero(x_array != np.concatenate(([0.0], x_array[:-1]))).tolist()
    changes.append(n)
    # Scalars are read from lists (a numpy element read costs more than the work on it).
    closes_array = frame.bars.close
    opens, closes = frame.bars.open.tolist(), closes_array.tolist()
    raw, x = raw_array.tolist(), x_array.tolist()
    funding_index = np.concatenate(([0.0], np.cumsum(frame.bars.open * frame.funding_rates)))
    limits = strategy.limits
    stop = limits.stop_loss
    book = _Book(starting_equity, costs, funding_index.tolist())
    decided_bars: list[int] = []
    decided: list[tuple[float, int]] = []
    target, stopped = 0.0, 0
    pending: tuple[int, float] | None = None
    at = 0  # the next change at or after j
    j = 0
    while j < n:
        while changes[at] < j:
            at += 1
        k = changes[at]
        units = book.units
        # Between changes the raw target is x[j]; a stop can only come from a close.
        holds = x[j] != 0 and (x[j] > 0) == (units > 0)
        if stop is not None and units != 0 and not stopped and k > j and holds:
            k = _first_stop(closes, closes_array, j, k, units, book.entry, stop)
        if k >= n:
            break
        holding = Holding(units, book.entry, stopped)
        new_target, stopped = policy_step(limits, holding, raw[k], closes[k])
        if new_target != target or (decided and decided[-1][1] != stopped):
            decided_bars.append(k)
            decided.append((new_target, stopped))
        if new_target != target:
            target = new_target
            if k + 1 < n:
                book.settle_funding(k)
                equity = book.cash + book.units * closes[k]
                wanted = target * equity / opens[k + 1]
                if wanted != book.units:
                    book.fill(k + 1, k, wanted - book.units, opens[k + 1])
            else:
                pending = (k, target)
        j = k + 1
    return _finish(
        strategy, frame, evaluation, costs, starting_equity, book, decided_bars, decided, pending
    )


def _first_stop(
    closes: list[float],
    closes_array: FloatArray,
    j: int,
    k: int,
    units: float,
    entry: float,
    stop: float,
) -> int:
    """The first bar in j..k-1 closing at or beyond the stop (`adverse`), else k."""
    if units > 0:
        level = entry * (1.0 - stop)
        if k - j <= 32:
            return next((i for i in range(j, k) if closes[i] <= level), k)
        hits = np.flatnonzero(closes_array[j:k] <= level)
    else:
        level = entry * (1.0 + stop)
        if k - j <= 32:
            return next((i for i in range(j, k) if closes[i] >= level), k)
        hits = np.flatnonzero(closes_array[j:k] >= level)
    return j + int(hits[0]) if hits.size else k


def _finish(
    strategy: Strategy,
    frame: MarketFrame,
    evaluation: Evaluation,
    costs: Costs,
    starting_equity: float,
    book: _Book,
    decided_bars: list[int],
    decided: list[tuple[float, int]],
    pending: tuple[int, float] | None,
) -> Simulation:
    n = len(frame)
    bars = np.arange(n)
    steps = np.searchsorted(np.array(decided_bars, dtype=np.int64), bars, side="right") - 1
    values = np.array([d[0] for d in decided] or [0.0])
    stops = np.array([d[1] for d in decided] or [0], dtype=np.float64)
    target = np.where(steps >= 0, values[np.maximum(steps, 0)], 0.0)
    stopped = np.where(steps >= 0, stops[np.maximum(steps, 0)], 0.0)
    fill_bars = np.array([f.bar for f in book.fills], dtype=np.int64)
    held = np.searchsorted(fill_bars, bars, side="right") - 1
    positions = np.array([f.position for f in book.fills] or [0.0])
    units = np.where(held >= 0, positions[np.maximum(held, 0)], 0.0)
    flows = np.zeros(n)
    np.add.at(flows, fill_bars, [-(f.units * f.price + f.fee) for f in book.fills])
    funding = units * frame.bars.open * frame.funding_rates
    equity = starting_equity + np.cumsum(flows) - np.cumsum(funding) + units * frame.bars.close
    trades = list(book.trades)
    if book.open_trade is not None:
        trades.append(book.open_trade.done(None, None))
    paid = np.concatenate(([0.0], np.cumsum(funding))).tolist()
    with_funding = tuple(
        trade._replace(
            funding=paid[n if trade.closed_bar is None else trade.closed_bar]
            - paid[trade.opened_bar],
        )
        for trade in trades
    )
    return Simulation(
        strategy=strategy,
        frame=frame,
        evaluation=evaluation,
        costs=costs,
        starting_equity=starting_equity,
        target=target,
        stopped=stopped,
        units=units,
        equity=equity,
        funding=funding,
        fills=tuple(book.fills),
        trades=with_funding,
        pending=pending,
    )


# --- the report -------------------------------------------------------------------------------


class TradeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: Literal["long", "short"]
    opened_at: datetime
    closed_at: datetime | None
    entry_price: str
    exit_price: str | None
    size: str
    pnl: str
    fees: str
    funding: str


class BacktestReport(BaseModel):
    """What a backtest found, as the job's result and the owner's report. Amounts are in
    the quote currency (USD); ratios are fractions ("0.05" is 5%)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    graph_hash: str
    data_hash: str
    asset: str
    interval: str
    bars: int
    first_bar_at: datetime | None
    last_bar_at: datetime | None
    warmup_bars: int
    starting_equity: str
    final_equity: str
    total_return: str
    max_drawdown: str
    sharpe: str | None
    sortino: str | None
    periods_per_year: int
    annualisation: str
    risk_free_rate: str
    trades: int
    closed_trades: int
    winning_trades: int
    win_rate: str | None
    fills: int
    fees_paid: str
    slippage_paid: str
    funding_paid: str
    exposure: str
    """Fraction of the bars after warm-up with a position held."""
    average_gross_exposure: str
    """Mean of |position notional| / equity over the bars after warm-up."""
    pending_target: str | None
    """The last bar's decision, when it changed the target (never filled)."""
    fill_rule: str
    rule_set: str
    fee_bps: str
    slippage_bps: str
    model_evaluator: str
    model_calls: int = 0
    """Provider calls the model nodes made (one per node per backtest: every bar at once)."""
    model_prompt_tokens: int = 0
    model_completion_tokens: int = 0
    missing_channels: list[str]
    trade_log: list[TradeRecord]
    """The latest trades (at most 100)."""


def periods_per_year(interval_seconds: int) -> int:
    return YEAR_SECONDS // interval_seconds


def report(simulation: Simulation, rule_set: str, model_evaluator: str) -> BacktestReport:
    frame = simulation.frame
    n = len(frame)
    warmup = simulation.warmup
    equity = simulation.equity
    start = simulation.starting_equity
    series = np.concatenate(([start], equity[warmup:])) if warmup < n else np.array([start])
    returns = series[1:] / series[:-1] - 1 if len(series) > 1 else np.zeros(0)
    ppy = periods_per_year(frame.interval_seconds)
    root = math.sqrt(ppy)
    sharpe = sortino = math.nan
    if len(returns) >= 2:
        mean = float(np.mean(returns))
        spread = float(np.std(returns, ddof=1))
        downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
        sharpe = mean / spread * root if spread > 0 else math.nan
        sortino = mean / downside * root if downside > 0 else math.nan
    peaks = np.maximum.accumulate(series)
    drawdown = float(np.max(1 - series / peaks)) if len(series) else 0.0
    after = slice(warmup, n)
    held = simulation.units[after]
    gross = np.abs(held * frame.bars.close[after]) / equity[after] if n > warmup else np.zeros(0)
    closed = [t for t in simulation.trades if t.closed_bar is not None]
    wins = sum(1 for t in closed if t.pnl > 0)
    final = float(equity[-1]) if n else start
    log = [_trade_record(trade, frame) for trade in simulation.trades[-TRADE_LOG_LIMIT:]]
    costs = simulation.costs
    return BacktestReport(
        graph_hash=simulation.strategy.version,
        data_hash=frame.digest(),
        asset=frame.asset,
        interval=frame.interval,
        bars=n,
        first_bar_at=moment(int(frame.open_time[0])) if n else None,
        last_bar_at=moment(int(frame.close_time[-1])) if n else None,
        warmup_bars=warmup,
        starting_equity=_amount(start),
        final_equity=_amount(final),
        total_return=_amount(final / start - 1),
        max_drawdown=_amount(max(drawdown, 0.0)),
        sharpe=text(sharpe, 6),
        sortino=text(sortino, 6),
        periods_per_year=ppy,
        annualisation=(
            f"per-bar returns x sqrt({ppy}): 365 x 86,400 s / {frame.interval_seconds} s"
            " bars (hourly crypto: 365 x 24 = 8,760); Sharpe over the sample standard"
            " deviation, Sortino over the downside deviation (target 0)"
        ),
        risk_free_rate="0",
        trades=len(simulation.trades),
        closed_trades=len(closed),
        winning_trades=wins,
        win_rate=text(wins / len(closed), 6) if closed else None,
        fills=len(simulation.fills),
        fees_paid=_amount(sum(f.fee for f in simulation.fills)),
        slippage_paid=_amount(sum(f.slippage for f in simulation.fills)),
        funding_paid=_amount(float(np.sum(simulation.funding))),
        exposure=_amount(float(np.mean(held != 0)) if len(held) else 0.0),
        average_gross_exposure=_amount(float(np.mean(gross)) if len(gross) else 0.0),
        pending_target=None if simulation.pending is None else text(simulation.pending[1]),
        fill_rule=FILL_RULE,
        rule_set=rule_set,
        fee_bps=_amount(costs.fee_bps),
        slippage_bps=_amount(costs.slippage_bps),
        model_evaluator=model_evaluator,
        missing_channels=list(simulation.evaluation.missing_channels),
        trade_log=log,
    )


def _amount(value: float) -> str:
    shown = text(value)
    return "0" if shown is None else shown


def _trade_record(trade: Trade, frame: MarketFrame) -> TradeRecord:
    return TradeRecord(
        direction="long" if trade.direction > 0 else "short",
        opened_at=moment(int(frame.open_time[trade.opened_bar])),
        closed_at=None
        if trade.closed_bar is None
        else moment(int(frame.open_time[trade.closed_bar])),
        entry_price=_amount(trade.entry_price),
        exit_price=None if trade.exit_price is None else text(trade.exit_price),
        size=_amount(trade.size),
        pnl=_amount(trade.pnl),
        fees=_amount(trade.fees),
        funding=_amount(trade.funding),
    )


def backtest(
    strategy: Strategy,
    frame: MarketFrame,
    rules: RuleSet,
    starting_equity: Decimal,
    evaluator: ModelEvaluator = OFFLINE_MODEL,
) -> BacktestReport:
    """The whole backtest: simulate, then report (what a worker runs for a job)."""
    simulation = simulate(strategy, frame, Costs.of(rules), float(starting_equity), evaluator)
    return report(simulation, rules.key, evaluator.name)


# --- a dry run: the decision at every bar -------------------------------------------------------


@dataclass(frozen=True)
class BarDecision:
    open_time: datetime
    close_time: datetime
    close: float
    raw_target: float
    target_exposure: float
    position: float
    """Units held during the bar."""
    order: float
    """Units the decision orders at the next open (0: hold; at the last bar: pending)."""
    stopped: int
    outputs: dict[str, float]


def bar_decisions(simulation: Simulation, last: int) -> list[BarDecision]:
    """The decision at each of the last `last` bars, with every node's value."""
    frame = simulation.frame
    n = len(frame)
    orders = np.zeros(n)
    for fill in simulation.fills:
        orders[fill.decided_at] += fill.units
    if simulation.pending is not None:
        bar, target = simulation.pending
        equity = float(simulation.equity[bar])
        orders[bar] = target * equity / float(frame.bars.close[bar]) - float(simulation.units[bar])
    outputs = simulation.evaluation.outputs
    return [
        BarDecision(
            open_time=moment(int(frame.open_time[i])),
            close_time=moment(int(frame.close_time[i])),
            close=float(frame.bars.close[i]),
            raw_target=float(simulation.evaluation.target[i]),
            target_exposure=float(simulation.target[i]),
            position=float(simulation.units[i]),
            order=float(orders[i]),
            stopped=int(simulation.stopped[i]),
            outputs={node_id: float(values[i]) for node_id, values in outputs.items()},
        )
        for i in range(max(n - last, 0), n)
    ]
