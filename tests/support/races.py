"""Builders for race tests: arena members that may race, a scheduled race, funded
spectators, tickets, and ledger balances through the admin route."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from fastapi.testclient import TestClient

from aggregates.ledger import TREASURY, user_account
from services.bootstrap import Services
from services.eventlog import UnitOfWork
from services.ledger import post_transfer
from tests.support.arena import queued_clones, sync
from tests.support.auditions import context_at
from tests.support.clones import configure
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, new_wallet, sign_in

USDC = 1_000_000


def members(services: Services, client: TestClient, count: int, at: datetime) -> list[str]:
    """`count` admitted arena members with a published version, in admission order."""
    clones = queued_clones(services, count, at - timedelta(hours=1), published=True)
    catch_up(services)
    admitted = sync(client, f"admit-{at.isoformat()}").json()["admitted"]
    assert admitted == [str(c) for c in clones], admitted
    catch_up(services)
    return admitted


def schedule(
    client: TestClient, admin: SignedIn, sales_open_at: datetime, **body: Any
) -> dict[str, Any]:
    response = client.post(
        "/v1/admin/races",
        json={
            "name": "Noon sprint",
            "sales_open_at": sales_open_at.isoformat(),
            "entrants": 2,
            "reason": "daily race",
            **body,
        },
        headers={**admin.headers, "Idempotency-Key": f"race-{sales_open_at.isoformat()}"},
    )
    assert response.status_code == 201, response.text
    race: dict[str, Any] = response.json()
    return race


def fund(services: Services, user: SignedIn, amount_minor: int, at: datetime) -> None:
    """Credit a user's balance from the treasury, as a verified deposit does."""

    def credit(unit: UnitOfWork) -> None:
        post_transfer(
            unit,
            f"test-deposit:{user.user_id}:{at}",
            TREASURY,
            user_account(UUID(user.user_id)),
            amount_minor,
        )

    services.event_log.execute(context_at(at, "service:economy"), credit)


def buy(
    client: TestClient, user: SignedIn, race_id: str, clone_id: str, amount: str, key: str
) -> Any:
    return client.post(
        f"/v1/races/{race_id}/tickets",
        json={"clone_id": clone_id, "amount": amount},
        headers={**user.headers, "Idempotency-Key": key},
    )


def balance(client: TestClient, admin: SignedIn, account: str) -> int:
    response = client.get(f"/v1/admin/ledger/accounts/{account}", headers=admin.headers)
    assert response.status_code == 200, response.text
    return int(response.json()["balance_minor"])


def admins(client: TestClient, services: Services, count: int) -> list[SignedIn]:
    """`count` signed-in admins (their addresses configured as admins)."""
    wallets = [new_wallet() for _ in range(count)]
    configure(client, admin_addresses=[w.address for w in wallets])
    return [sign_in(client, wallet) for wallet in wallets]


def payout_of(client: TestClient, admin: SignedIn, race_id: str) -> dict[str, Any]:
    """The race's payout as an approver reads it (table, digest, approvals)."""
    payout_id = client.get(f"/v1/races/{race_id}").json()["settlement"]["payout_id"]
    response = client.get(f"/v1/admin/payouts/{payout_id}", headers=admin.headers)
    assert response.status_code == 200, response.text
    payout: dict[str, Any] = response.json()
    return payout


def authorize(
    client: TestClient, services: Services, race_id: str, approvers: list[SignedIn]
) -> dict[str, Any]:
    """Each approver approves the table they read, then the last one posts it."""
    payout = payout_of(client, approvers[0], race_id)
    path = f"/v1/admin/payouts/{payout['payout_id']}"
    for approver in approvers:
        approved = client.post(
            f"{path}/approve", json={"digest": payout["table_digest"]}, headers=approver.headers
        )
        assert approved.status_code == 200, approved.text
    posted = client.post(f"{path}/post", json={"reason": "paid"}, headers=approvers[-1].headers)
    assert posted.status_code == 200, posted.text
    catch_up(services)
    return payout
