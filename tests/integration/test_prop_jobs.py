"""The prop worker job, mark-to-market: a breach freezes the account, and time passing alone
writes nothing (flat, frozen and closed accounts, and marks that did not move, are left
alone). The equity curve is read from the accounts' own events, so no job feeds it."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import psycopg

from aggregates.prop_accounts import ActionRequest
from runtime.clock import FixedClock
from runtime.schema import EVENTS_TABLE
from scripts.worker import Worker
from services import prop_trading
from services.bootstrap import Services
from services.prop_trading import MarkToMarket
from tests.integration.test_prop_trading import (
    NOON,
    engine,
    event_types,
    open_account,
    record_marks,
    rows,
    submit,
)
from tests.support.jobs import run_job
from tests.support.projections import catch_up

D = Decimal
LATER = NOON + timedelta(minutes=5)
ROUND = timedelta(minutes=10)
ROUNDS = 144
"""Mark rounds every 10 minutes for 24 hours (across a UTC midnight)."""


def stored_events(services: Services, *accounts: UUID) -> dict[UUID, Counter[str]]:
    """Each account's events as the log stores them, counted by type."""
    with psycopg.connect(services.url) as conn:
        found = conn.execute(
            f"SELECT originator_id, topic FROM {EVENTS_TABLE} WHERE originator_id = ANY(%s)",
            (list(accounts),),
        ).fetchall()
    counts: dict[UUID, Counter[str]] = {account: Counter() for account in accounts}
    for originator_id, topic in found:
        counts[originator_id][topic.rsplit(".", 1)[-1]] += 1
    return counts


def test_the_worker_runs_the_mark_job_on_its_cadence_and_no_snapshot_job(
    services: Services,
) -> None:
    jobs = Worker(services).jobs

    assert isinstance(jobs["prop_mark_to_market"].func, MarkToMarket)
    assert jobs["prop_mark_to_market"].seconds == services.settings.prop_mark_interval
    assert [name for name in jobs if name.startswith("prop_")] == ["prop_mark_to_market"]
    assert [name for name in jobs if "snapshot" in name] == []


def test_a_breach_at_mark_to_market_freezes_and_later_actions_are_rejected(
    services: Services,
) -> None:
    account_id = open_account(services)
    record_marks(services, BTC="100")
    submit(services, account_id, ActionRequest("a-1", "BTC", "buy", size=D("50")))
    catch_up(services)
    record_marks(services, LATER, BTC="89")  # 50 x -11 = -550: past the 5% daily loss

    marked = run_job(services, "prop_mark_to_market", FixedClock(LATER))
    after = submit(services, account_id, ActionRequest("a-2", "BTC", "sell", size=D("50")), LATER)

    assert marked == 1
    assert event_types(services, account_id)[-4:] == [
        "Marked",
        "Breached",
        "Frozen",
        "ActionRejected",
    ]
    assert (after.status, after.reason) == ("rejected", "account-frozen")
    catch_up(services)
    with psycopg.connect(services.url) as conn:
        row = conn.execute(
            "SELECT status, breach, status_reason FROM prop_accounts WHERE account_id = %s",
            (account_id,),
        ).fetchone()
    assert row == ("frozen", "daily-loss-limit", "breach: daily-loss-limit")


def test_mark_to_market_leaves_alone_flat_accounts_and_unchanged_marks(
    services: Services,
) -> None:
    flat = open_account(services, key="flat")
    holding = open_account(services, key="holding")
    record_marks(services, BTC="100")
    submit(services, holding, ActionRequest("a-1", "BTC", "buy", size=D("1")))
    catch_up(services)
    record_marks(services, LATER, BTC="100")  # newer, but the price did not move

    marked = run_job(services, "prop_mark_to_market", FixedClock(LATER))

    assert marked == 0
    assert event_types(services, flat) == ["Opened"]
    assert "Marked" not in event_types(services, holding)


def test_a_day_of_mark_rounds_writes_only_for_the_open_account_holding_a_position(
    services: Services,
) -> None:
    flat = open_account(services, key="flat")
    frozen = open_account(services, key="frozen")
    closed = open_account(services, key="closed")
    holding = open_account(services, key="holding")
    prices = record_marks(services, BTC="100")
    for account_id in (frozen, closed, holding):
        submit(services, account_id, ActionRequest("a-1", "BTC", "buy", size=D("1")))
    prop_trading.freeze(services.event_log, engine(), frozen, "RETRO-CLOCK review")
    prop_trading.close(services.event_log, engine(), prices, closed, "RETRO-CLOCK done")
    catch_up(services)
    before = stored_events(services, flat, frozen, closed, holding)

    marked = []
    for number in range(1, ROUNDS + 1):
        now = NOON + number * ROUND
        record_marks(services, now, BTC=str(100 + number % 5))  # a new price every round
        marked.append(run_job(services, "prop_mark_to_market", FixedClock(now)))

    after = stored_events(services, flat, frozen, closed, holding)
    assert marked == [1] * ROUNDS
    assert {a: after[a] - before[a] for a in (flat, frozen, closed)} == {
        flat: Counter(),
        frozen: Counter(),
        closed: Counter(),
    }
    # Every round a mark that moved, and the first event after midnight starts the UTC day.
    assert after[holding] - before[holding] == Counter({"Marked": ROUNDS, "DayStarted": 1})
    catch_up(services)
    curve = rows(
        services,
        "SELECT account_id, count(*) AS points, max(taken_at) AS last FROM prop_equity_curve"
        " GROUP BY account_id",
    )
    assert {r["account_id"]: (r["points"], r["last"]) for r in curve} == {
        flat: (1, NOON),  # opened
        frozen: (2, NOON),  # opened, filled
        closed: (3, NOON),  # opened, filled, flattened at the close
        holding: (2 + ROUNDS, NOON + ROUNDS * ROUND),  # opened, filled, one per mark
    }
