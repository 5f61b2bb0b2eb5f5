"""(c) Loading one aggregate at 10 and at 10,000 events of history, with and without snapshots.

A load is `EventLog.repository.get(id)`, the call the command path makes: with snapshots it
reads the latest snapshot and the events after it, without them every event. The figure
is the median of several loads of the same aggregate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID, uuid4

from aggregates.base import acting
from benchmarks.aggregates import SNAPSHOT_INTERVAL, BenchAccount, SnapshottedBenchAccount
from benchmarks.appends import RATE
from benchmarks.harness import CONTEXT, median_ms
from services.eventlog import EventLog

SAVE_CHUNK = 500  # events per save; see RESULTS.md on large saves through the library


@dataclass(frozen=True)
class LoadResult:
    history: int
    snapshots: bool
    median_ms: float
    loads: int
    replayed: int

    @property
    def label(self) -> str:
        return f"{self.history:,} events, {'with' if self.snapshots else 'no'} snapshots"


def write_history(event_log: EventLog, cls: type[BenchAccount], history: int) -> UUID:
    """One aggregate with `history` events, saved in chunks (snapshots taken as usual)."""
    with acting(CONTEXT):
        account = cls(id=uuid4(), name="history", balance_minor=0, rate=RATE)
        written = 1
        while True:
            for _ in range(min(SAVE_CHUNK - 1, history - written)):
                account.increment(by=1)
                written += 1
            event_log.save(account)
            if written >= history:
                return account.id


def measure_load(event_log: EventLog, aggregate_id: UUID, loads: int) -> float:
    event_log.repository.get(aggregate_id)  # warm: connection, prepared statements
    samples = []
    for _ in range(loads):
        started = time.perf_counter()
        event_log.repository.get(aggregate_id)
        samples.append(time.perf_counter() - started)
    return median_ms(samples)


def run_loads(event_log: EventLog, plain: list[int], snapshotted: list[int]) -> list[LoadResult]:
    interval = SNAPSHOT_INTERVAL
    results = []
    for snapshots, histories in ((False, plain), (True, snapshotted)):
        cls = SnapshottedBenchAccount if snapshots else BenchAccount
        for history in histories:
            aggregate_id = write_history(event_log, cls, history)
            loads = 10 if history > 1000 and not snapshots else 50
            replayed = history % interval if snapshots and history >= interval else history
            results.append(
                LoadResult(
                    history=history,
                    snapshots=snapshots,
                    median_ms=measure_load(event_log, aggregate_id, loads),
                    loads=loads,
                    replayed=replayed,
                )
            )
    return results
