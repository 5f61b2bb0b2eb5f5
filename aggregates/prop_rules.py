"""Prop rule sets and the safety gates they define.

A rule set is versioned: `audition@1`, `race@1`. An account copies every value of the
version in force into its `Opened` event, so a later rule set (or a changed catalogue)
never changes the rules of an account already open, and replay never reads this module's
catalogue.

Limits are fractions of the account's starting equity, as prop firms state them ("5% of
initial"). Exposure is valued at the mark. The loss limits follow the firms in
domain-facts.md: the daily floor is the higher of start-of-UTC-day equity and balance
less `daily_loss_limit` (The5ers); the drawdown floor trails the highest equity seen
less `max_drawdown` (FTMO 1-Step, Breakout 2-Step trailing).

Each gate is a named rule with its own reason code; its check raises `GateRejection`,
which the account records as a rejected action (an event, never an HTTP error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from aggregates.errors import InvalidCommandError


class UnknownRuleSetError(InvalidCommandError):
    code = "unknown-rule-set"


class BreachAction(StrEnum):
    """What a breach found at mark-to-market does to the account."""

    FREEZE = "freeze"
    FLATTEN = "flatten"  # close every position at the mark, then freeze


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: int
    allowed_assets: tuple[str, ...]
    max_leverage: Decimal
    max_order_notional: Decimal
    """Largest single order, at the mark, as a fraction of starting equity."""
    max_position_notional: Decimal
    """Largest position in one asset, at the mark, as a fraction of starting equity."""
    max_gross_exposure: Decimal
    """Sum of every position's notional at the mark, as a fraction of starting equity."""
    min_action_interval: int
    """Seconds that must pass between two fills on one asset."""
    daily_loss_limit: Decimal
    max_drawdown: Decimal
    fee_bps: Decimal
    slippage_bps: Decimal
    breach_action: BreachAction

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def to_state(self) -> dict[str, Any]:
        """Plain values for an event: the pinned copy of this version."""
        state = asdict(self)
        state["allowed_assets"] = list(self.allowed_assets)
        state["breach_action"] = self.breach_action.value
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RuleSet:
        return cls(
            **{
                **state,
                "allowed_assets": tuple(state["allowed_assets"]),
                "breach_action": BreachAction(state["breach_action"]),
            }
        )


CATALOGUE: dict[str, dict[int, RuleSet]] = {
    "audition": {
        1: RuleSet(
            name="audition",
            version=1,
            allowed_assets=("BTC", "ETH", "SOL"),
            max_leverage=Decimal("5"),
            max_order_notional=Decimal("1"),
            max_position_notional=Decimal("2"),
            max_gross_exposure=Decimal("3"),
            min_action_interval=60,
            daily_loss_limit=Decimal("0.05"),
            max_drawdown=Decimal("0.10"),
            fee_bps=Decimal("5"),
            slippage_bps=Decimal("2"),
            breach_action=BreachAction.FREEZE,
        )
    },
    "race": {
        1: RuleSet(
            name="race",
            version=1,
            allowed_assets=("BTC", "ETH", "SOL"),
            max_leverage=Decimal("10"),
            max_order_notional=Decimal("2"),
            max_position_notional=Decimal("5"),
            max_gross_exposure=Decimal("8"),
            min_action_interval=30,
            daily_loss_limit=Decimal("0.10"),
            max_drawdown=Decimal("0.20"),
            fee_bps=Decimal("5"),
            slippage_bps=Decimal("2"),
            breach_action=BreachAction.FLATTEN,
        )
    },
}


def rule_set(name: str, version: int | None = None) -> RuleSet:
    """The named rule set at `version`, or the version in force (the latest) without one."""
    versions = CATALOGUE.get(name)
    if not versions or (version is not None and version not in versions):
        known = ", ".join(f"{n}@{v}" for n, vs in CATALOGUE.items() for v in vs)
        wanted = name if version is None else f"{name}@{version}"
        raise UnknownRuleSetError(f"no rule set {wanted!r}; known: {known}")
    return versions[max(versions) if version is None else version]


# --- gates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    code: str
    rule: str


ACCOUNT_CLOSED = Gate("account-closed", "the account is not closed")
ACCOUNT_FROZEN = Gate("account-frozen", "the account is not frozen")
TRADING_ENDED = Gate(
    "trading-ended", "the action comes before the account's trading end (a race's end time)"
)
ASSET_NOT_ALLOWED = Gate("asset-not-allowed", "the asset is in the rule set's list")
MARK_UNAVAILABLE = Gate("mark-unavailable", "a mark price exists for the asset")
MARK_STALE = Gate("mark-stale", "the mark is no older than the configured age")
LEVERAGE_TOO_HIGH = Gate("leverage-too-high", "leverage <= max_leverage")
ORDER_TOO_SMALL = Gate("order-too-small", "the order's size is at least 1e-8")
REDUCE_ONLY_WOULD_GROW = Gate(
    "reduce-only-would-grow", "a reduce-only order shrinks the position and never flips it"
)
CADENCE_TOO_FAST = Gate(
    "cadence-too-fast", "at least min_action_interval seconds since the asset's last fill"
)
ORDER_NOTIONAL_TOO_LARGE = Gate(
    "order-notional-too-large", "order notional <= max_order_notional x starting equity"
)
POSITION_NOTIONAL_TOO_LARGE = Gate(
    "position-notional-too-large",
    "a growing position's notional <= max_position_notional x starting equity",
)
GROSS_EXPOSURE_TOO_LARGE = Gate(
    "gross-exposure-too-large", "growing gross exposure <= max_gross_exposure x starting equity"
)
DAILY_LOSS_LIMIT = Gate(
    "daily-loss-limit",
    "equity after the fill >= max(start-of-day equity, balance) - daily_loss_limit x start",
)
MAX_DRAWDOWN = Gate(
    "max-drawdown", "equity after the fill >= peak equity - max_drawdown x starting equity"
)

