"""The audition rule set and the pure judgement of an attempt against it.

A rule set is copied into the audition when it is submitted (prop firms pin the rules at
purchase), so a later change of settings never changes an audition already running, and
replay never reads settings. Limits are fractions of the starting equity, as firms state
them ("5% of initial"). The two loss limits have one source: the prop rule set the
attempts' accounts open with (`AuditionRules.on`), so the limit the verdict judges is the
limit the prop engine's gates and breaches enforce. Every decision compares money with
money (`equity - start >= target x start`), so the rounding of the reported fractions
never changes an outcome.

The rules, each with the code a failure names:
- `profit-target`: equity at the evaluation >= start + profit_target x start;
- `daily-loss-limit`: the worst fall below a day's reference (the higher of start-of-UTC-
  day equity and balance) <= daily_loss_limit x start;
- `max-drawdown`: the worst fall below the running equity peak <= max_drawdown x start;
- `min-trades`: fills >= min_trades;
- `min-active-days`: UTC days with a fill >= min_active_days;
- a breach recorded by the prop engine (it froze the account) fails the attempt on its own
  rule's code, at once, without waiting for the due time.

The verdict closes the attempt's account (see `services.auditions`): nothing is appended
to a judged attempt afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from aggregates.prop_rules import RuleSet

PROFIT_TARGET = "profit-target"
DAILY_LOSS_LIMIT = "daily-loss-limit"
MAX_DRAWDOWN = "max-drawdown"
MIN_TRADES = "min-trades"
MIN_ACTIVE_DAYS = "min-active-days"

FRACTION = Decimal("1e-8")
"""Reported fractions (return, drawdown, daily loss) are rounded to 8 places."""


@dataclass(frozen=True)
class AuditionRules:
    duration_seconds: int
    starting_equity: Decimal
    profit_target: Decimal
    daily_loss_limit: Decimal
    """The prop rule set's `daily_loss_limit`, copied from it at submit (see `on`)."""
    max_drawdown: Decimal
    """The prop rule set's `max_drawdown`, copied from it at submit (see `on`)."""
    min_trades: int
    min_active_days: int
    free_retries: int
    """Retries that need no new entitlement, each within `retry_window_seconds` of a failure."""
    retry_window_seconds: int
    prop_rule_set: str
    """The prop engine's rule set every attempt's account opens with (gates, fees)."""
    prop_rule_set_version: int

    @classmethod
    def on(
        cls,
        prop_rules: RuleSet,
        *,
        duration_seconds: int,
        starting_equity: Decimal,
        profit_target: Decimal,
        min_trades: int,
        min_active_days: int,
        free_retries: int,
        retry_window_seconds: int,
    ) -> AuditionRules:
        """The audition's terms on the prop rule set `prop_rules`: the loss limits are the
        rule set's own values (what its gates enforce), never a second value from elsewhere."""
        return cls(
            duration_seconds=duration_seconds,
            starting_equity=starting_equity,
            profit_target=profit_target,
            daily_loss_limit=prop_rules.daily_loss_limit,
            max_drawdown=prop_rules.max_drawdown,
            min_trades=min_trades,
            min_active_days=min_active_days,
            free_retries=free_retries,
            retry_window_seconds=retry_window_seconds,
            prop_rule_set=prop_rules.name,
            prop_rule_set_version=prop_rules.version,
        )

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.duration_seconds)

    @property
    def retry_window(self) -> timedelta:
        return timedelta(seconds=self.retry_window_seconds)

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AuditionRules:
        return cls(**state)


@dataclass(frozen=True)
class AccountFigures:
    """What the judgement reads from an attempt's prop account, at the evaluation."""

    starting_equity: Decimal
    equity: Decimal
    worst_drawdown: Decimal
    worst_daily_loss: Decimal
    trades: int
    active_days: int
    breach: str | None = None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failed_rules: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)


def fraction(amount: Decimal, of: Decimal) -> Decimal:
    return (amount / of).quantize(FRACTION, rounding=ROUND_HALF_EVEN)


def metrics_of(figures: AccountFigures) -> dict[str, Any]:
    """The figures a reader sees: fractions of the starting equity, counts, the breach."""
    start = figures.starting_equity
    return {
        "equity": figures.equity,
        "total_return": fraction(figures.equity - start, start),
        "max_drawdown": fraction(figures.worst_drawdown, start),
        "worst_daily_loss": fraction(figures.worst_daily_loss, start),
        "trades": figures.trades,
        "active_days": figures.active_days,
        "breach": figures.breach,
    }


def failed_rules(rules: AuditionRules, figures: AccountFigures) -> list[str]:
    """Every rule the attempt fails at its due time, in the order the module lists them."""
    start = figures.starting_equity
    failed = []
    if figures.equity - start < rules.profit_target * start:
        failed.append(PROFIT_TARGET)
    if figures.worst_daily_loss > rules.daily_loss_limit * start or figures.breach == (
        DAILY_LOSS_LIMIT
    ):
        failed.append(DAILY_LOSS_LIMIT)
    if figures.worst_drawdown > rules.max_drawdown * start or figures.breach == MAX_DRAWDOWN:
        failed.append(MAX_DRAWDOWN)
    if figures.trades < rules.min_trades:
        failed.append(MIN_TRADES)
    if figures.active_days < rules.min_active_days:
        failed.append(MIN_ACTIVE_DAYS)
    if figures.breach is not None and figures.breach not in failed:
        failed.append(figures.breach)
    return failed


def judge(rules: AuditionRules, figures: AccountFigures, *, due: bool) -> Verdict | None:
    """The verdict on an attempt: at its due time every rule; before it, only a breach
    ends it (failed on the breached rule alone). None: not due and nothing breached."""
    metrics = metrics_of(figures)
    if due:
        failed = failed_rules(rules, figures)
        return Verdict(passed=not failed, failed_rules=failed, metrics=metrics)
    if figures.breach is not None:
        return Verdict(passed=False, failed_rules=[figures.breach], metrics=metrics)
    return None
