"""The prop worker jobs: mark-to-market (a breach freezes the account) and equity snapshots."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import psycopg

from aggregates.prop_accounts import ActionRequest
from runtime.clock import FixedClock
from scripts.worker import Worker
from services import prop_trading
from services.bootstrap import Services
from tests.integration.test_prop_trading import (
    NOON,
    engine,
    event_types,
    open_account,
    record_marks,
    submit,
)
from tests.support.jobs import run_job
from tests.support.projections import catch_up

D = Decimal
LATER = NOON + timedelta(minutes=5)


def test_the_worker_runs_both_prop_jobs_on_their_cadences(services: Services) -> None:
    jobs = Worker(services).jobs

    assert jobs["prop_mark_to_market"].seconds == services.settings.prop_mark_interval
    assert jobs["prop_equity_snapshots"].seconds == services.settings.prop_snapshot_interval


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

    marked = run_job(services, "prop_mark_to_market", FixedClock(LATER))

    assert marked == 0
    assert event_types(services, flat) == ["Opened"]
    assert "Marked" not in event_types(services, holding)


def test_equity_snapshots_feed_the_equity_curve_of_every_live_account(
    services: Services,
) -> None:
    live = open_account(services, key="live")
    closed = open_account(services, key="closed")
    prop_trading.close(services.event_log, engine(), record_marks(services), closed, "done")
    catch_up(services)

    taken = [
        prop_trading.snapshot_live_accounts(services, FixedClock(NOON + timedelta(minutes=n)))
        for n in (5, 10)
    ]
    catch_up(services)

    assert taken == [1, 1]
    with psycopg.connect(services.url) as conn:
        curve = conn.execute(
            "SELECT account_id, taken_at, equity FROM prop_equity_snapshots ORDER BY position"
        ).fetchall()
    assert curve == [
        (live, NOON + timedelta(minutes=5), D("10000")),
        (live, NOON + timedelta(minutes=10), D("10000")),
    ]
