"""The cadence driver's decisions on one prop account: one `TradingDecisions` aggregate per
account (its id derived from the account's), so the account's own stream stays its fills.

Each `Decided` records what went in (the graph version and the SHA-256 of the candle data
read), what came out (the target exposure, the stop carried forward, the leverage, every
node's value), the model nodes' provider calls with their tokens, and the prop action's
answer (or why none was sent). One decision per (asset, bar): a bar already decided is
never recorded twice, so a restarted driver that decides the same bar again appends nothing.

`decision_record` is a decision as the JSON document kept among the clone's artifacts
(content-addressed by its SHA-256, like a generation's prompt and graph): a pure function
of the event, so a rebuild of the artifact store gives the same bytes and the same hash.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

import orjson
from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.generations import Artifact


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
        # Added with per-clone cadences and model nodes through the router; decisions
        # recorded before them read as None.
        account_id: UUID | None = None
        interval: str | None = None
        clone_id: UUID | None = None
        owner_id: UUID | None = None
        model_calls: list[dict[str, Any]] | None = None
        """Every provider call the graph's model nodes made for this bar (tokens included)."""

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
        interval: str | None = None,
        clone_id: UUID | None = None,
        owner_id: UUID | None = None,
        model_calls: list[dict[str, Any]] | None = None,
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
            account_id=self.account_id,
            interval=interval,
            clone_id=clone_id,
            owner_id=owner_id,
            model_calls=model_calls or [],
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
        account_id: UUID | None = None,
        interval: str | None = None,
        clone_id: UUID | None = None,
        owner_id: UUID | None = None,
        model_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        self.last_bar = {**self.last_bar, asset: bar_close_time}
        self.targets = {**self.targets, asset: target_exposure}
        self.stops = {**self.stops, asset: stopped}
        self.count += 1


def decision_record(event: TradingDecisions.Decided) -> Artifact:
    """The decision as a JSON artifact: what went in, what came out, the calls, the answer."""
    document = {
        "account_id": None if event.account_id is None else str(event.account_id),
        "clone_id": None if event.clone_id is None else str(event.clone_id),
        "asset": event.asset,
        "interval": event.interval,
        "bar_close_time": event.bar_close_time,
        "decided_at": event.timestamp.isoformat(),
        "version_hash": event.version_hash,
        "data_hash": event.data_hash,
        "target_exposure": event.target_exposure,
        "stopped": event.stopped,
        "leverage": event.leverage,
        "outputs": event.outputs,
        "model_calls": event.model_calls or [],
        "client_action_id": event.client_action_id,
        "answer": event.answer,
    }
    # Sorted keys, no whitespace (as `json_artifact`); a fill's decimals as their text.
    content = orjson.dumps(document, option=orjson.OPT_SORT_KEYS, default=_text)
    return Artifact("decision-record", "application/json", content.decode())


def _text(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")
