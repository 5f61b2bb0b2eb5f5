"""The audition fee in USDC minor units: exact, or refused.

The fee is quoted in whole minor units (6 decimals). A fee with more decimals than USDC
has is refused, never rounded: not down (the treasury would quote less than configured),
not up, not to even. The settings refuse such a fee before it ever reaches a quote.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from aggregates.ledger import InvalidAmountError
from runtime.settings import Settings
from services.economy import usdc_minor_units

D = Decimal


@pytest.mark.parametrize(
    ("fee", "minor"),
    [
        (D("25"), 25_000_000),
        (D("0.000001"), 1),
        (D("12.345678"), 12_345_678),
        (D("25.000000000"), 25_000_000),  # trailing zeros are no extra precision
    ],
)
def test_a_fee_converts_exactly(fee: Decimal, minor: int) -> None:
    assert usdc_minor_units(fee) == minor


@pytest.mark.parametrize(
    "fee",
    [
        D("25.000000001"),  # a ninth decimal: ROUND_DOWN would quote 25 USDC
        D("25.000000009"),  # rounding half-up would quote 25.000001
        D("0.0000005"),  # below one minor unit
        D("0.0000009"),
        D("0"),
        D("-25"),
    ],
)
def test_a_fee_that_is_not_whole_minor_units_is_refused_not_rounded(fee: Decimal) -> None:
    with pytest.raises(InvalidAmountError):
        usdc_minor_units(fee)


def test_the_settings_refuse_a_fee_with_a_ninth_decimal() -> None:
    with pytest.raises(ValidationError):
        Settings(audition_fee=D("25.000000001"))
