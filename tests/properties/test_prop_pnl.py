"""PnL bookkeeping under any sequence of fills and marks.

After every step: equity = starting equity + realized + unrealized - fees; the same equity
comes out of an independent cash-flow tally (what was paid and received, fees, and what
is held at the last price); and replaying the events gives the same account.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregates.prop_accounts import PropAccount
from tests.unit.test_prop_accounts import NOON, RULES, START, act, mark, marks, new_account

D = Decimal
ASSETS = ("BTC", "ETH")

# Limits far away: this is about the arithmetic, not the gates.
WIDE_OPEN = replace(
    RULES,
    max_order_notional=D("1000"),
    max_position_notional=D("1000"),
    max_gross_exposure=D("1000"),
    daily_loss_limit=D("1000"),
    max_drawdown=D("1000"),
)

sizes = st.decimals(min_value=D("0.00000001"), max_value=D("50"), places=8)
prices = st.decimals(min_value=D("0.5"), max_value=D("5000"), places=4)
bps = st.decimals(min_value=D("0"), max_value=D("50"), places=2)
trade = st.tuples(st.just("act"), st.sampled_from(ASSETS), st.sampled_from(["buy", "sell"]), sizes)
move = st.tuples(st.just("mark"), st.sampled_from(ASSETS), prices)
steps = st.lists(st.one_of(trade, move), min_size=1, max_size=25)


@dataclass
class CashFlows:
    """The independent model: money out and in, fees, and the latest price of each asset."""

    cash: Decimal = START
    held: dict[str, Decimal] = field(default_factory=lambda: {a: D(0) for a in ASSETS})
    last: dict[str, Decimal] = field(default_factory=lambda: {"BTC": D("100"), "ETH": D("10")})

    def record(self, fill: dict[str, Any]) -> None:
        quantity = fill["size"] if fill["side"] == "buy" else -fill["size"]
        self.cash -= quantity * fill["price"] + fill["fee"]
        self.held[fill["asset"]] += quantity

    @property
    def equity(self) -> Decimal:
        return self.cash + sum((self.held[a] * self.last[a] for a in ASSETS), D(0))


def replayed(account: PropAccount) -> dict[str, Any]:
    rebuilt: Any = None
    for event in account.pending_events:
        rebuilt = event.mutate(rebuilt)
    return {k: v for k, v in vars(rebuilt).items() if k != "_pending_events"}


@settings(max_examples=150, deadline=None)
@given(steps=steps, fee_bps=bps, slippage_bps=bps)
def test_equity_adds_up_and_replay_agrees(
    steps: list[tuple[Any, ...]], fee_bps: Decimal, slippage_bps: Decimal
) -> None:
    account = new_account(replace(WIDE_OPEN, fee_bps=fee_bps, slippage_bps=slippage_bps))
    model = CashFlows()

    for number, step in enumerate(steps, start=1):
        at = NOON + timedelta(minutes=number)
        if step[0] == "act":
            _, asset, side, size = step
            now = marks(at, **{a: str(model.last[a]) for a in ASSETS})
            result = act(account, side, str(size), asset=asset, at=at, prices=now)
            assert result.status == "filled", result.reason
            assert result.fill is not None
            model.record(result.fill)
        else:
            _, asset, price = step
            model.last[asset] = price
            mark(account, at, **{a: str(model.last[a]) for a in ASSETS})

        valuation = account.valuation()
        assert valuation.equity == (
            START + account.realized_pnl + valuation.unrealized - account.fees_paid
        )
        assert valuation.equity == model.equity
        assert {a: account.position(a).size for a in ASSETS} == model.held

    state = {k: v for k, v in vars(account).items() if k != "_pending_events"}
    assert replayed(account) == state
