"""Every scheduled job runs on the clock it is given, and every command records its cause."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import psycopg
from fastapi.testclient import TestClient

from aggregates.prop_accounts import ActionRequest
from runtime.clock import FixedClock
from runtime.schema import EVENTS_TABLE
from services.bootstrap import Services
from services.schedule import scheduled_jobs
from tests.integration.test_prop_trading import open_account, record_marks, submit
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import sign_in

LATE = datetime(2031, 6, 1, 9, 30, tzinfo=UTC)
"""A time no system clock would give during the test run."""


def event_metadata(services: Services, topic_suffix: str) -> list[dict[str, object]]:
    with psycopg.connect(services.url) as conn:
        rows = conn.execute(
            f"SELECT state FROM {EVENTS_TABLE} WHERE topic LIKE %s ORDER BY notification_id",
            (f"%{topic_suffix}",),
        ).fetchall()
    return [orjson.loads(bytes(state)) for (state,) in rows]


def test_every_scheduled_job_runs_a_round_on_an_injected_clock(services: Services) -> None:
    clock = FixedClock(LATE)
    names = sorted(scheduled_jobs(services, clock=clock))

    for name in names:
        run_job(services, name, clock)

    assert {"audition_evaluator", "prop_mark_to_market", "deposit_confirmations"} <= set(names)
    with psycopg.connect(services.url) as conn:
        attempts = conn.execute(
            "SELECT DISTINCT last_attempt_at FROM ingest_health WHERE kind = 'source'"
        ).fetchall()
    assert attempts == [(LATE,)], "ingestion rounds take their time from the injected clock"


def test_a_job_records_its_clock_its_run_and_the_work_item_that_caused_it(
    services: Services,
) -> None:
    noon = LATE - timedelta(hours=1)
    account_id = open_account(services)
    record_marks(services, noon, BTC="100")
    submit(services, account_id, ActionRequest("a-1", "BTC", "buy", size=Decimal("1")), noon)
    catch_up(services)
    record_marks(services, LATE, BTC="101")

    assert run_job(services, "prop_mark_to_market", FixedClock(LATE)) == 1

    (marked,) = event_metadata(services, "PropAccount.Marked")
    run = f"prop_mark_to_market:{LATE.isoformat()}"
    assert marked["actor"] == "worker:prop_mark_to_market"
    assert marked["correlation_id"] == run
    assert marked["causation_id"] == f"{run}:{account_id}"


def test_a_command_over_http_records_the_request_as_its_cause(client: TestClient) -> None:
    owner = sign_in(client)
    response = client.post("/v1/clones", json={"name": "RETRO-CLOCK"}, headers=owner.headers)

    assert response.status_code == 201
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    (created,) = event_metadata(services, "Clone.Created")
    assert created["correlation_id"]
    assert created["causation_id"] == f"request:{created['correlation_id']}"