GATES: tuple[Gate, ...] = (
    ACCOUNT_CLOSED,
    ACCOUNT_FROZEN,
    TRADING_ENDED,
    ASSET_NOT_ALLOWED,
    MARK_UNAVAILABLE,
    MARK_STALE,
    LEVERAGE_TOO_HIGH,
    ORDER_TOO_SMALL,
    REDUCE_ONLY_WOULD_GROW,
    CADENCE_TOO_FAST,
    ORDER_NOTIONAL_TOO_LARGE,
    POSITION_NOTIONAL_TOO_LARGE,
    GROSS_EXPOSURE_TOO_LARGE,
    DAILY_LOSS_LIMIT,
    MAX_DRAWDOWN,
)
"""Every gate, in the order an action meets them; the first that fails names the reason."""


class GateRejection(Exception):
    """An action stopped at a gate. Recorded as an event, not answered as an error."""

    def __init__(self, gate: Gate, detail: str) -> None:
        super().__init__(f"{gate.code}: {detail}")
        self.gate = gate
        self.detail = detail


def check_account_open(status: str) -> None:
    if status == "closed":
        raise GateRejection(ACCOUNT_CLOSED, "the account is closed")
    if status == "frozen":
        raise GateRejection(ACCOUNT_FROZEN, "the account is frozen")


def check_trading_open(ends_at: datetime | None, now: datetime) -> None:
    if ends_at is not None and now >= ends_at:
        raise GateRejection(TRADING_ENDED, f"trading on this account ended at {ends_at}")


def check_asset_allowed(rules: RuleSet, asset: str) -> None:
    if asset not in rules.allowed_assets:
        allowed = ", ".join(rules.allowed_assets)
        raise GateRejection(ASSET_NOT_ALLOWED, f"{asset} is not traded here; allowed: {allowed}")


def check_mark_fresh(observed_at: datetime | None, now: datetime, max_age: timedelta) -> None:
    if observed_at is None:
        raise GateRejection(MARK_UNAVAILABLE, "no mark price has been observed for the asset")
    if now - observed_at > max_age:
        age = (now - observed_at).total_seconds()
        raise GateRejection(
            MARK_STALE, f"the mark is {age:g}s old; at most {max_age.total_seconds():g}s"
        )


def check_leverage(rules: RuleSet, leverage: Decimal) -> None:
    if leverage > rules.max_leverage:
        raise GateRejection(LEVERAGE_TOO_HIGH, f"leverage {leverage} is above {rules.max_leverage}")


def check_order_size(size: Decimal) -> None:
    if size <= 0:
        raise GateRejection(ORDER_TOO_SMALL, "the notional buys less than 1e-8 of the asset")


def check_reduce_only(reduce_only: bool, before: Decimal, after: Decimal) -> None:
    """A reduce-only order must bring the size toward zero without crossing it."""
    shrinks = abs(after) < abs(before) and (after == 0 or (after > 0) == (before > 0))
    if reduce_only and not shrinks:
        raise GateRejection(
            REDUCE_ONLY_WOULD_GROW, f"the position would go from {before} to {after}"
        )


def check_cadence(rules: RuleSet, last_fill_at: datetime | None, now: datetime) -> None:
    if last_fill_at is None:
        return
    interval = timedelta(seconds=rules.min_action_interval)
    if now - last_fill_at < interval:
        waited = (now - last_fill_at).total_seconds()
        raise GateRejection(
            CADENCE_TOO_FAST,
            f"{waited:g}s since the last fill on this asset; at least {rules.min_action_interval}s",
        )


def check_order_notional(rules: RuleSet, starting_equity: Decimal, notional: Decimal) -> None:
    limit = rules.max_order_notional * starting_equity
    if notional > limit:
        raise GateRejection(ORDER_NOTIONAL_TOO_LARGE, f"order notional {notional} > {limit}")


def check_position_notional(
    rules: RuleSet, starting_equity: Decimal, before: Decimal, after: Decimal
) -> None:
    """Only a growing position is held to the limit: reducing is always allowed."""
    limit = rules.max_position_notional * starting_equity
    if after > limit and after > before:
        raise GateRejection(POSITION_NOTIONAL_TOO_LARGE, f"position notional {after} > {limit}")


def check_gross_exposure(
    rules: RuleSet, starting_equity: Decimal, before: Decimal, after: Decimal
) -> None:
    limit = rules.max_gross_exposure * starting_equity
    if after > limit and after > before:
        raise GateRejection(GROSS_EXPOSURE_TOO_LARGE, f"gross exposure {after} > {limit}")


def daily_loss_floor(
    rules: RuleSet, starting_equity: Decimal, day_start_equity: Decimal, day_start_balance: Decimal
) -> Decimal:
    return max(day_start_equity, day_start_balance) - rules.daily_loss_limit * starting_equity


def drawdown_floor(rules: RuleSet, starting_equity: Decimal, peak_equity: Decimal) -> Decimal:
    return peak_equity - rules.max_drawdown * starting_equity


def check_daily_loss(equity: Decimal, floor: Decimal) -> None:
    if equity < floor:
        raise GateRejection(DAILY_LOSS_LIMIT, f"equity {equity} would be below {floor}")


def check_drawdown(equity: Decimal, floor: Decimal) -> None:
    if equity < floor:
        raise GateRejection(MAX_DRAWDOWN, f"equity {equity} would be below {floor}")
