"""The aggregates the benchmarks write: a small account, with and without snapshots."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate

SNAPSHOT_INTERVAL = 100


class BenchAccount(DomainAggregate):
    """Opened once, then incremented: money in minor units and a Decimal rate, like a ledger."""

    @event("Opened")
    def __init__(self, id: UUID, name: str, balance_minor: int, rate: Decimal) -> None:
        self._open(name, balance_minor, rate)

    def _open(self, name: str, balance_minor: int, rate: Decimal) -> None:
        self.name = name
        self.balance_minor = balance_minor
        self.rate = rate
        self.count = 0

    @event("Incremented")
    def increment(self, by: int) -> None:
        self.count += by
        self.balance_minor += by


class SnapshottedBenchAccount(BenchAccount):
    snapshot_interval: ClassVar[int | None] = SNAPSHOT_INTERVAL

    # The library derives a subclass's creation event from its own `__init__`.
    @event("Opened")
    def __init__(self, id: UUID, name: str, balance_minor: int, rate: Decimal) -> None:
        self._open(name, balance_minor, rate)
