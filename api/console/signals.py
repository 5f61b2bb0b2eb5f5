"""Golden signals for the console: request rate, error rate and p99 latency of the API.

Read from this process's request histogram (`api.metrics.Metrics.latency`), the one
`/metrics` exports; the console's own requests are left out, or watching the console
would move what it shows. Rates need two readings: each look is kept (a short window, per
process), and the signals are the differences across it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Histogram

WINDOW_SECONDS = 300.0
"""How far back the rates look: the oldest reading kept is about this old."""


@dataclass(frozen=True)
class Reading:
    at: float
    """`time.monotonic()` when read."""
    requests: int
    errors: int
    buckets: tuple[tuple[float, float], ...]
    """(upper bound, cumulative count), summed over every route and status."""


@dataclass(frozen=True)
class GoldenSignals:
    requests: int
    """Answered since the process started (console excluded)."""
    errors: int
    """Of which 5xx."""
    window_seconds: float | None
    """What the rates span; None on the first look (no rate yet)."""
    request_rate: float | None
    """Requests per second over the window."""
    error_ratio: float | None
    """5xx answers over all answers in the window; None when there were none."""
    p99_seconds: float | None
    """The upper bound of the histogram bucket holding the 99th percentile (in the window,
    or since start on the first look); None with no requests."""


def read(histogram: Histogram, now: float) -> Reading:
    requests = 0
    errors = 0
    buckets: dict[float, float] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.labels.get("route", "").startswith("/console"):
                continue
            if sample.name.endswith("_count"):
                requests += int(sample.value)
                if sample.labels.get("status", "").startswith("5"):
                    errors += int(sample.value)
            elif sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Reading(now, requests, errors, tuple(sorted(buckets.items())))


def p99(buckets: tuple[tuple[float, float], ...]) -> float | None:
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    wanted = 0.99 * total
    for bound, cumulative in buckets:
        if cumulative >= wanted:
            return None if math.isinf(bound) else bound
    return None


def difference(
    new: tuple[tuple[float, float], ...], old: tuple[tuple[float, float], ...]
) -> tuple[tuple[float, float], ...]:
    before = dict(old)
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in new)


@dataclass
class SignalWatch:
    """The readings of one process's histogram, kept for `WINDOW_SECONDS`."""

    histogram: Histogram
    window: float = WINDOW_SECONDS
    readings: deque[Reading] = field(default_factory=deque)

    def look(self) -> GoldenSignals:
        now = read(self.histogram, time.monotonic())
        while self.readings and now.at - self.readings[0].at > self.window:
            self.readings.popleft()
        oldest = self.readings[0] if self.readings else None
        self.readings.append(now)
        if oldest is None or now.at <= oldest.at:
            return GoldenSignals(now.requests, now.errors, None, None, None, p99(now.buckets))
        span = now.at - oldest.at
        answered = now.requests - oldest.requests
        failed = now.errors - oldest.errors
        return GoldenSignals(
            requests=now.requests,
            errors=now.errors,
            window_seconds=span,
            request_rate=answered / span,
            error_ratio=failed / answered if answered else None,
            p99_seconds=p99(difference(now.buckets, oldest.buckets)),
        )

    def errors_seen(self) -> int:
        """5xx answers so far, without keeping a reading: what makes the live stream refresh
        the golden signals at once (the rest waits for its periodic `tick`, or a busy API
        would have every open console fetch them every second)."""
        return read(self.histogram, time.monotonic()).errors
