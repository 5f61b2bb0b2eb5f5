"""The paid audition, end to end through HTTP: a wallet signs in, pays the fee on-chain (a
loopback JSON-RPC node), gets an entitlement, publishes a clone, submits it, the engine
trades on its prop account with a service token, and the evaluator judges it on a clock
the test moves. Then the same story failing on drawdown (the prop engine's breach ends the
attempt early), retried, and passed; and every read model rebuilt from the log to the same
rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import HttpUrl

from projections.rebuild import rebuild
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from tests.support.auditions import act, publish_clone, record_mark, short_rules
from tests.support.evm_node import TREASURY, USDC, EvmNodeServer
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

TX = "0x" + "c1" * 32


@pytest.fixture
def node() -> Iterator[EvmNodeServer]:
    with EvmNodeServer() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, node: EvmNodeServer) -> Settings:
    """Pointed at the loopback node; an audition of two days, 5% target, two fills on two UTC
    days, and the `audition` rule set's loss limits (5% a day, 10% from the peak)."""
    return short_rules(
        settings,
        evm_rpc_url=HttpUrl(node.url),
        treasury_address=TREASURY,
        usdc_contract=USDC,
        chain_id=node.chain.chain_id,
        min_confirmations=3,
    )


def pay_for_an_audition(client: TestClient, services: Services, node: EvmNodeServer) -> SignedIn:
    """Sign in with a wallet, take a quote, pay it on-chain, have the purchase verified."""
    user = sign_in(client)
    quote = client.post("/v1/economy/audition-quotes", headers=user.headers).json()
    node.chain.pay(
        TX,
        sender=user.wallet.address,
        value_minor=int(quote["amount_minor"]),
        block=node.chain.head - 4,
    )
    purchase = client.post(
        "/v1/economy/audition-purchases",
        json={"quote_id": quote["quote_id"], "tx_hash": TX},
        headers={**user.headers, "Idempotency-Key": "flow-1"},
    )
    assert purchase.json()["status"] == "verified", purchase.text
    catch_up(services)
    entitlements = client.get("/v1/entitlements", headers=user.headers).json()["items"]
    assert [e["status"] for e in entitlements] == ["available"]
    return user


def submit_audition(
    client: TestClient, services: Services, node: EvmNodeServer
) -> tuple[SignedIn, dict[str, Any]]:
    user = pay_for_an_audition(client, services, node)
    clone_id, version_hash = publish_clone(client, user)
    response = client.post(
        "/v1/auditions",
        json={"clone_id": clone_id, "version_hash": version_hash},
        headers={**user.headers, "Idempotency-Key": "audition-1"},
    )
    assert response.status_code == 201, response.text
    return user, response.json()


def trade_up(client: TestClient, services: Services, clock: FixedClock, account_id: str) -> None:
    """Buy 40 BTC at 100 today, sell at 115 tomorrow: about +6% after fees."""
    record_mark(services, clock(), "100")
    act(client, account_id, 1, size="40")
    clock.advance(days=1)
    record_mark(services, clock(), "115")
    act(client, account_id, 2, side="sell", size="40")


def rally_then_crash(
    client: TestClient, services: Services, clock: FixedClock, account_id: str
) -> None:
    """Buy 40 BTC at 100; the mark-to-market job records it at 115 (equity about 10,597, the
    peak), then at 89 (about 9,557): 10.4% below the peak, past the 10% drawdown limit, yet
    inside the day's 5% (the day started at 10,000). The prop engine breaches and freezes."""
    record_mark(services, clock(), "100")
    act(client, account_id, 1, size="40")
    for price in ("115", "89"):
        clock.advance(hours=1)
        record_mark(services, clock(), price)
        catch_up(services)
        assert run_job(services, "prop_mark_to_market", clock) == 1


def to_due_time(clock: FixedClock, attempt: dict[str, Any]) -> None:
    clock.now = datetime.fromisoformat(attempt["due_at"])


