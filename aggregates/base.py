"""What every aggregate shares: event metadata, the command context, ids from keys.

Aggregates never read the clock: the command path sets a `CommandContext` (actor, time,
correlation) and every event triggered inside it records those values. Replay reads
them back from the stored event and never looks at the context.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID, uuid5

import orjson
from eventsourcing.domain import Aggregate

from aggregates.errors import MissingCommandContextError

# Fixed forever: changing it would change every id derived from a key.
ID_NAMESPACE = UUID("6f0b3c1e-6a57-4c55-9a61-2f3b7d5e9c01")


def derive_id(kind: str, key: str) -> UUID:
    """The id of the aggregate a command with this key creates: the same key, the same id."""
    return uuid5(ID_NAMESPACE, f"{kind}:{key}")


def fingerprint(values: Mapping[str, Any]) -> str:
    """What an idempotent create remembers of its request, to tell a repeat from a
    different request under the same key. Decimals compare by value ("1.0" == "1")."""

    def canonical(value: Any) -> Any:
        if isinstance(value, Decimal):
            return format(value.normalize(), "f")
        return str(value) if isinstance(value, UUID) else value

    body = {key: canonical(value) for key, value in values.items()}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class CommandContext:
    actor: str
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None = None


_context: ContextVar[CommandContext | None] = ContextVar("command_context", default=None)


@contextmanager
def acting(context: CommandContext) -> Iterator[CommandContext]:
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


def current_context() -> CommandContext:
    context = _context.get()
    if context is None:
        raise MissingCommandContextError("events are only triggered inside a command")
    return context


def _metadata(event_class: type) -> dict[str, Any]:
    context = current_context()
    return {
        "timestamp": context.occurred_at,
        "actor": context.actor,
        "correlation_id": context.correlation_id,
        "causation_id": context.causation_id,
        "schema_version": getattr(event_class, "class_version", 1),
    }


class DomainAggregate(Aggregate):
    """Base of every aggregate. `snapshot_interval` opts a class into snapshots."""

    snapshot_interval: ClassVar[int | None] = None

    class Event(Aggregate.Event):
        actor: str
        correlation_id: str
        causation_id: str | None
        schema_version: int

        @property
        def occurred_at(self) -> datetime:
            return self.timestamp

    class Created(Event, Aggregate.Created):
        pass

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:
        kwargs.update(_metadata(event_class))
        return super()._create(event_class, id=id, **kwargs)

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        kwargs.update(_metadata(event_class))
        super().trigger_event(event_class, **kwargs)
