"""(b) Rebuilding the `audit_log` projection from position zero over 100,000 events."""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import uuid4

from aggregates.base import acting
from benchmarks.aggregates import BenchAccount
from benchmarks.appends import RATE
from benchmarks.harness import CONTEXT
from projections.rebuild import rebuild
from projections.state import Projections
from services.bootstrap import Services
from services.eventlog import EventLog

PROJECTION = "audit_log"


@dataclass(frozen=True)
class RebuildResult:
    events: int
    seconds: float
    batch_size: int
    generate_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def generate(
    event_log: EventLog, events: int, *, per_account: int = 100, per_save: int = 500
) -> None:
    """Append `events` events fast: accounts opened and incremented in memory, saved in bulk.

    Saves stay at about 500 events: much larger ones hang in the library's pipelined insert
    (see RESULTS.md).
    """
    accounts_per_save = max(per_save // per_account, 1)
    remaining = events
    with acting(CONTEXT):
        while remaining > 0:
            batch: list[BenchAccount] = []
            while remaining > 0 and len(batch) < accounts_per_save:
                account = BenchAccount(id=uuid4(), name="bulk", balance_minor=0, rate=RATE)
                for _ in range(min(per_account, remaining) - 1):
                    account.increment(by=1)
                remaining -= min(per_account, remaining)
                batch.append(account)
            event_log.save(*batch)


def run_rebuild(
    services: Services,
    *,
    events: int,
    batch_size: int,
    projections: Projections | None = None,
    counted: int | None = None,
) -> RebuildResult:
    """Append `events` new events, then rebuild the projection over the whole log.

    `projections` swaps in other projection classes (a prototype) over the same log;
    `counted` is the log's length when no events are appended here.
    """
    started = time.perf_counter()
    if events:
        generate(services.event_log, events)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    rebuild(projections or services.projections, PROJECTION, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return RebuildResult(
        events=counted or events,
        seconds=seconds,
        batch_size=batch_size,
        generate_seconds=generated,
    )
