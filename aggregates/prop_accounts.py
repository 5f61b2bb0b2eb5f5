"""A paper prop account: gates, fills at the mark, positions, PnL, breaches, admin controls.

Money is `Decimal` throughout. A position keeps its signed size and its cost (the signed
entry value of what is still open), so realized + unrealized always adds up exactly:
`equity = balance + unrealized`, `balance = starting equity + realized - fees`.

Events carry what they were decided on: a fill records its price, the mark (price,
source, observed-at), slippage and fee; a mark-to-market records the marks it used. So
replay never needs the price store, the clock or the rule catalogue. The account's state
holds only plain values (bounded by the rule set's assets), so snapshots stay small and
an account with ten thousand fills loads like one with ten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, fingerprint
from aggregates.errors import ConflictError, InvalidCommandError
from aggregates.ports import Mark
from aggregates.prop_rules import (
    DAILY_LOSS_LIMIT,
    MAX_DRAWDOWN,
    BreachAction,
    Gate,
    GateRejection,
    RuleSet,
    check_account_open,
    check_asset_allowed,
    check_cadence,
    check_daily_loss,
    check_drawdown,
    check_gross_exposure,
    check_leverage,
    check_mark_fresh,
    check_order_notional,
    check_order_size,
    check_position_notional,
    check_reduce_only,
    check_trading_open,
    daily_loss_floor,
    drawdown_floor,
)

OPEN, FROZEN, CLOSED = "open", "frozen", "closed"
PURPOSES = ("audition", "race")
SIDES = ("buy", "sell")
QUANTUM = Decimal("1e-8")
"""Sizes, fill prices and divided money amounts are kept to 8 decimal places."""
BPS = Decimal("10000")
ZERO = Decimal("0")
MAX_AMOUNT = Decimal("1e12")
"""The largest size, notional or starting equity a command may carry."""
MAX_LEVERAGE = Decimal("1000")
_WIDE = Context(prec=60)


def to_quantum(amount: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """`amount` to 8 places; wide enough that an odd price never makes it fail."""
    return amount.quantize(QUANTUM, rounding=rounding, context=_WIDE)


class InvalidPropAccountError(InvalidCommandError):
    code = "invalid-prop-account"


class InvalidPropActionError(InvalidCommandError):
    code = "invalid-prop-action"


class PropAccountClosedError(ConflictError):
    code = "prop-account-closed"


class PropAccountFrozenError(ConflictError):
    code = "prop-account-frozen"


class PropAccountNotFrozenError(ConflictError):
    code = "prop-account-not-frozen"


def within(amount: Decimal, low: Decimal, high: Decimal) -> bool:
    """Finite, in [low, high], and with no more than 8 decimal places."""
    return (
        amount.is_finite()
        and low <= amount <= high
        and amount == amount.quantize(QUANTUM, context=_WIDE)
    )


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def mark_state(mark: Mark) -> dict[str, Any]:
    return {"price": mark.price, "source": mark.source, "observed_at": mark.observed_at}


def fill_price(mark_price: Decimal, side: str, slippage_bps: Decimal) -> Decimal:
    """Paper fills pay the slippage: buys above the mark, sells below it."""
    direction = 1 if side == "buy" else -1
    return to_quantum(mark_price * (1 + direction * slippage_bps / BPS))


@dataclass(frozen=True)
class ActionRequest:
    """One prop action from the engine: a size in the asset, or a notional in USD."""

    client_action_id: str
    asset: str
    side: str
    size: Decimal | None = None
    notional: Decimal | None = None
    reduce_only: bool = False
    leverage: Decimal = Decimal("1")

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise InvalidPropActionError(f"side must be one of {', '.join(SIDES)}")
        if (self.size is None) == (self.notional is None):
            raise InvalidPropActionError("give exactly one of size and notional")
        amount = self.size if self.size is not None else self.notional
        if amount is None or not within(amount, QUANTUM, MAX_AMOUNT):
            raise InvalidPropActionError(
                f"size and notional are positive, at most {MAX_AMOUNT:f}, to 8 decimal places"
            )
        if not within(self.leverage, Decimal("1"), MAX_LEVERAGE):
            raise InvalidPropActionError(f"leverage is from 1 to {MAX_LEVERAGE}")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_state())

    def to_state(self) -> dict[str, Any]:
        return {
            "client_action_id": self.client_action_id,
            "asset": self.asset,
            "side": self.side,
            "size": self.size,
            "notional": self.notional,
            "reduce_only": self.reduce_only,
            "leverage": self.leverage,
        }


@dataclass(frozen=True)
class Position:
    size: Decimal = ZERO
    """Signed: long above zero, short below."""
    cost: Decimal = ZERO
    """Signed entry value of the open size (size x average entry)."""
    leverage: Decimal = Decimal("1")

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Position:
        return cls(state["size"], state["cost"], state["leverage"])

    def to_state(self) -> dict[str, Any]:
        return {"size": self.size, "cost": self.cost, "leverage": self.leverage}

    @property
    def average_entry(self) -> Decimal | None:
        return None if self.size == 0 else to_quantum(self.cost / self.size)

    def notional(self, price: Decimal) -> Decimal:
        return abs(self.size) * price

    def unrealized(self, price: Decimal) -> Decimal:
        return self.size * price - self.cost

    def margin(self, price: Decimal) -> Decimal:
        return to_quantum(self.notional(price) / self.leverage)

    def fill(
        self, quantity: Decimal, price: Decimal, leverage: Decimal
    ) -> tuple[Position, Decimal]:
        """The position after a signed fill at `price`, and the PnL the fill realizes."""
        if self.size == 0 or (quantity > 0) == (self.size > 0):
            return Position(self.size + quantity, self.cost + quantity * price, leverage), ZERO
        closing = min(abs(quantity), abs(self.size))
        closed = closing if quantity > 0 else -closing
        # The closed share of the cost; a full close takes all of it, so nothing is left over.
        removed = (
            self.cost
            if closing == abs(self.size)
            else to_quantum(self.cost * closing / abs(self.size))
        )
        realized = -(closed * price) - removed
        remainder = quantity - closed
        if remainder != 0:  # through zero: the rest opens the other side
            return Position(remainder, remainder * price, leverage), realized
        return Position(self.size + closed, self.cost - removed, self.leverage), realized


@dataclass(frozen=True)
class Valuation:
    balance: Decimal
    unrealized: Decimal
    equity: Decimal
    margin_used: Decimal
    gross_exposure: Decimal

    def to_state(self) -> dict[str, Any]:
        return {
            "balance": self.balance,
            "unrealized": self.unrealized,
            "equity": self.equity,
            "margin_used": self.margin_used,
            "gross_exposure": self.gross_exposure,
        }


def value(
    balance: Decimal, positions: Mapping[str, Position], prices: Mapping[str, Decimal]
) -> Valuation:
    """The account at these prices: equity = balance + unrealized."""
    unrealized = sum((p.unrealized(prices[a]) for a, p in positions.items()), ZERO)
    gross = sum((p.notional(prices[a]) for a, p in positions.items()), ZERO)
    margin = sum((p.margin(prices[a]) for a, p in positions.items()), ZERO)
    return Valuation(balance, unrealized, balance + unrealized, margin, gross)


def paper_fill(
    *,
    number: int,
    side: str,
    size: Decimal,
    before: Position,
    leverage: Decimal,
    mark: Mapping[str, Any],
    rules: RuleSet,
    at: datetime,
) -> tuple[dict[str, Any], Position]:
    """A fill at `mark` (asset, price, source, observed_at) with the rule set's slippage and
    fee, as the event records it; and the position it leaves."""
    price = fill_price(mark["price"], side, rules.slippage_bps)
    after, realized = before.fill(size if side == "buy" else -size, price, leverage)
    record = {
        "number": number,
        "asset": mark["asset"],
        "side": side,
        "size": size,
        "price": price,
        "mark_price": mark["price"],
        "mark_source": mark["source"],
        "mark_observed_at": mark["observed_at"],
        "slippage_bps": rules.slippage_bps,
        "slippage": size * abs(price - mark["price"]),
        "fee_bps": rules.fee_bps,
        "fee": to_quantum(size * price * rules.fee_bps / BPS),
        "realized_pnl": realized,
        "position_size": after.size,
        "position_cost": after.cost,
        "leverage": after.leverage,
        "filled_at": at,
    }
    return record, after


@dataclass(frozen=True)
class ActionResult:
    """What an action came to; kept so a retry with the same id gets the same answer."""

    status: str
    reason: str | None
    detail: str | None
    fill: dict[str, Any] | None
    position: dict[str, Any]

    def to_state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "fill": self.fill,
            "position": self.position,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ActionResult:
        return cls(**state)


class PropAccount(DomainAggregate):
    # Each fill is one event; a snapshot every 100 keeps a load to at most 99 replays.
    snapshot_interval: ClassVar[int | None] = 100
    # What an audition is judged on, kept as events are applied. Class defaults too, so a
    # snapshot taken before these existed still loads (and the next events fill them in).
    worst_drawdown: Decimal = ZERO
    """The largest fall of equity below its running peak, in money."""
    worst_daily_loss: Decimal = ZERO
    """The largest fall of equity below the day's reference (start-of-day equity or balance)."""
    active_days: tuple[str, ...] = ()
    """The UTC days (ISO dates) with at least one fill."""
    trading_ends_at: datetime | None = None
    """A race account's end time: no fill at or after it, and time passing after it says
    nothing about the account (its result reads the marks at that time)."""

    class Opened(DomainAggregate.Created):
        owner_id: UUID
        clone_id: UUID
        clone_version_hash: str
        purpose: str
        starting_equity: Decimal
        rules: dict[str, Any]
        request_fingerprint: str
        trading_ends_at: datetime | None = None  # accounts opened before races had none

    class DayStarted(DomainAggregate.Event):
        day: str
        equity: Decimal
        balance: Decimal

    class Filled(DomainAggregate.Event):
        client_action_id: str
        reduce_only: bool
        fill: dict[str, Any]
        marks: dict[str, Any]
        valuation: dict[str, Any]

    class ActionRejected(DomainAggregate.Event):
        client_action_id: str
        request: dict[str, Any]
        reason: str
        detail: str

    class Marked(DomainAggregate.Event):
        marks: dict[str, Any]
        valuation: dict[str, Any]

    class Breached(DomainAggregate.Event):
        rule: str
        equity: Decimal
        floor: Decimal

    class Frozen(DomainAggregate.Event):
        reason: str

    class Unfrozen(DomainAggregate.Event):
        reason: str

    class Flattened(DomainAggregate.Event):
        reason: str
        fills: list[dict[str, Any]]
        marks: dict[str, Any]
        valuation: dict[str, Any]

    class Closed(DomainAggregate.Event):
        reason: str

    class EquitySnapshotted(DomainAggregate.Event):
        """Retired: a periodic point on the equity curve. Kept so old logs still replay."""

        valuation: dict[str, Any]
        realized_pnl: Decimal
        fees_paid: Decimal

    @event(Opened)
    def __init__(
        self,
        id: UUID,
        owner_id: UUID,
        clone_id: UUID,
        clone_version_hash: str,
        purpose: str,
        starting_equity: Decimal,
        rules: dict[str, Any],
        request_fingerprint: str,
        trading_ends_at: datetime | None = None,
    ) -> None:
        self.owner_id = owner_id
        self.trading_ends_at = trading_ends_at
        self.clone_id = clone_id
        self.clone_version_hash = clone_version_hash
        self.purpose = purpose
        self.starting_equity = starting_equity
        self.rules = rules
        self.request_fingerprint = request_fingerprint
        self.status = OPEN
        self.balance = starting_equity
        self.realized_pnl = ZERO
        self.fees_paid = ZERO
        self.positions: dict[str, dict[str, Any]] = {}
        self.marks: dict[str, dict[str, Any]] = {}
        self.last_fill_at: dict[str, datetime] = {}
        self.peak_equity = starting_equity
        self.day = ""
        self.day_start_equity = starting_equity
        self.day_start_balance = starting_equity
        self.fill_count = 0
        self.rejection_count = 0
        self.breach: str | None = None
        self.worst_drawdown = ZERO
        self.worst_daily_loss = ZERO
        self.active_days = ()

    @classmethod
    def open(
        cls,
        id: UUID,
        *,
        owner_id: UUID,
        clone_id: UUID,
        clone_version_hash: str,
        purpose: str,
        starting_equity: Decimal,
        rules: RuleSet,
        request_fingerprint: str,
        trading_ends_at: datetime | None = None,
    ) -> PropAccount:
        if purpose not in PURPOSES:
            raise InvalidPropAccountError(f"purpose must be one of {', '.join(PURPOSES)}")
        if not within(starting_equity, QUANTUM, MAX_AMOUNT):
            raise InvalidPropAccountError(
                f"starting equity is positive, at most {MAX_AMOUNT:f}, to 8 decimal places"
            )
        return cls(
            id=id,
            owner_id=owner_id,
            clone_id=clone_id,
            clone_version_hash=clone_version_hash,
            purpose=purpose,
            starting_equity=starting_equity,
            rules=rules.to_state(),
            request_fingerprint=request_fingerprint,
            trading_ends_at=trading_ends_at,
        )

    # --- reading the state -----------------------------------------------------------------

    @property
    def rule_set(self) -> RuleSet:
        return RuleSet.from_state(self.rules)

    @property
    def open_positions(self) -> dict[str, Position]:
        return {asset: Position.from_state(s) for asset, s in self.positions.items()}

    def position(self, asset: str) -> Position:
        state = self.positions.get(asset)
        return Position() if state is None else Position.from_state(state)

    @property
    def prices(self) -> dict[str, Decimal]:
        return {asset: mark["price"] for asset, mark in self.marks.items()}

    def valuation(self) -> Valuation:
        """The account at the marks it last recorded."""
        return value(self.balance, self.open_positions, self.prices)

    @property
    def equity(self) -> Decimal:
        return self.valuation().equity

    @property
    def daily_floor(self) -> Decimal:
        return daily_loss_floor(
            self.rule_set, self.starting_equity, self.day_start_equity, self.day_start_balance
        )

    @property
    def drawdown_floor(self) -> Decimal:
        return drawdown_floor(self.rule_set, self.starting_equity, self.peak_equity)

    def position_view(self, asset: str) -> dict[str, Any]:
        """A position as a reader sees it, at the recorded mark."""
        position = self.position(asset)
        mark = self.marks.get(asset) or {"price": None, "source": None, "observed_at": None}
        price = mark["price"]
        return {
            "asset": asset,
            "size": position.size,
            "average_entry_price": position.average_entry,
            "leverage": position.leverage,
            "mark_price": price,
            "mark_source": mark["source"],
            "mark_observed_at": mark["observed_at"],
            "notional": None if price is None else position.notional(price),
            "unrealized_pnl": None if price is None else position.unrealized(price),
            "margin": None if price is None else position.margin(price),
        }

    # --- commands --------------------------------------------------------------------------

    def submit(
        self,
        request: ActionRequest,
        marks: Mapping[str, Mark | None],
        now: datetime,
        max_mark_age: timedelta,
    ) -> ActionResult:
        """Put an action through the gates: a fill, or a rejection with its reason code."""
        if self.status != CLOSED:
            self._start_day_if_new(now)
        try:
            planned = self._plan_fill(request, marks, now, max_mark_age)
        except GateRejection as rejection:
            self._action_rejected(
                client_action_id=request.client_action_id,
                request=request.to_state(),
                reason=rejection.gate.code,
                detail=rejection.detail,
            )
            return ActionResult(
                "rejected",
                rejection.gate.code,
                rejection.detail,
                None,
                self.position_view(request.asset),
            )
        self._filled(**planned)
        return ActionResult(
            "filled", None, None, planned["fill"], self.position_view(request.asset)
        )

    def mark_to_market(self, marks: Mapping[str, Mark | None], now: datetime) -> Valuation | None:
        """The mark-to-market job's revaluation: only an open account is marked (a frozen or
        closed one cannot trade, so time passing says nothing new about it). None, and no
        event, when there is nothing to record (see `revalue`)."""
        if self.status != OPEN or self.trading_ended(now):
            return None
        return self.revalue(marks, now)

    def trading_ended(self, now: datetime) -> bool:
        return self.trading_ends_at is not None and now >= self.trading_ends_at

    def revalue(self, marks: Mapping[str, Mark | None], now: datetime) -> Valuation | None:
        """Revalue the held positions at the given marks that are newer than the recorded
        ones and moved the price; an open account that breaches a loss limit freezes (or
        flattens). A frozen account is revalued too (its verdict reads the equity) but never
        breaches again. None, appending nothing, for a closed or flat account or when no
        held asset's price changed."""
        if self.status == CLOSED or not self.positions:
            return None
        recorded = self.prices
        fresh = {
            asset: mark
            for asset, mark in self._newer_marks(marks).items()
            if mark["price"] != recorded.get(asset)
        }
        if not fresh:
            return None
        self._start_day_if_new(now)
        prices = {**recorded, **{asset: mark["price"] for asset, mark in fresh.items()}}
        valuation = value(self.balance, self.open_positions, prices)
        self._marked(marks=fresh, valuation=valuation.to_state())
        if self.status == OPEN:
            self._enforce_loss_limits(now)
        return self.valuation()

    def freeze(self, reason: str) -> None:
        self.check_not_closed()
        if self.status == FROZEN:
            raise PropAccountFrozenError("the account is already frozen")
        self._frozen(reason=reason)

    def unfreeze(self, reason: str) -> None:
        self.check_not_closed()
        if self.status != FROZEN:
            raise PropAccountNotFrozenError("the account is not frozen")
        self._unfrozen(reason=reason)

    def flatten(self, reason: str, marks: Mapping[str, Mark | None], now: datetime) -> None:
        """Close every position at the latest mark (slippage and fee applied); no gates."""
        self.check_not_closed()
        self._flatten(reason, self._newer_marks(marks), now)

    def close(self, reason: str, marks: Mapping[str, Mark | None], now: datetime) -> None:
        """Flatten what is still open, then close for good."""
        self.check_not_closed()
        if self.positions:
            self._flatten(reason, self._newer_marks(marks), now)
        self._closed(reason=reason)

    def check_not_closed(self) -> None:
        if self.status == CLOSED:
            raise PropAccountClosedError("the account is closed")

    # --- deciding --------------------------------------------------------------------------

    def _start_day_if_new(self, now: datetime) -> None:
        """The first event of a UTC day fixes the day's reference equity and balance."""
        day = utc_day(now)
        if day > self.day:
            self._day_started(day=day, equity=self.equity, balance=self.balance)

    def _newer_marks(self, marks: Mapping[str, Mark | None]) -> dict[str, dict[str, Any]]:
        """The given marks of held assets observed after the ones the account recorded."""
        newer = {}
        for asset in self.positions:
            mark = marks.get(asset)
            recorded = self.marks.get(asset)
            if mark is not None and (
                recorded is None or mark.observed_at > recorded["observed_at"]
            ):
                newer[asset] = mark_state(mark)
        return newer

    def _plan_fill(
        self,
        request: ActionRequest,
        marks: Mapping[str, Mark | None],
        now: datetime,
        max_mark_age: timedelta,
    ) -> dict[str, Any]:
        """The `Filled` event's values, or the first gate the action fails (in GATES order)."""
        rules, asset = self.rule_set, request.asset
        check_account_open(self.status)
        check_trading_open(self.trading_ends_at, now)
        check_asset_allowed(rules, asset)
        mark = marks.get(asset)
        check_mark_fresh(None if mark is None else mark.observed_at, now, max_mark_age)
        assert mark is not None
        check_leverage(rules, request.leverage)
        size = request.size
        if size is None:
            assert request.notional is not None
            size = to_quantum(request.notional / mark.price, ROUND_DOWN)
        check_order_size(size)
        before = self.position(asset)
        fill, after = paper_fill(
            number=self.fill_count + 1,
            side=request.side,
            size=size,
            before=before,
            leverage=request.leverage,
            mark={"asset": asset, **mark_state(mark)},
            rules=rules,
            at=now,
        )
        check_reduce_only(request.reduce_only, before.size, after.size)
        check_cadence(rules, self.last_fill_at.get(asset), now)
        check_order_notional(rules, self.starting_equity, size * mark.price)
        check_position_notional(
            rules, self.starting_equity, before.notional(mark.price), after.notional(mark.price)
        )
        fresh = {**self._newer_marks(marks), asset: mark_state(mark)}
        valuation = self._check_account_after(fill, after, fresh)
        return {
            "client_action_id": request.client_action_id,
            "reduce_only": request.reduce_only,
            "fill": fill,
            "marks": fresh,
            "valuation": valuation.to_state(),
        }

    def _check_account_after(
        self, fill: Mapping[str, Any], after: Position, fresh: Mapping[str, Mapping[str, Any]]
    ) -> Valuation:
        """The whole account after the fill, at the freshest marks, against its limits."""
        prices = {**self.prices, **{asset: mark["price"] for asset, mark in fresh.items()}}
        positions = self.open_positions
        exposure_before = value(self.balance, positions, prices).gross_exposure
        positions[fill["asset"]] = after
        holding = {asset: p for asset, p in positions.items() if p.size != 0}
        valuation = value(self.balance + fill["realized_pnl"] - fill["fee"], holding, prices)
        check_gross_exposure(
            self.rule_set, self.starting_equity, exposure_before, valuation.gross_exposure
        )
        check_daily_loss(valuation.equity, self.daily_floor)
        check_drawdown(valuation.equity, self.drawdown_floor)
        return valuation

    def _enforce_loss_limits(self, now: datetime) -> None:
        equity = self.equity
        limits: list[tuple[Gate, Decimal]] = [
            (DAILY_LOSS_LIMIT, self.daily_floor),
            (MAX_DRAWDOWN, self.drawdown_floor),
        ]
        for gate, floor in limits:
            if equity < floor:
                self._breached(rule=gate.code, equity=equity, floor=floor)
                if self.rule_set.breach_action is BreachAction.FLATTEN:
                    self._flatten(f"breach: {gate.code}", {}, now)
                self._frozen(reason=f"breach: {gate.code}")
                return

    def _flatten(self, reason: str, fresh: dict[str, dict[str, Any]], now: datetime) -> None:
        marks = {**self.marks, **fresh}
        balance, fills = self.balance, list[dict[str, Any]]()
        for asset, position in sorted(self.open_positions.items()):
            fill, _ = paper_fill(
                number=self.fill_count + len(fills) + 1,
                side="sell" if position.size > 0 else "buy",
                size=abs(position.size),
                before=position,
                leverage=position.leverage,
                mark={"asset": asset, **marks[asset]},
                rules=self.rule_set,
                at=now,
            )
            balance += fill["realized_pnl"] - fill["fee"]
            fills.append(fill)
        prices = {asset: mark["price"] for asset, mark in marks.items()}
        valuation = value(balance, {}, prices)
        self._flattened(reason=reason, fills=fills, marks=fresh, valuation=valuation.to_state())

    # --- applying (runs again on every replay: assignments only) ---------------------------

    def _apply_fill(self, fill: Mapping[str, Any]) -> None:
        asset = fill["asset"]
        if fill["position_size"] == 0:
            self.positions.pop(asset, None)
        else:
            self.positions[asset] = Position(
                fill["position_size"], fill["position_cost"], fill["leverage"]
            ).to_state()
        self.balance += fill["realized_pnl"] - fill["fee"]
        self.realized_pnl += fill["realized_pnl"]
        self.fees_paid += fill["fee"]
        self.last_fill_at[asset] = fill["filled_at"]
        self.fill_count = fill["number"]
        self.active_days = tuple(sorted({*self.active_days, utc_day(fill["filled_at"])}))
        self.marks[asset] = {
            "price": fill["mark_price"],
            "source": fill["mark_source"],
            "observed_at": fill["mark_observed_at"],
        }

    def _apply_valuation(self, marks: Mapping[str, Any], valuation: Mapping[str, Any]) -> None:
        self.marks.update(marks)
        self.peak_equity = max(self.peak_equity, valuation["equity"])
        self.worst_drawdown = max(self.worst_drawdown, self.peak_equity - valuation["equity"])
        day_reference = max(self.day_start_equity, self.day_start_balance)
        self.worst_daily_loss = max(self.worst_daily_loss, day_reference - valuation["equity"])

    @event(DayStarted)
    def _day_started(self, day: str, equity: Decimal, balance: Decimal) -> None:
        self.day = day
        self.day_start_equity = equity
        self.day_start_balance = balance

    @event(Filled)
    def _filled(
        self,
        client_action_id: str,
        reduce_only: bool,
        fill: dict[str, Any],
        marks: dict[str, Any],
        valuation: dict[str, Any],
    ) -> None:
        self._apply_fill(fill)
        self._apply_valuation(marks, valuation)

    @event(ActionRejected)
    def _action_rejected(
        self, client_action_id: str, request: dict[str, Any], reason: str, detail: str
    ) -> None:
        self.rejection_count += 1

    @event(Marked)
    def _marked(self, marks: dict[str, Any], valuation: dict[str, Any]) -> None:
        self._apply_valuation(marks, valuation)

    @event(Breached)
    def _breached(self, rule: str, equity: Decimal, floor: Decimal) -> None:
        self.breach = rule

    @event(Frozen)
    def _frozen(self, reason: str) -> None:
        self.status = FROZEN

    @event(Unfrozen)
    def _unfrozen(self, reason: str) -> None:
        self.status = OPEN

    @event(Flattened)
    def _flattened(
        self,
        reason: str,
        fills: list[dict[str, Any]],
        marks: dict[str, Any],
        valuation: dict[str, Any],
    ) -> None:
        self.marks.update(marks)
        for fill in fills:
            self._apply_fill(fill)
        self._apply_valuation({}, valuation)

    @event(Closed)
    def _closed(self, reason: str) -> None:
        self.status = CLOSED

    @event(EquitySnapshotted)
    def _equity_snapshotted(
        self, valuation: dict[str, Any], realized_pnl: Decimal, fees_paid: Decimal
    ) -> None:
        """Old logs only: nothing emits it now (the equity curve is a read model over fills
        and marks); it changed no state then either, so replay just passes over it."""


class PropAction(DomainAggregate):
    """One engine action's outcome, under an id from (account, client_action_id).

    Created in the same transaction as the account's `Filled` or `ActionRejected`, so a
    retry finds it and gets the same answer; another body under the same id is a 409.
    """

    class Recorded(DomainAggregate.Created):
        account_id: UUID
        client_action_id: str
        request_fingerprint: str
        result: dict[str, Any]

    @event(Recorded)
    def __init__(
        self,
        id: UUID,
        account_id: UUID,
        client_action_id: str,
        request_fingerprint: str,
        result: dict[str, Any],
    ) -> None:
        self.account_id = account_id
        self.client_action_id = client_action_id
        self.request_fingerprint = request_fingerprint
        self.result = result

    @property
    def outcome(self) -> ActionResult:
        return ActionResult.from_state(self.result)
