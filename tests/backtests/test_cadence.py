"""The cadence driver (issue 19, item 5): an audition trades by itself on replayed candles,
bar by bar, through the normal command path; a restart doubles no order; the decisions are
on the account's audit route; a race account stops at its end; no published version, no
trading."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from aggregates.auditions import Audition
from aggregates.decisions import TradingDecisions, decisions_id
from aggregates.prop_accounts import ActionRequest, PropAccount
from ingest.storage import Batch
from projections.cadence import TradedAccount
from runtime.clock import FixedClock
from runtime.settings import Settings
from services import prop_trading
from services.auditions import EVALUATOR_JOB
from services.bootstrap import Services
from services.cadence import CADENCE_JOB, CadenceDriver, client_action_id
from services.schedule import cadence_driver
from tests.backtests.conftest import FIVE_MINUTES, TREND_GRAPH, candle, publish_graph, waves
from tests.conftest import PROP_READER_TOKEN
from tests.support.auditions import context_at, grant_entitlement, record_mark, short_rules
from tests.support.http import bearer
from tests.support.jobs import run_job
from tests.support.projections import catch_up

HISTORY = 300
READER = bearer(PROP_READER_TOKEN)
STEPS = 60


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return short_rules(settings)


class Market:
    """A fixed series replayed bar by bar: each step closes one more 5-minute candle, marks
    the asset at its close and moves the clock to that close."""

    def __init__(self, services: Services, clock: FixedClock) -> None:
        self.services = services
        self.clock = clock
        self.closes = waves(HISTORY + STEPS)
        self.start = clock() - FIVE_MINUTES * HISTORY
        self.done = 0
        self.write(HISTORY)

    def write(self, n: int) -> None:
        rows = []
        for i in range(self.done, self.done + n):
            opened = self.start + FIVE_MINUTES * i
            rows.append(candle("BTC", opened, self.closes[max(i - 1, 0)], self.closes[i]))
        with self.services.datastore.transaction(commit=True) as cursor:
            Batch(candles=rows).write(cursor)
        self.done += n
        self.clock.now = self.start + FIVE_MINUTES * self.done
        record_mark(self.services, self.clock(), f"{self.closes[self.done - 1]:.4f}")

    def step(self) -> None:
        self.write(1)


def decisions(services: Services, account_id: UUID) -> TradingDecisions | None:
    return services.event_log.read(TradingDecisions, decisions_id(account_id))


def test_an_audition_trades_by_itself_and_a_restart_doubles_no_order(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    market = Market(services, clock)
    published = publish_graph(client, services, TREND_GRAPH)
    owner = published.owner
    grant_entitlement(services, UUID(owner.user_id), clock())
    catch_up(services)
    submitted = client.post(
        "/v1/auditions",
        json={"clone_id": published.clone_id, "version_hash": published.version_id},
        headers=owner.headers,
    )
    assert submitted.status_code == 201, submitted.text
    audition_id = submitted.json()["audition_id"]
    catch_up(services)
    audition = client.get(f"/v1/auditions/{audition_id}", headers=owner.headers).json()
    account_id = UUID(audition["prop_account_id"])

    ordered = 0
    for step in range(STEPS):
        done = run_job(services, CADENCE_JOB, clock)
        assert done.decided == 1, done
        ordered += done.ordered
        if step == STEPS // 2:
            # A restart mid-run: the same bar again, by the same job and by a fresh driver.
            again = run_job(services, CADENCE_JOB, clock)
            fresh = cadence_driver(services, clock)()
            assert (again.decided, fresh.decided) == (0, 0)
            assert again.skipped["already-decided"] == fresh.skipped["already-decided"] == 1
        market.step()
    assert ordered >= 2, "the trend follower should trade the waves"

    account = services.event_log.read(PropAccount, account_id)
    book = decisions(services, account_id)
    assert account is not None and book is not None
    assert book.count == STEPS
    catch_up(services)
    decided = [
        e
        for e in services.event_log.events.get(originator_id=book.id)
        if isinstance(e, TradingDecisions.Decided)
    ]
    filled = [e for e in decided if e.answer["status"] == "filled"]
    sent = [e.client_action_id for e in decided if e.client_action_id]
    assert len(sent) == ordered == len(set(sent))
    assert len(filled) >= 2, [e.answer for e in decided if e.client_action_id]
    fills = client.get(f"/v1/prop/accounts/{account_id}/fills?limit=100", headers=READER).json()
    assert len(fills["items"]) == len(filled)  # one fill per filled order: none doubled

    # The action the driver sent for an ordered bar, sent again (a driver that crashed before
    # recording its decision): the prop account answers the first result, no new fill.
    last = filled[-1]
    assert last.client_action_id == client_action_id(account_id, "BTC", last.bar_close_time)
    assert last.version_hash == published.version_id and len(last.data_hash) == 64
    first = last.answer["fill"]
    fill = first or {}
    replay = prop_trading.submit_action(
        services.event_log,
        context_at(clock(), "worker:engine_cadence"),
        services.prices,
        account_id,
        _request_of(last.client_action_id, fill),
        max_mark_age=timedelta(seconds=services.settings.prop_max_mark_age),
    ).result
    assert replay.status == "filled" and replay.fill == first
    catch_up(services)
    again = client.get(f"/v1/prop/accounts/{account_id}/fills?limit=100", headers=READER).json()
    assert len(again["items"]) == len(filled)

    # The decisions are on the account's audit route beside its own events.
    audit = client.get(f"/v1/prop/accounts/{account_id}/audit?limit=100", headers=READER).json()
    assert "items" in audit, audit
    types = [item["event_type"] for item in audit["items"]]
    assert sum("Decided" in t for t in types) == STEPS, types[:5]
    assert any("Filled" in t or "Fill" in t for t in types), set(types)

    # The evaluator judges it at its due time.
    clock.now = datetime.fromisoformat(audition["due_at"]) + timedelta(seconds=1)
    record_mark(services, clock(), f"{market.closes[market.done - 1]:.4f}")
    run_job(services, EVALUATOR_JOB, clock)
    catch_up(services)
    judged = services.event_log.read(Audition, UUID(audition_id))
    assert judged is not None and judged.status in ("passed", "failed"), judged
    # A judged audition's account is no longer on the roster.
    assert run_job(services, CADENCE_JOB, clock).decided == 0


def _request_of(cid: str, fill: dict[str, Any]) -> ActionRequest:
    return ActionRequest(
        cid,
        fill["asset"],
        fill["side"],
        size=Decimal(str(fill["size"])),
        leverage=Decimal(str(fill.get("leverage", "1"))),
    )


def test_a_race_account_stops_at_its_end_and_no_published_version_is_skipped(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    market = Market(services, clock)
    published = publish_graph(client, services, TREND_GRAPH)
    clone_id = UUID(published.clone_id)
    ends = clock() + FIVE_MINUTES * 3

    def open_race_account(unit: Any) -> UUID:
        return prop_trading.open_account_in(
            unit,
            key=f"race-{uuid4()}",
            owner_id=UUID(published.owner.user_id),
            clone_id=clone_id,
            clone_version_hash=published.version_id,
            purpose="race",
            starting_equity=Decimal("10000"),
            rule_set_name="race",
            trading_ends_at=ends,
        ).id

    account_id = services.event_log.execute(context_at(clock()), open_race_account).result
    race = TradedAccount(account_id, clone_id, "race", published.version_id, None)
    unpublished = replace(race, account_id=uuid4(), version_hash="0" * 64)
    driver = replace(cadence_driver(services, clock), roster=lambda limit: [race, unpublished])
    assert isinstance(driver, CadenceDriver)
    decided = 0
    for _ in range(5):
        done = driver()
        decided += done.decided
        assert done.skipped["no-published-version"] == 1
        market.step()
    assert decided == 3  # the bars before the end time; none after
    assert driver().skipped["trading-ended"] == 1
    assert decisions(services, unpublished.account_id) is None
