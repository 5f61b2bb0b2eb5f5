"""Prop trading against real PostgreSQL: marks from `market_marks`, idempotent actions,
fifty concurrent actions on one account, snapshots, and the read models."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.rows import dict_row

from aggregates.base import CommandContext, acting
from aggregates.errors import IdempotencyKeyReusedError, NotFoundError
from aggregates.ports import Mark
from aggregates.prop_accounts import ActionRequest, ActionResult, PropAccount
from aggregates.prop_rules import RuleSet
from ingest.prices import PostgresPriceSource
from projections.rebuild import rebuild
from services import prop_trading
from services.bootstrap import Services
from tests.support.projections import catch_up
from tests.unit.test_prop_accounts import RULES

D = Decimal
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MAX_MARK_AGE = timedelta(seconds=60)
OWNER = UUID("00000000-0000-4000-8000-00000000cafe")
CLONE = UUID("00000000-0000-4000-8000-0000000c1011")


def engine(at: datetime = NOON) -> CommandContext:
    return CommandContext(actor="service:engine", occurred_at=at, correlation_id="req-prop")


def open_account(services: Services, key: str = "RETRO-CLOCK", rule_set: str = "audition") -> UUID:
    written = prop_trading.open_account(
        services.event_log,
        engine(),
        key=key,
        owner_id=OWNER,
        clone_id=CLONE,
        clone_version_hash="sha256:RETRO-CLOCK",
        purpose="audition",
        starting_equity=D("10000"),
        rule_set_name=rule_set,
    )
    return written.result


def open_with_rules(services: Services, rules: RuleSet) -> UUID:
    """An account on rules outside the catalogue (the aggregate takes any rule set)."""

    def decide(unit: Any) -> UUID:
        account = PropAccount.open(
            uuid4(),
            owner_id=OWNER,
            clone_id=uuid4(),
            clone_version_hash="sha256:RETRO-CLOCK",
            purpose="race",
            starting_equity=D("10000"),
            rules=rules,
            request_fingerprint="",
        )
        return unit.add(account).id

    return services.event_log.execute(engine(), decide).result


def record_marks(services: Services, at: datetime = NOON, **prices: str) -> PostgresPriceSource:
    source = PostgresPriceSource(services.projections.datastore)
    source.record([Mark(asset, D(price), at, "hyperliquid") for asset, price in prices.items()])
    return source


def submit(
    services: Services, account_id: UUID, request: ActionRequest, at: datetime = NOON
) -> ActionResult:
    return prop_trading.submit_action(
        services.event_log,
        engine(at),
        PostgresPriceSource(services.projections.datastore),
        account_id,
        request,
        max_mark_age=MAX_MARK_AGE,
    ).result


def event_types(services: Services, aggregate_id: UUID) -> list[str]:
    return [type(e).__name__ for e in services.event_log.events.get(aggregate_id)]


def rows(services: Services, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(services.url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def test_an_action_fills_at_the_latest_stored_mark(services: Services) -> None:
    account_id = open_account(services)
    record_marks(services, NOON - timedelta(seconds=30), BTC="99")
    record_marks(services, NOON - timedelta(seconds=5), BTC="100")

    result = submit(services, account_id, ActionRequest("a-1", "BTC", "buy", size=D("2")))

    assert result.status == "filled" and result.fill is not None
    assert result.fill["mark_price"] == D("100") and result.fill["price"] == D("100.02")
    assert result.fill["mark_observed_at"] == NOON - timedelta(seconds=5)


def test_a_retry_with_the_same_client_action_id_returns_the_first_result(
    services: Services,
) -> None:
    account_id = open_account(services)
    record_marks(services, BTC="100")
    request = ActionRequest("a-1", "BTC", "buy", size=D("2"))
    first = submit(services, account_id, request)
    record_marks(services, NOON + timedelta(seconds=1), BTC="150")

    again = submit(services, account_id, request, at=NOON + timedelta(seconds=2))

    assert again == first
    assert event_types(services, account_id).count("Filled") == 1


def test_the_same_client_action_id_with_another_body_is_refused(services: Services) -> None:
    account_id = open_account(services)
    record_marks(services, BTC="100")
    submit(services, account_id, ActionRequest("a-1", "BTC", "buy", size=D("2")))

    with pytest.raises(IdempotencyKeyReusedError):
        submit(services, account_id, ActionRequest("a-1", "BTC", "sell", size=D("2")))


def test_a_rejected_action_is_idempotent_too(services: Services) -> None:
    account_id = open_account(services)
    request = ActionRequest("a-1", "BTC", "buy", size=D("2"))
    first = submit(services, account_id, request)
    record_marks(services, BTC="100")

    again = submit(services, account_id, request)

    assert first.reason == again.reason == "mark-unavailable"
    assert event_types(services, account_id).count("ActionRejected") == 1


def test_an_action_on_an_unknown_account_is_not_found(services: Services) -> None:
    with pytest.raises(NotFoundError):
        submit(services, uuid4(), ActionRequest("a-1", "BTC", "buy", size=D("1")))


def test_opening_twice_with_one_key_opens_one_account(services: Services) -> None:
    first = open_account(services, key="audition:RETRO-CLOCK")

    second = open_account(services, key="audition:RETRO-CLOCK")

    assert first == second == prop_trading.account_id_for("audition:RETRO-CLOCK")
    assert event_types(services, first) == ["Opened"]


def test_fifty_concurrent_actions_are_each_filled_or_rejected_exactly_once(
    services: Services,
) -> None:
    # Room for exactly 20 buys of 1 BTC at 100: gross exposure tops out at 2,000.
    rules = replace(RULES, min_action_interval=0, max_gross_exposure=D("0.2"))
    account_id = open_with_rules(services, rules)
    record_marks(services, BTC="100")
    start = threading.Barrier(50)
    results: dict[str, ActionResult] = {}
    errors: list[BaseException] = []

    def engine_thread(number: int) -> None:
        request = ActionRequest(f"a-{number}", "BTC", "buy", size=D("1"))
        start.wait()
        try:
            results[request.client_action_id] = submit(services, account_id, request)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=engine_thread, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    statuses = [r.status for r in results.values()]
    assert len(results) == 50 and statuses.count("filled") == 20
    assert {r.reason for r in results.values() if r.status == "rejected"} == {
        "gross-exposure-too-large"
    }
    events = list(services.event_log.events.get(account_id))
    recorded = [e.client_action_id for e in events if hasattr(e, "client_action_id")]
    assert sorted(recorded) == sorted(results)
    account = services.event_log.repository.get(account_id)
    assert account.position("BTC").size == D("20") and account.fill_count == 20
    catch_up(services)
    assert rows(services, "SELECT size FROM prop_positions WHERE account_id = %s", account_id) == [
        {"size": D("20")}
    ]
    assert rows(
        services, "SELECT fills, rejections FROM prop_accounts WHERE account_id = %s", account_id
    ) == [{"fills": 20, "rejections": 30}]


def test_a_long_history_loads_from_a_snapshot_and_equals_a_full_replay(
    services: Services,
) -> None:
    rules = replace(RULES, min_action_interval=0, fee_bps=D("3"), slippage_bps=D("1"))
    with acting(engine()):
        account = PropAccount.open(
            uuid4(),
            owner_id=OWNER,
            clone_id=uuid4(),
            clone_version_hash="h",
            purpose="race",
            starting_equity=D("10000"),
            rules=rules,
            request_fingerprint="",
        )
        for number in range(250):
            price = D(100 + number % 7)
            marks: dict[str, Mark | None] = {"BTC": Mark("BTC", price, NOON, "t")}
            side = "buy" if number % 3 else "sell"
            request = ActionRequest(f"a-{number}", "BTC", side, size=D("0.5"))
            account.submit(request, marks, NOON, MAX_MARK_AGE)
    services.event_log.save(account)

    loaded = services.event_log.repository.get(account.id)
    replayed: Any = None
    for event in services.event_log.events.get(account.id):
        replayed = event.mutate(replayed)

    snapshots = services.event_log.snapshots
    assert snapshots is not None
    assert [s.originator_version for s in snapshots.get(account.id)] == [100, 200]
    assert vars(loaded) == vars(replayed)
    assert loaded.fill_count == 250


def test_the_read_models_follow_fills_marks_and_rejections(services: Services) -> None:
    account_id = open_account(services)
    record_marks(services, BTC="100", ETH="10")
    submit(services, account_id, ActionRequest("a-1", "BTC", "buy", size=D("10")))
    submit(services, account_id, ActionRequest("a-2", "ETH", "sell", size=D("100")))
    submit(services, account_id, ActionRequest("a-3", "DOGE", "buy", size=D("1")))
    record_marks(services, NOON + timedelta(minutes=1), BTC="110")
    prop_trading.mark_to_market(
        services.event_log,
        engine(NOON + timedelta(minutes=1)),
        PostgresPriceSource(services.projections.datastore),
        account_id,
    )

    catch_up(services)

    account = services.event_log.repository.get(account_id)
    (summary,) = rows(services, "SELECT * FROM prop_accounts WHERE account_id = %s", account_id)
    valuation = account.valuation()
    assert (summary["equity"], summary["unrealized_pnl"]) == (
        valuation.equity,
        valuation.unrealized,
    )
    assert (summary["fills"], summary["rejections"], summary["fees_paid"]) == (
        2,
        1,
        account.fees_paid,
    )
    positions = rows(
        services,
        "SELECT asset, size, mark_price FROM prop_positions WHERE account_id = %s ORDER BY asset",
        account_id,
    )
    assert positions == [
        {"asset": "BTC", "size": D("10"), "mark_price": D("110")},
        {"asset": "ETH", "size": D("-100"), "mark_price": D("10")},
    ]
    fills = rows(services, "SELECT number, client_action_id FROM prop_fills ORDER BY number")
    assert fills == [
        {"number": 1, "client_action_id": "a-1"},
        {"number": 2, "client_action_id": "a-2"},
    ]


@pytest.mark.parametrize("name", ["prop_accounts", "prop_fills", "prop_equity_curve"])
def test_a_rebuilt_read_model_has_the_same_rows(services: Services, name: str) -> None:
    account_id = open_account(services)
    record_marks(services, BTC="100")
    submit(services, account_id, ActionRequest("a-1", "BTC", "buy", size=D("10")))
    later = NOON + timedelta(minutes=1)
    prices = record_marks(services, later, BTC="103")
    prop_trading.mark_to_market(services.event_log, engine(later), prices, account_id)
    prop_trading.close(services.event_log, engine(later), prices, account_id, "done")
    catch_up(services)
    tables = services.projections.projection_class(name).view_class.tables
    before = {t: rows(services, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}

    rebuild(services.projections, name)

    assert {t: rows(services, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables} == before
