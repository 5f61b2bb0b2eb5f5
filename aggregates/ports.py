"""What the domain needs from the outside world, as plain types; adapters live in `ingest/`.

The prop engine asks a `PriceSource` for the latest `Mark` of an asset and records the
price, its source and when it was observed in the fill event, so replay never asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from aggregates.purchases import DepositObservation


@dataclass(frozen=True)
class Mark:
    asset: str
    price: Decimal
    observed_at: datetime
    source: str


class PriceSource(Protocol):
    def latest_mark(self, asset: str) -> Mark | None: ...

    def mark_at(self, asset: str, moment: datetime) -> Mark | None:
        """The newest mark observed at or before `moment`: what a race's result reads at
        its end time, however late the finish runs."""
        ...


class DepositObserver(Protocol):
    """What the chain says of a deposit transaction (None: the node could not say)."""

    def observe_deposit(self, tx_hash: str) -> DepositObservation | None: ...
