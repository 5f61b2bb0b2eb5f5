"""The cadence driver's decisions on one prop account: one `TradingDecisions` aggregate per
account (its id derived from the account's), so the account's own stream stays its fills.

Each `Decided` records what went in (the graph version and the SHA-256 of the candle data
read), what came out (the target exposure, the stop carried forward, the leverage, every
node's value) and the prop action's answer (or why none was sent). One decision per
(asset, bar): a bar already decided is never recorded twice, so a restarted driver that
decides the same bar again appends nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id


def decisions_id(account_id: UUID) -> UUID:
    return derive_id("TradingDecisions", str(account_id))


class TradingDecisions(DomainAggregate):
    snapshot_interval: ClassVar[int | None] = 100

    class Opened(DomainAggregate.Created):
        account_id: UUID

    class Decided(DomainAggregate.Event):
        asset: str
        bar_close_time: int
        """Milliseconds since the epoch: the closed bar decided on."""
        version_hash: str
        data_hash: str
        target_exposure: str
        """A decimal string: the fraction of equity to hold (negative: short)."""
        stopped: int
        leverage: int
        outputs: dict[str, Any]
        client_action_id: str | None
        answer: dict[str, Any]
        """The prop action's answer (status, reason, fill), or why no action was sent."""

    @event(Opened)
    def __init__(self, id: UUID, account_id: UUID) -> None:
        self.account_id = account_id
        self.last_bar: dict[str, int] = {}
        self.targets: dict[str, str] = {}
        self.stops: dict[str, int] = {}
        self.count = 0

    def decided(self, asset: str, bar_close_time: int) -> bool:
        return self.last_bar.get(asset, -1) >= bar_close_time

    def target(self, asset: str) -> str | None:
        return self.targets.get(asset)

    def stop(self, asset: str) -> int:
        return self.stops.get(asset, 0)

    def record(
        self,
        *,
        asset: str,
        bar_close_time: int,
        version_hash: str,
        data_hash: str,
        target_exposure: str,
        stopped: int,
        leverage: int,
        outputs: dict[str, Any],
        client_action_id: str | None,
        answer: dict[str, Any],
    ) -> bool:
        """Record the decision on this bar; False (nothing appended) if it was decided."""
        if self.decided(asset, bar_close_time):
            return False
        self._decided(
            asset=asset,
            bar_close_time=bar_close_time,
            version_hash=version_hash,
            data_hash=data_hash,
            target_exposure=target_exposure,
            stopped=stopped,
            leverage=leverage,
            outputs=outputs,
            client_action_id=client_action_id,
            answer=answer,
        )
        return True

    @event(Decided)
    def _decided(
        self,
        asset: str,
        bar_close_time: int,
        version_hash: str,
        data_hash: str,
        target_exposure: str,
        stopped: int,
        leverage: int,
        outputs: dict[str, Any],
        client_action_id: str | None,
        answer: dict[str, Any],
    ) -> None:
        self.last_bar = {**self.last_bar, asset: bar_close_time}
        self.targets = {**self.targets, asset: target_exposure}
        self.stops = {**self.stops, asset: stopped}
        self.count += 1
