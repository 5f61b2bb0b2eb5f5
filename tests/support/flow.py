"""A paid audition through HTTP, step by step: what the end-to-end flows share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.support.auditions import act, publish_clone, record_mark
from tests.support.evm_node import EvmNodeServer
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

TX = "0x" + "c1" * 32


def pay_for_an_audition(
    client: TestClient, services: Services, node: EvmNodeServer, tx: str = TX
) -> SignedIn:
    """Sign in with a wallet, take a quote, pay it on-chain (in `tx`), have the purchase
    verified."""
    user = sign_in(client)
    quote = client.post("/v1/economy/audition-quotes", headers=user.headers).json()
    node.chain.pay(
        tx,
        sender=user.wallet.address,
        value_minor=int(quote["amount_minor"]),
        block=node.chain.head - 4,
    )
    purchase = client.post(
        "/v1/economy/audition-purchases",
        json={"quote_id": quote["quote_id"], "tx_hash": tx},
        headers={**user.headers, "Idempotency-Key": "flow-1"},
    )
    assert purchase.json()["status"] == "verified", purchase.text
    catch_up(services)
    entitlements = client.get("/v1/entitlements", headers=user.headers).json()["items"]
    assert [e["status"] for e in entitlements] == ["available"]
    return user


def submit_audition(
    client: TestClient, services: Services, node: EvmNodeServer, tx: str = TX
) -> tuple[SignedIn, dict[str, Any]]:
    user = pay_for_an_audition(client, services, node, tx)
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
