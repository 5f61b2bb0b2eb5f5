"""The old `pumpparty demo`'s aggregate, kept only so that old logs still load.

Before issue 21 the demo command appended a `DemoTab` to whatever log it was pointed at,
where it stays: the log is append-only. Those events name their class by the topic
`scripts.cli:DemoTab.<Event>`, which the event store resolves by importing `scripts.cli`
and reading `DemoTab` from it, so `scripts/cli.py` imports this class under that name.
Nothing writes a `DemoTab` any more (the demo now runs on its own fresh data directory);
do not use it for anything new, and do not rename or change its events.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate


class DemoTab(DomainAggregate):
    """A bar tab in USDC minor units: the smallest aggregate to show the machinery with."""

    @event("Opened")
    def __init__(self, id: UUID, name: str) -> None:
        self.name = name
        self.items: list[str] = []
        self.total_minor = 0

    @event("ItemAdded")
    def add(self, item: str, price_minor: int) -> None:
        self.items.append(item)
        self.total_minor += price_minor