def detail(client: TestClient, services: Services, user: SignedIn, audition_id: str) -> Any:
    catch_up(services)
    again = sign_in(client, user.wallet)  # days on, the first access token has expired
    response = client.get(f"/v1/auditions/{audition_id}", headers=again.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_paid_audition_that_trades_well_passes(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
) -> None:
    # A wallet signs in, pays the fee on-chain and submits a published clone version.
    user, submitted = submit_audition(client, services, node)
    assert (submitted["attempt"], submitted["due_at"]) == (1, "2026-11-27T12:00:00Z")

    # The engine trades on the audition's prop account over two days.
    trade_up(client, services, clock, submitted["prop_account_id"])

    # Nothing is judged before the due time; at it, the evaluator passes the audition.
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 0
    to_due_time(clock, submitted)
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1

    # The owner reads the verdict, the metrics and the account, closed with the verdict.
    audition = detail(client, services, user, submitted["audition_id"])
    (attempt,) = audition["attempts"]
    assert (audition["status"], attempt["ended_by"], attempt["failed_rules"]) == (
        "passed",
        "due",
        [],
    )
    assert (attempt["metrics"]["trades"], attempt["metrics"]["active_days"]) == (2, 2)
    assert attempt["metrics"]["total_return"].startswith("0.059")
    assert audition["prop_account"]["status"] == "closed"
    assert audition["prop_account"]["equity"] == attempt["metrics"]["equity"]


def test_an_audition_failed_on_drawdown_is_retried_and_passes(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
) -> None:
    # Paid, submitted; the engine's position rallies, then falls 10.4% from the peak.
    user, submitted = submit_audition(client, services, node)
    audition_id = submitted["audition_id"]
    rally_then_crash(client, services, clock, submitted["prop_account_id"])

    # The prop engine breached the drawdown limit, so the evaluator fails it at once, long
    # before the due time, on that rule alone: one limit, enforced and judged.
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1
    failed = detail(client, services, user, audition_id)
    assert failed["status"] == "failed"
    (attempt,) = failed["attempts"]
    assert (attempt["ended_by"], attempt["failed_rules"]) == ("breach", ["max-drawdown"])
    assert attempt["metrics"]["max_drawdown"].startswith("0.104")
    assert attempt["metrics"]["breach"] == "max-drawdown"
    assert failed["rules"]["max_drawdown"] == "0.1"
    assert failed["prop_account"]["status"] == "closed"

    # Within the retry window the owner retries for free, on a new prop account.
    user = sign_in(client, user.wallet)
    retried = client.post(f"/v1/auditions/{audition_id}/retry", headers=user.headers)
    assert retried.status_code == 201, retried.text
    second = retried.json()
    assert (second["attempt"], second["entitlement_id"]) == (2, None)
    assert second["prop_account_id"] != submitted["prop_account_id"]

    # The second attempt trades cleanly and passes; both attempts stay on record.
    trade_up(client, services, clock, second["prop_account_id"])
    to_due_time(clock, second)
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1
    passed = detail(client, services, user, audition_id)
    assert passed["status"] == "passed"
    assert [(a["number"], a["status"]) for a in passed["attempts"]] == [
        (1, "failed"),
        (2, "passed"),
    ]
    assert passed["prop_account"]["account_id"] == second["prop_account_id"]


def rows_checksum(url: str, table: str) -> tuple[int, str]:
    """A table's rows, whatever its columns: counted and hashed in a stable order."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            f" FROM {table} t"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def every_table(services: Services) -> dict[str, tuple[int, str]]:
    return {
        table: rows_checksum(services.url, table)
        for cls in services.projections.classes.values()
        if cls.rebuildable
        for table in cls.view_class.tables
    }


def test_rebuilding_every_projection_after_the_flow_yields_identical_rows(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
) -> None:
    user, submitted = submit_audition(client, services, node)
    rally_then_crash(client, services, clock, submitted["prop_account_id"])
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 1
    user = sign_in(client, user.wallet)
    client.post(f"/v1/auditions/{submitted['audition_id']}/retry", headers=user.headers)
    catch_up(services)
    before = every_table(services)

    for name, cls in services.projections.classes.items():
        if cls.rebuildable:
            rebuild(services.projections, name)

    assert every_table(services) == before
    assert before["auditions"][0] == 1 and before["audition_attempts"][0] == 2
