"""A cadence the market-data store does not hold is refused at once (publishing, dry runs,
backtests: 422 `cadence-not-ingested`, naming the cadences available, nothing written), a
graph without a cadence runs on the stored bars everywhere, and one account's failure
never stops the cadence driver's round for the others (a remote model's huge integer
score is an undetermined bar, not an exception)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from pydantic import HttpUrl

from api.routers.clones import graph_rules
from ingest.providers.model_nodes import MODEL_NODE_PURPOSE
from ingest.storage import Batch, CandleRow
from runtime.clock import FixedClock
from runtime.settings import ModelProviderSpec
from services import cloning
from services.bootstrap import Services
from services.schedule import cadence_driver
from tests.backtests.conftest import TREND_GRAPH, publish_graph
from tests.backtests.test_cadence_models import (
    MODEL_GRAPH,
    Candles,
    decided,
    open_account,
    with_cadence,
)
from tests.engine.servers import ChatServer, completion
from tests.support.auditions import context_at, short_rules
from tests.support.clones import create_clone, save_draft
from tests.support.http import assert_problem
from tests.support.projections import catch_up
from tests.support.wallets import sign_in


@pytest.fixture
def settings(settings: Any) -> Any:
    return short_rules(settings)


def clone_events(services: Services, clone_id: str) -> int:
    return len(list(services.event_log.events.get(originator_id=UUID(clone_id))))


def backtest_jobs(services: Services) -> int:
    with services.datastore.transaction(commit=False) as cursor:
        cursor.execute("SELECT count(*) AS n FROM job_queue WHERE kind = 'backtest'")
        row = cursor.fetchone()
    return int(row["n"]) if row else 0


@pytest.mark.usefixtures("market")
def test_publishing_a_cadence_not_stored_is_refused_and_writes_nothing(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, with_cadence(TREND_GRAPH, "1h"))
    before = clone_events(services, clone_id)

    refused = client.post(f"/v1/clones/{clone_id}/versions", headers=owner.headers)

    body = assert_problem(refused, 422, "cadence-not-ingested")
    assert "1h" in body["detail"] and "5m" in body["detail"]
    (fault,) = body["errors"]
    assert (fault["pointer"], fault["available"]) == ("/cadence", ["5m"])  # 5m is ingested
    assert clone_events(services, clone_id) == before

    # The stored cadence publishes, and the cadence driver trades it.
    published = publish_graph(client, services, with_cadence(TREND_GRAPH, "5m"), owner=owner)
    account = open_account(services, clock, published)
    driver = replace(cadence_driver(services, clock), roster=lambda limit: [account])
    done = driver()
    assert done.decided == 1 and not done.skipped
    (event,) = decided(services, account.account_id)
    assert event.interval == "5m"


def test_a_cadence_whose_candles_are_stored_recently_publishes(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    """Candles of another interval written lately (another ingestion, a backfill) are held;
    ones a day old and more are not."""
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, with_cadence(TREND_GRAPH, "15m"))
    url = f"/v1/clones/{clone_id}/versions"
    quarter = timedelta(minutes=15)

    def store_quarter_hour(opened: Any) -> None:
        row = CandleRow(
            source="hyperliquid",
            instrument="BTC",
            interval="15m",
            open_time=opened,
            close_time=opened + quarter - timedelta(milliseconds=1),
            open=Decimal("100"),
            high=Decimal("101"),
            low=Decimal("99"),
            close=Decimal("100.5"),
            volume=Decimal("1"),
            trades=3,
        )
        with services.datastore.transaction(commit=True) as cursor:
            Batch(candles=[row]).write(cursor)

    store_quarter_hour(clock() - timedelta(days=2))
    assert_problem(client.post(url, headers=owner.headers), 422, "cadence-not-ingested")
    store_quarter_hour(clock() - quarter * 2)
    assert client.post(url, headers=owner.headers).status_code == 201


@pytest.mark.usefixtures("market")
def test_a_dry_run_or_backtest_at_a_cadence_not_stored_is_refused(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    # A version published before publishing checked cadences (straight through the service).
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, with_cadence(TREND_GRAPH, "1h"))
    version = cloning.publish_version(
        services.event_log,
        context_at(clock(), f"user:{owner.user_id}"),
        clone_id=UUID(clone_id),
        owner_id=UUID(owner.user_id),
        rules=graph_rules(services.settings),
    ).result
    catch_up(services)
    base = f"/v1/clones/{clone_id}/versions/{version.version_id}"

    dry = assert_problem(
        client.post(f"{base}/dry-run", json={}, headers=owner.headers), 422, "cadence-not-ingested"
    )
    assert dry["errors"][0]["available"] == ["5m"]
    queued = client.post(f"{base}/backtests", json={"bars": 50}, headers=owner.headers)
    assert_problem(queued, 422, "cadence-not-ingested")
    assert backtest_jobs(services) == 0
    # Asked outright for the stored bars, it runs on them.
    ran = client.post(f"{base}/dry-run", json={"bars": 10, "interval": "5m"}, headers=owner.headers)
    assert ran.status_code == 200, ran.text
    assert ran.json()["interval"] == "5m"


@pytest.mark.usefixtures("market")
def test_a_graph_without_a_cadence_is_dry_run_and_traded_on_the_stored_bars(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    published = publish_graph(client, services, TREND_GRAPH)
    dry = client.post(published.url("/dry-run"), json={"bars": 5}, headers=published.owner.headers)
    assert dry.status_code == 200, dry.text
    account = open_account(services, clock, published)
    driver = replace(cadence_driver(services, clock), roster=lambda limit: [account])
    assert driver.interval == services.settings.ingest_candle_interval
    assert driver().decided == 1
    (event,) = decided(services, account.account_id)
    assert event.interval == dry.json()["interval"] == services.settings.ingest_candle_interval


@pytest.fixture
def provider() -> Any:
    server = ChatServer().start()
    yield server
    server.stop()


def test_a_huge_integer_score_from_a_provider_leaves_the_bar_undetermined(
    client: TestClient, services: Services, clock: FixedClock, provider: ChatServer
) -> None:
    settings = services.settings.model_copy(
        update={
            "model_providers": [
                ModelProviderSpec(name="primary", base_url=HttpUrl(provider.url), model="gpt-test")
            ],
            "model_routes": {MODEL_NODE_PURPOSE: ["primary"]},
            "model_timeout": 2.0,
        }
    )
    Candles(services, clock)
    published = publish_graph(client, services, MODEL_GRAPH)
    account = open_account(services, clock, published)
    driver = replace(
        cadence_driver(replace(services, settings=settings), clock),
        roster=lambda limit: [account],
    )
    provider.reply(completion({"scores": [10**400]}))

    done = driver()

    assert done.decided == 1 and not done.skipped
    (event,) = decided(services, account.account_id)
    (call,) = event.model_calls or []
    assert (call["provider"], call["outcome"]) == ("primary", "ok")
    assert event.outputs["m"] == "nan"  # undetermined: no score read
    assert event.target_exposure == "0.0" and event.client_action_id is None


def test_one_accounts_failure_never_stops_the_others_in_the_round(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    candles = Candles(services, clock)
    broken = publish_graph(client, services, with_cadence(TREND_GRAPH, "1m"))
    sound = publish_graph(client, services, with_cadence(TREND_GRAPH, "5m"))
    failing, trading = open_account(services, clock, broken), open_account(services, clock, sound)
    # A bad tick: the latest closed 1m bar closed at 0. The 1m clone's decision is to be
    # short, and sizing a position at a price of 0 divides by zero: not a domain refusal.
    zero = replace(candles.row("1m", candles.minutes - 1), close=Decimal("0"), low=Decimal("0"))
    with services.datastore.transaction(commit=True) as cursor:
        Batch(candles=[zero]).write(cursor)
    roster = [failing, trading]  # the failing account's turn comes first
    driver = replace(cadence_driver(services, clock), roster=lambda limit: roster)

    done = driver()

    assert done.skipped == {"error": 1}
    assert done.decided == 1
    assert decided(services, failing.account_id) == []  # tried again next round
    (event,) = decided(services, trading.account_id)
    assert event.interval == "5m"
    again = driver()  # the same bars: the fault again, the other account's bar decided
    assert again.skipped == {"error": 1, "already-decided": 1}
