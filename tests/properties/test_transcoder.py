from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.transcoder import OrjsonTranscoder

transcoder = OrjsonTranscoder()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.replace(fold=0)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_every_value_round_trips_exactly(value: Any) -> None:
    decoded = transcoder.decode(transcoder.encode({"value": value}))

    assert decoded == {"value": value}
    assert repr(decoded) == repr({"value": value})  # Decimal('1.10') stays 1.10, types kept


def test_money_keeps_its_scale() -> None:
    assert (
        transcoder.decode(transcoder.encode({"fee": Decimal("25.000000")}))["fee"]
        .as_tuple()
        .exponent
        == -6
    )


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError, match="floats"):
        transcoder.encode({"price": 0.1})
