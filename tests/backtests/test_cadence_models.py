"""The cadence driver per clone and through the model router (issue 19, items 3 and 5):
each account trades at its graph's cadence (a 5m clone once per closed 5m bar, a 1m clone
every minute, side by side in one driver running every minute); a graph's model node asks
the router (purpose `model-node`) about the latest bar, and the calls' tokens are recorded
with the decision and counted in the clone's usage, exactly as the provider reported them
(the offline formula; a loopback OpenAI-compatible server's `usage`; a 429 falling back to
the offline provider)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import HttpUrl

from aggregates.decisions import TradingDecisions, decisions_id
from ingest.providers.model_nodes import INSTRUCTIONS, MODEL_NODE_PURPOSE
from ingest.providers.offline import tokens
from ingest.storage import Batch, CandleRow
from projections.cadence import TradedAccount
from runtime.clock import FixedClock
from runtime.settings import ModelProviderSpec, Settings
from services import prop_trading
from services.bootstrap import Services
from services.cadence import CadenceDriver
from services.schedule import cadence_driver
from tests.backtests.conftest import TREND_GRAPH, Published, publish_graph, waves
from tests.engine.servers import ChatServer, completion, rate_limited
from tests.support.auditions import context_at, record_mark, short_rules
from tests.support.projections import catch_up
from tests.support.wallets import sign_in

MINUTE = timedelta(minutes=1)
STEP = {"1m": MINUTE, "5m": timedelta(minutes=5)}
TEMPLATE = "Hourly return, averaged over 6 bars: {{trend}}. Score -1 to 1."
MODEL_GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "ret", "kind": "data_source", "channel": "hyperliquid.BTC.return_1h"},
        {"id": "trend", "kind": "feature_transform", "transform": "sma", "window": 6},
        {
            "id": "m",
            "kind": "model",
            "provider": "openai",
            "model": "gpt-test",
            "prompt": {"template": TEMPLATE, "variables": ["trend"]},
        },
        {"id": "sig", "kind": "signal", "long_above": "0.0005", "short_below": "-0.0005"},
        {
            "id": "risk",
            "kind": "risk_rule",
            "asset": "BTC",
            "max_position_fraction": "0.5",
            "stop_loss_fraction": "0.05",
        },
        {"id": "act", "kind": "action", "asset": "BTC", "size_fraction": "1"},
    ],
    "edges": [
        {"from": "ret", "to": "trend"},
        {"from": "trend", "to": "m", "port": "trend"},
        {"from": "m", "to": "sig"},
        {"from": "sig", "to": "risk"},
        {"from": "risk", "to": "act"},
    ],
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return short_rules(settings)


def with_cadence(graph: dict[str, Any], cadence: str) -> dict[str, Any]:
    declared = copy.deepcopy(graph)
    declared["cadence"] = cadence
    return declared


class Candles:
    """BTC candles of two intervals from one wave series, written as they close; the clock
    moves a minute per step and the asset is marked at the latest close."""

    def __init__(self, services: Services, clock: FixedClock, history: int = 300) -> None:
        self.services = services
        self.clock = clock
        self.closes = waves(history * 5 + 60)
        self.start = clock() - STEP["5m"] * history
        self.minutes = 0
        self.advance(history * 5)

    def row(self, interval: str, index: int) -> CandleRow:
        size = STEP[interval]
        per = size // MINUTE
        opened = self.start + size * index
        close = self.closes[(index + 1) * per - 1]
        before = self.closes[max(index * per - 1, 0)]
        return CandleRow(
            source="hyperliquid",
            instrument="BTC",
            interval=interval,
            open_time=opened,
            close_time=opened + size - timedelta(milliseconds=1),
            open=Decimal(f"{before:.4f}"),
            high=Decimal(f"{max(before, close) * 1.001:.4f}"),
            low=Decimal(f"{min(before, close) * 0.999:.4f}"),
            close=Decimal(f"{close:.4f}"),
            volume=Decimal("3"),
            trades=9,
        )

    def advance(self, minutes: int) -> None:
        rows = []
        for m in range(self.minutes, self.minutes + minutes):
            rows.append(self.row("1m", m))
            if (m + 1) % 5 == 0:
                rows.append(self.row("5m", (m + 1) // 5 - 1))
        with self.services.datastore.transaction(commit=True) as cursor:
            Batch(candles=rows).write(cursor)
        self.minutes += minutes
        self.clock.now = self.start + MINUTE * self.minutes
        record_mark(self.services, self.clock(), f"{self.closes[self.minutes - 1]:.4f}")


def open_account(services: Services, clock: FixedClock, published: Published) -> TradedAccount:
    clone_id = UUID(published.clone_id)

    def open_it(unit: Any) -> UUID:
        return prop_trading.open_account_in(
            unit,
            key=f"engine-{uuid4()}",
            owner_id=UUID(published.owner.user_id),
            clone_id=clone_id,
            clone_version_hash=published.version_id,
            purpose="race",
            starting_equity=Decimal("10000"),
            rule_set_name="race",
            trading_ends_at=clock() + timedelta(days=1),
        ).id

    account_id = services.event_log.execute(context_at(clock()), open_it).result
    return TradedAccount(account_id, clone_id, "race", published.version_id, None)


def decided(services: Services, account_id: UUID) -> list[TradingDecisions.Decided]:
    return [
        e
        for e in services.event_log.events.get(originator_id=decisions_id(account_id))
        if isinstance(e, TradingDecisions.Decided)
    ]


def test_each_clone_trades_at_its_cadence(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    candles = Candles(services, clock)
    five = publish_graph(client, services, with_cadence(TREND_GRAPH, "5m"))
    one = publish_graph(client, services, with_cadence(TREND_GRAPH, "1m"))
    plain = publish_graph(client, services, TREND_GRAPH)  # no cadence: the engine's default
    assert len({five.version_id, one.version_id, plain.version_id}) == 3
    roster = [open_account(services, clock, p) for p in (five, one, plain)]
    driver = replace(cadence_driver(services, clock), roster=lambda limit: roster)
    assert isinstance(driver, CadenceDriver) and driver.interval == "5m"

    rounds = 11
    for minute in range(rounds):  # a round a minute, as the worker runs it
        if minute:
            candles.advance(1)
        driver()

    at_five, at_one, at_default = (decided(services, a.account_id) for a in roster)
    assert len(at_one) == rounds  # a closed 1m bar every round
    assert len(at_five) == len(at_default) == 3  # the start, +5 and +10 minutes
    assert {e.interval for e in at_one} == {"1m"}
    assert {e.interval for e in at_five} == {e.interval for e in at_default} == {"5m"}
    five_closes = [e.bar_close_time for e in at_five]
    assert [b - a for a, b in itertools.pairwise(five_closes)] == [300_000] * 2
    assert all((t + 1) % 300_000 == 0 for t in five_closes)  # each a 5m bar's close
    one_closes = [e.bar_close_time for e in at_one]
    assert [b - a for a, b in itertools.pairwise(one_closes)] == [60_000] * 10
    # The same bar of another cadence is another decision: no id is shared.
    ids = [e.client_action_id for e in at_five + at_one if e.client_action_id]
    assert len(ids) == len(set(ids))


def test_a_model_node_asks_the_offline_provider_and_its_tokens_are_recorded(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    candles = Candles(services, clock)
    published = publish_graph(client, services, MODEL_GRAPH)
    account = open_account(services, clock, published)
    driver = replace(cadence_driver(services, clock), roster=lambda limit: [account])
    for _ in range(3):
        assert driver().decided == 1
        candles.advance(5)

    events = decided(services, account.account_id)
    assert len(events) == 3
    prompt_tokens = completion_tokens = 0
    for event in events:
        (call,) = event.model_calls or []
        assert (call["purpose"], call["provider"], call["outcome"]) == (
            MODEL_NODE_PURPOSE,
            "offline",
            "ok",
        )
        # The offline formula: the prompt with the bar's value filled in, and the answer.
        trend, score = float(event.outputs["trend"]), float(event.outputs["m"])
        assert score == trend / (1 + abs(trend))
        prompt = TEMPLATE.replace("{{trend}}", repr(trend))
        assert call["prompt_tokens"] == tokens(f"{INSTRUCTIONS}\n{prompt}")
        assert call["completion_tokens"] == tokens(orjson.dumps({"scores": [score]}).decode())
        prompt_tokens += call["prompt_tokens"]
        completion_tokens += call["completion_tokens"]

    catch_up(services)
    owner = sign_in(client, published.owner.wallet)
    usage = client.get(f"/v1/clones/{published.clone_id}/usage", headers=owner.headers).json()
    (by_model,) = [m for m in usage["by_model"] if m["purpose"] == MODEL_NODE_PURPOSE]
    assert (by_model["calls"], by_model["provider"]) == (3, "offline")
    assert (by_model["prompt_tokens"], by_model["completion_tokens"]) == (
        prompt_tokens,
        completion_tokens,
    )
    # The owner's usage counts them; the daily generation budget does not.
    mine = client.get("/v1/me/usage", headers=owner.headers).json()
    assert mine["today"]["total_tokens"] == prompt_tokens + completion_tokens
    assert mine["budget"]["used_tokens"] == 0


@pytest.fixture
def provider() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


def test_a_model_node_through_a_loopback_provider_falls_back_on_a_429(
    client: TestClient, services: Services, clock: FixedClock, provider: ChatServer
) -> None:
    settings = services.settings.model_copy(
        update={
            "model_providers": [
                ModelProviderSpec(name="primary", base_url=HttpUrl(provider.url), model="gpt-test")
            ],
            "model_routes": {MODEL_NODE_PURPOSE: ["primary", "offline"]},
            "model_timeout": 2.0,
        }
    )
    candles = Candles(services, clock)
    published = publish_graph(client, services, MODEL_GRAPH)
    account = open_account(services, clock, published)
    driver = replace(
        cadence_driver(replace(services, settings=settings), clock),
        roster=lambda limit: [account],
    )
    provider.reply(
        completion({"scores": [0.9]}, prompt_tokens=61, completion_tokens=7, cached_tokens=32),
        rate_limited("7"),
    )
    assert driver().decided == 1
    candles.advance(5)
    assert driver().decided == 1

    first, second = decided(services, account.account_id)
    (answered,) = first.model_calls or []
    assert float(first.outputs["m"]) == 0.9, (first.model_calls, first.outputs)
    assert first.target_exposure == "0.5"  # 0.9 is above long_above: long, capped at half
    assert (answered["provider"], answered["model"], answered["outcome"]) == (
        "primary",
        "gpt-test-2026-01-01",
        "ok",
    )
    assert (
        answered["prompt_tokens"],
        answered["completion_tokens"],
        answered["cached_tokens"],
    ) == (61, 7, 32)
    limited, fallback = second.model_calls or []
    assert (limited["provider"], limited["outcome"], limited["retry_after_ms"]) == (
        "primary",
        "rate-limited",
        7000,
    )
    assert (fallback["provider"], fallback["outcome"]) == ("offline", "ok")
    trend = float(second.outputs["trend"])
    assert float(second.outputs["m"]) == trend / (1 + abs(trend))
    # The provider was asked for the node's scores against their schema, the bar's prompt.
    sent = provider.requests[0]
    assert sent["response_format"]["json_schema"]["name"] == "model_node_scores"
    assert "{{trend}}" not in sent["messages"][-1]["content"]

    catch_up(services)
    owner = sign_in(client, published.owner.wallet)
    usage = client.get(f"/v1/clones/{published.clone_id}/usage", headers=owner.headers).json()
    assert usage["total"]["calls"] == 3 and usage["total"]["failed_calls"] == 1
    by = {(m["provider"], m["purpose"]): m for m in usage["by_model"]}
    assert by[("primary", MODEL_NODE_PURPOSE)]["cached_tokens"] == 32


def test_decisions_of_a_started_clock_never_name_a_forming_bar(
    services: Services, clock: FixedClock, client: TestClient
) -> None:
    """A 5m clone decided mid-bar reads the 5m bar that closed, not the forming one."""
    candles = Candles(services, clock)
    five = publish_graph(client, services, with_cadence(TREND_GRAPH, "5m"))
    account = open_account(services, clock, five)
    driver = replace(cadence_driver(services, clock), roster=lambda limit: [account])
    candles.advance(3)  # three minutes into a 5m bar
    driver()
    (event,) = decided(services, account.account_id)
    now_ms = int((clock() - datetime(1970, 1, 1, tzinfo=clock().tzinfo)).total_seconds() * 1000)
    assert event.bar_close_time < now_ms - 2 * 60_000
    assert (event.bar_close_time + 1) % 300_000 == 0
