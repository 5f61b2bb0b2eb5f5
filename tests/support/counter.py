"""A small aggregate that exercises the machinery before the domain arrives."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar
from uuid import UUID, uuid4

from eventsourcing.domain import event

from aggregates.base import DomainAggregate


class Counter(DomainAggregate):
    @event("Opened")
    def __init__(
        self, id: UUID, name: str, balance_minor: int, rate: Decimal, request_fingerprint: str = ""
    ) -> None:
        self.name = name
        self.balance_minor = balance_minor
        self.rate = rate
        self.count = 0
        self.request_fingerprint = request_fingerprint

    @event("Incremented")
    def increment(self, by: int) -> None:
        self.count += by


def new_counter(name: str, balance_minor: int = 0, rate: Decimal = Decimal("0")) -> Counter:
    return Counter(id=uuid4(), name=name, balance_minor=balance_minor, rate=rate)


class SnapshottedCounter(Counter):
    snapshot_interval: ClassVar[int | None] = 100
