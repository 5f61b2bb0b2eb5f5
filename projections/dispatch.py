"""What every projection declares the same way: the topics of the events it reads, and a
`process_event` that ignores any event no handler is registered for."""

from __future__ import annotations

from typing import Any

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic


def topics_of(*classes: type) -> tuple[str, ...]:
    """The topics of these event classes, in order."""
    return tuple(get_topic(cls) for cls in classes)


def _ignore(self: Any, domain_event: Any, tracking: Tracking) -> None:
    """An event with no registered handler changes nothing."""


def event_handlers() -> singledispatchmethod[None]:
    """A fresh `process_event` for one projection class: register its handlers on it with
    `@process_event.register`; every other event is ignored."""
    return singledispatchmethod(_ignore)
