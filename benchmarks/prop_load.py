"""Loading a prop account with 10 fills against one with 10,000, snapshots on.

A `PropAccount` snapshots every 100 events, so a load reads the latest snapshot and at most
99 events after it, whatever the history's length. The figure is the median time of
`repository.get` for each history and their ratio; the target is that the long history
loads in about the time of the short one (at most three times as long).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from uuid import UUID, uuid4

from aggregates.base import acting
from aggregates.ports import Mark
from aggregates.prop_accounts import ActionRequest, PropAccount
from aggregates.prop_rules import rule_set
from benchmarks.harness import CONTEXT, Figure, median_ms
from services.bootstrap import Services
from services.eventlog import EventLog

SECTION = "prop account load"
TARGET_RATIO = 3.0
SAVE_EVERY = 500  # fills per save while building; see RESULTS.md on large saves
# Wide limits and no cadence: every action fills, so the history is all fills.
RULES = replace(
    rule_set("race"),
    min_action_interval=0,
    max_order_notional=Decimal("100"),
    max_position_notional=Decimal("100"),
    max_gross_exposure=Decimal("100"),
    daily_loss_limit=Decimal("1"),
    max_drawdown=Decimal("1"),
)


@dataclass(frozen=True)
class PropLoadResult:
    fills: int
    events: int
    median_ms: float
    loads: int


def build_account(event_log: EventLog, fills: int) -> UUID:
    """An account with `fills` fills, made in memory and saved in batches (snapshots too)."""
    now = CONTEXT.occurred_at
    with acting(CONTEXT):
        account = PropAccount.open(
            uuid4(),
            owner_id=uuid4(),
            clone_id=uuid4(),
            clone_version_hash="bench",
            purpose="race",
            starting_equity=Decimal("100000"),
            rules=RULES,
            request_fingerprint="bench",
        )
        for number in range(fills):
            price = Decimal(67000 + (number % 50) * 5)
            marks: dict[str, Mark | None] = {"BTC": Mark("BTC", price, now, "bench")}
            side = "buy" if number % 3 else "sell"
            request = ActionRequest(f"bench-{number}", "BTC", side, size=Decimal("0.01"))
            result = account.submit(request, marks, now, timedelta(minutes=1))
            assert result.status == "filled", result.reason
            if number % SAVE_EVERY == SAVE_EVERY - 1:
                event_log.save(account)
    event_log.save(account)
    return account.id


def time_loads(event_log: EventLog, account_id: UUID, loads: int) -> float:
    """Median milliseconds of loading the account from the store (after one warm-up load)."""
    event_log.repository.get(account_id)
    samples = []
    for _ in range(loads):
        started = time.perf_counter()
        event_log.repository.get(account_id)
        samples.append(time.perf_counter() - started)
    return median_ms(samples)


def run_prop_load(
    services: Services, *, histories: tuple[int, ...] = (10, 10_000), loads: int = 50
) -> list[PropLoadResult]:
    results = []
    for fills in histories:
        account_id = build_account(services.event_log, fills)
        events: int = services.event_log.repository.get(account_id).version
        median = time_loads(services.event_log, account_id, loads)
        results.append(PropLoadResult(fills, events, median, loads))
    return results


def prop_load_figures(
    services: Services, *, histories: tuple[int, int] = (10, 10_000), loads: int = 50
) -> list[Figure]:
    """The figures for `make bench`: each history's median load time and their ratio."""
    short, long = run_prop_load(services, histories=histories, loads=loads)
    ratio = long.median_ms / short.median_ms if short.median_ms else 0.0
    figures = [
        Figure(
            SECTION,
            f"load with {result.fills:,} fills",
            result.median_ms,
            "ms",
            detail=f"{result.events:,} events, median of {result.loads} loads",
        )
        for result in (short, long)
    ]
    figures.append(
        Figure(
            SECTION,
            f"{long.fills:,} fills / {short.fills:,} fills",
            ratio,
            "x",
            target=f"<= {TARGET_RATIO:g}x",
            passed=ratio <= TARGET_RATIO,
            detail=f"snapshot every {PropAccount.snapshot_interval} events",
        )
    )
    return figures
