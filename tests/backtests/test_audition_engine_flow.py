"""An audition trades by itself, end to end (issue 19's acceptance): a wallet signs in, the
offline provider generates the clone's graph (`POST /v1/clones/{id}/generate`), the owner
publishes it, pays the audition fee on-chain (a loopback JSON-RPC node), submits the
audition; the cadence driver trades the account bar by bar on replayed candles through the
normal command path; a restarted worker (a fresh driver, its own router, mid-run) doubles
no order; every decision is a content-addressed artifact of the clone; the evaluator
judges the audition at its due time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import HttpUrl

from aggregates.auditions import Audition
from aggregates.decisions import TradingDecisions, decision_record, decisions_id
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.auditions import EVALUATOR_JOB
from services.bootstrap import Services
from services.cadence import CADENCE_JOB
from services.schedule import cadence_driver
from tests.backtests.test_cadence import STEPS, Market
from tests.conftest import PROP_READER_TOKEN
from tests.support.auditions import record_mark, short_rules
from tests.support.evm_node import TREASURY, USDC, EvmNodeServer
from tests.support.flow import pay_for_an_audition
from tests.support.http import bearer
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import sign_in

READER = bearer(PROP_READER_TOKEN)
IDEA = "BTC trend: sma over 6 bars"


@pytest.fixture
def node() -> Iterator[EvmNodeServer]:
    with EvmNodeServer() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, node: EvmNodeServer) -> Settings:
    return short_rules(
        settings,
        evm_rpc_url=HttpUrl(node.url),
        treasury_address=TREASURY,
        usdc_contract=USDC,
        chain_id=node.chain.chain_id,
        min_confirmations=3,
    )


def artifacts(client: TestClient, headers: dict[str, str], clone_id: str) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        query = "?limit=100" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/clones/{clone_id}/artifacts{query}", headers=headers)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


def test_sign_in_generate_publish_pay_audition_and_the_engine_trades_it(
    client: TestClient, services: Services, clock: FixedClock, node: EvmNodeServer
) -> None:
    market = Market(services, clock)
    owner = pay_for_an_audition(client, services, node)

    # Generate the graph with the offline provider, then publish the draft it became.
    created = client.post(
        "/v1/clones",
        json={"name": "RETRO-CLOCK", "description": ""},
        headers={**owner.headers, "Idempotency-Key": "clone-1"},
    )
    assert created.status_code == 201, created.text
    clone_id = created.json()["clone_id"]
    generated = client.post(
        f"/v1/clones/{clone_id}/generate",
        json={"prompt": IDEA},
        headers={**owner.headers, "Idempotency-Key": "generate-1"},
    )
    assert generated.status_code in (200, 201), generated.text
    assert generated.json()["provider"] == "offline"
    published = client.post(f"/v1/clones/{clone_id}/versions", headers=owner.headers)
    assert published.status_code == 201, published.text
    version_id = published.json()["version_id"]
    catch_up(services)

    submitted = client.post(
        "/v1/auditions",
        json={"clone_id": clone_id, "version_hash": version_id},
        headers={**owner.headers, "Idempotency-Key": "audition-1"},
    )
    assert submitted.status_code == 201, submitted.text
    audition = submitted.json()
    account_id = UUID(audition["prop_account_id"])
    catch_up(services)

    ordered = decided = 0
    for step in range(STEPS):
        done = run_job(services, CADENCE_JOB, clock)
        decided += done.decided
        ordered += done.ordered
        if step == STEPS // 2:
            # The worker restarts mid-run: a fresh driver (a new process's, with its own
            # router) finds the bar decided and sends nothing.
            restarted = cadence_driver(services, clock)()
            assert (restarted.decided, restarted.ordered) == (0, 0)
            assert restarted.skipped["already-decided"] == 1
        market.step()
    assert decided == STEPS
    assert ordered >= 2, "the generated trend follower should trade the waves"

    book = services.event_log.read(TradingDecisions, decisions_id(account_id))
    assert book is not None and book.count == STEPS
    events = [
        e
        for e in services.event_log.events.get(originator_id=book.id)
        if isinstance(e, TradingDecisions.Decided)
    ]
    sent = [e.client_action_id for e in events if e.client_action_id]
    filled = [e for e in events if e.answer["status"] == "filled"]
    assert len(sent) == len(set(sent)) == ordered
    catch_up(services)
    fills = client.get(f"/v1/prop/accounts/{account_id}/fills?limit=100", headers=READER).json()
    assert len(fills["items"]) == len(filled) >= 2  # one fill per filled order: none doubled

    # Each decision is an artifact of the clone, beside the generation's, by its SHA-256.
    owner = sign_in(client, owner.wallet)  # hours of bars later: a fresh access token
    listed = artifacts(client, owner.headers, clone_id)
    kinds = [item["kind"] for item in listed]
    assert {"prompt", "raw-output", "graph"} <= set(kinds)
    records = [item for item in listed if item["kind"] == "decision-record"]
    assert len(records) == STEPS
    assert all(item["account_id"] == str(account_id) for item in records)
    assert [r["sha256"] for r in records] == [decision_record(e).sha256 for e in events]
    last = records[-1]
    content = client.get(f"/v1/clones/{clone_id}/artifacts/{last['sha256']}", headers=owner.headers)
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == last["sha256"]
    record = orjson.loads(content.content)
    assert record["version_hash"] == version_id and record["account_id"] == str(account_id)
    assert record["bar_close_time"] == events[-1].bar_close_time
    stranger = sign_in(client)
    refused = client.get(f"/v1/clones/{clone_id}/artifacts", headers=stranger.headers)
    assert refused.status_code == 404, refused.text

    # The evaluator judges it at its due time; a judged audition is off the roster.
    clock.now = datetime.fromisoformat(audition["due_at"]) + timedelta(seconds=1)
    record_mark(services, clock(), f"{market.closes[market.done - 1]:.4f}")
    run_job(services, EVALUATOR_JOB, clock)
    catch_up(services)
    judged = services.event_log.read(Audition, UUID(audition["audition_id"]))
    assert judged is not None and judged.status in ("passed", "failed"), judged
    assert run_job(services, CADENCE_JOB, clock).decided == 0
