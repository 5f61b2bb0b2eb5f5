"""Types every router shares."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import Header
from pydantic import BaseModel, StringConstraints

from aggregates.clones import FREE_TEXT, ONE_LINE
from aggregates.ledger import USDC_DECIMALS

Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=FREE_TEXT)
]
"""Why an admin did something. Control characters are refused: a NUL would be kept in the
event and then stop every read model that writes it to a text column."""

SearchText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ONE_LINE)]
"""A filter value matched against stored text."""


_KEY_HEADER = {
    "alias": "Idempotency-Key",
    "min_length": 1,
    "max_length": 255,
    "pattern": r"^[\x21-\x7e]+$",  # visible ASCII
    "description": "retrying with the same key returns the first result, not another",
}
IdempotencyKey = Annotated[str | None, Header(**_KEY_HEADER)]
"""An optional `Idempotency-Key`: without one, every request is a new command."""
RequiredIdempotencyKey = Annotated[str, Header(**_KEY_HEADER)]
"""A required `Idempotency-Key`: commands that move money or admit clones."""


def usdc_text(minor: int) -> str:
    """Minor units as USDC text with all six decimals ("25.000000")."""
    return str(Decimal(minor).scaleb(-USDC_DECIMALS).quantize(Decimal(1).scaleb(-USDC_DECIMALS)))


class WrittenPublic(BaseModel):
    """A command's answer when it has nothing else to say: the log position it wrote."""

    position: int
