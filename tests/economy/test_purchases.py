from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from ingest.evm import EvmNode
from projections.purchases import pending_purchases
from runtime.clock import FixedClock
from services.bootstrap import Services
from services.economy import DepositConfirmations
from tests.support.evm_node import TREASURY, EvmNodeServer
from tests.support.http import assert_problem
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, new_wallet, sign_in

FEE = 25_000_000  # 25 USDC in minor units
TX = "0x" + "ab" * 32


def tx(n: int) -> str:
    return "0x" + f"{n:064x}"


def quote(client: TestClient, buyer: SignedIn) -> dict[str, Any]:
    response = client.post("/v1/economy/audition-quotes", headers=buyer.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def purchase(
    client: TestClient, buyer: SignedIn, quote_id: str, tx_hash: str, key: str = "key-1"
) -> Any:
    return client.post(
        "/v1/economy/audition-purchases",
        json={"quote_id": quote_id, "tx_hash": tx_hash},
        headers={**buyer.headers, "Idempotency-Key": key},
    )


def paid(
    client: TestClient, node: EvmNodeServer, *, value: int = FEE, confirmations: int = 5, **log: Any
) -> tuple[SignedIn, Any]:
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    node.chain.pay(
        TX,
        sender=log.pop("sender", buyer.wallet.address),
        value_minor=value,
        block=node.chain.head - confirmations + 1,
        **log,
    )
    return buyer, purchase(client, buyer, quoted["quote_id"], TX)


def poll(services: Services, node: EvmNodeServer, clock: FixedClock) -> int:
    evm = EvmNode(node.url, timeout=0.3, attempts=2, backoff=0.01)
    catch_up(services)
    try:
        return DepositConfirmations(
            services.event_log,
            evm,
            services.deposit_policy,
            lambda: pending_purchases(services.datastore),
            clock,
        )()
    finally:
        evm.close()


def test_a_quote_states_what_to_pay(client: TestClient) -> None:
    body = quote(client, sign_in(client))

    assert (body["amount"], body["amount_minor"], body["chain_id"]) == (
        "25.000000",
        "25000000",
        8453,
    )
    assert body["treasury_address"] == TREASURY


def test_a_valid_deposit_grants_an_entitlement(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    buyer, response = paid(client, node)
    catch_up(services)

    entitlements = client.get("/v1/entitlements", headers=buyer.headers).json()["items"]
    account = client.get("/v1/ledger/accounts/me", headers=buyer.headers).json()

    assert response.status_code == 202
    assert response.json()["status"] == "verified"
    assert [(e["kind"], e["status"]) for e in entitlements] == [("audition", "available")]
    assert account["balance_minor"] == "0"
    assert sorted(int(e["amount_minor"]) for e in account["entries"]) == [-FEE, FEE]


def test_an_overpayment_stays_on_the_balance(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    buyer, _ = paid(client, node, value=FEE + 5_000_000)
    catch_up(services)

    account = client.get("/v1/ledger/accounts/me", headers=buyer.headers).json()

    assert (account["balance_minor"], account["balance"]) == ("5000000", "5.000000")


def test_too_few_confirmations_wait_for_the_head(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    _, response = paid(client, node, confirmations=2)
    node.chain.head += 1

    settled = poll(services, node, clock)

    assert (response.json()["status"], response.json()["reason"]) == (
        "pending_confirmations",
        "awaiting-confirmations",
    )
    assert settled == 1
    catch_up(services)
    with psycopg.connect(services.url) as conn:
        assert conn.execute("SELECT status, confirmations FROM purchases").fetchall() == [
            ("verified", 3)
        ]


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ({"recipient": "0x2222222222222222222222222222222222222222"}, "wrong-recipient"),
        ({"token": "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"}, "wrong-token"),
        ({"sender": "0x3333333333333333333333333333333333333333"}, "wrong-sender"),
        ({"value": FEE - 1}, "amount-too-low"),
        ({"status": 0}, "tx-failed"),
    ],
)
def test_bad_deposits_are_rejected_with_their_reason(
    client: TestClient, node: EvmNodeServer, log: dict[str, Any], reason: str
) -> None:
    _, response = paid(client, node, **log)

    assert (response.json()["status"], response.json()["reason"]) == ("rejected", reason)


def test_an_unknown_tx_is_rejected_after_the_timeout(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    buyer = sign_in(client)
    first = purchase(client, buyer, quote(client, buyer)["quote_id"], tx(7)).json()
    clock.advance(seconds=services.settings.deposit_pending_timeout + 1)

    poll(services, node, clock)
    catch_up(services)
    buyer = sign_in(client, buyer.wallet)  # an hour on, the first access token has expired

    assert (first["status"], first["reason"]) == ("pending_confirmations", "tx-unknown")
    after = client.get(
        f"/v1/economy/audition-purchases/{first['purchase_id']}", headers=buyer.headers
    ).json()
    assert (after["status"], after["reason"]) == ("rejected", "tx-unknown")


def test_a_transfer_after_the_quote_expired_is_rejected(
    client: TestClient, node: EvmNodeServer, clock: FixedClock
) -> None:
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    late_block = 1000 + 40 * 60  # two-second blocks: 80 minutes after the chain's start
    node.chain.head = late_block + 5
    node.chain.pay(TX, sender=buyer.wallet.address, value_minor=FEE, block=late_block)

    response = purchase(client, buyer, quoted["quote_id"], TX).json()

    assert (response["status"], response["reason"]) == ("rejected", "quote-expired")


@pytest.mark.parametrize("mode", ["http500", "garbage", "error", "slow"])
def test_a_sick_node_leaves_it_pending_until_it_recovers(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock, mode: str
) -> None:
    node.chain.mode = mode
    _, response = paid(client, node)
    node.chain.mode = "ok"

    poll(services, node, clock)
    catch_up(services)

    assert (response.json()["status"], response.json()["reason"]) == (
        "pending_confirmations",
        "rpc-unavailable",
    )
    with psycopg.connect(services.url) as conn:
        assert conn.execute("SELECT status FROM purchases").fetchall() == [("verified",)]
        assert conn.execute("SELECT count(*) FROM entitlements").fetchone() == (1,)


def test_a_reorg_is_never_granted(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    node.chain.pay(TX, sender=buyer.wallet.address, value_minor=FEE, block=990)
    node.chain.reorg(990)

    response = purchase(client, buyer, quoted["quote_id"], TX).json()
    clock.advance(seconds=services.settings.deposit_pending_timeout + 1)
    poll(services, node, clock)
    catch_up(services)

    assert (response["status"], response["reason"]) == ("pending_confirmations", "reorged")
    with psycopg.connect(services.url) as conn:
        assert conn.execute("SELECT status, reason FROM purchases").fetchall() == [
            ("rejected", "reorged")
        ]
        assert conn.execute("SELECT count(*) FROM entitlements").fetchone() == (0,)


def test_twenty_keys_one_tx_make_one_purchase(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    node.chain.pay(TX, sender=buyer.wallet.address, value_minor=FEE, block=996)
    barrier = threading.Barrier(20)
    answers: list[tuple[int, str | None]] = []

    def submit(n: int) -> None:
        barrier.wait()
        response = purchase(client, buyer, quoted["quote_id"], TX, key=f"key-{n}")
        body = response.json()
        answers.append((response.status_code, body.get("status") or body.get("type")))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    catch_up(services)

    # The claim is taken when a purchase verifies: exactly one does; the others are
    # refused (409: the tx is claimed, too many pending, or retries ran out) or, when
    # they verified the same tx a moment later, rejected as `tx-already-claimed`.
    assert (202, "verified") in answers
    assert answers.count((202, "verified")) == 1
    assert {code for code, status in answers if status != "verified"} <= {202, 409}
    with psycopg.connect(services.url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM purchases WHERE status = 'verified'"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FROM purchases WHERE status <> 'verified'"
            " AND reason IS DISTINCT FROM 'tx-already-claimed'"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM entitlements").fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE cause LIKE 'audition-fee:%%'"
        ).fetchone() == (2,)


def test_the_same_key_returns_the_same_purchase(client: TestClient, node: EvmNodeServer) -> None:
    buyer, first = paid(client, node)

    again = purchase(client, buyer, quote(client, buyer)["quote_id"], TX)
    same = client.post(
        "/v1/economy/audition-purchases",
        json={"quote_id": first.json()["purchase_id"], "tx_hash": TX},
        headers={**buyer.headers, "Idempotency-Key": "key-1"},
    )

    assert_problem(again, 409, "idempotency-key-reused")
    assert_problem(same, 404, "quote-not-found")


def test_a_retry_with_the_same_key_and_body_repeats_the_answer(
    client: TestClient, node: EvmNodeServer
) -> None:
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    node.chain.pay(TX, sender=buyer.wallet.address, value_minor=FEE, block=996)

    first = purchase(client, buyer, quoted["quote_id"], TX).json()
    retry = purchase(client, buyer, quoted["quote_id"], TX).json()

    assert retry == first


def test_a_tx_claimed_by_another_buyer_is_409(client: TestClient, node: EvmNodeServer) -> None:
    paid(client, node)
    thief = sign_in(client)

    response = purchase(client, thief, quote(client, thief)["quote_id"], TX)

    assert_problem(response, 409, "tx-already-claimed")


def test_someone_elses_quote_is_404(client: TestClient) -> None:
    owner, stranger = sign_in(client), sign_in(client)

    response = purchase(client, stranger, quote(client, owner)["quote_id"], TX)

    assert_problem(response, 404, "quote-not-found")


def test_purchases_are_owner_safe(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    buyer, response = paid(client, node)
    catch_up(services)

    assert_owner_only(
        client,
        "GET",
        f"/v1/economy/audition-purchases/{response.json()['purchase_id']}",
        owner=buyer.headers,
        stranger=sign_in(client).headers,
    )


def test_bad_purchase_requests_are_clear(client: TestClient) -> None:
    buyer = sign_in(client)
    quote_id = quote(client, buyer)["quote_id"]

    no_key = client.post(
        "/v1/economy/audition-purchases",
        json={"quote_id": quote_id, "tx_hash": TX},
        headers=buyer.headers,
    )
    bad_hash = purchase(client, buyer, quote_id, "0x1234")
    bad_key = purchase(client, buyer, quote_id, TX, key="has space")

    assert_problem(no_key, 422, "invalid-request")
    assert_problem(bad_hash, 422, "invalid-request")
    assert_problem(bad_key, 422, "invalid-request")


def test_other_users_entitlements_stay_private(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    paid(client, node)
    catch_up(services)

    assert client.get("/v1/entitlements", headers=sign_in(client).headers).json()["items"] == []


def test_admin_revokes_an_entitlement_with_a_reason(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    admin_wallet = new_wallet()
    client.app.state.services.settings = services.settings.model_copy(
        update={"admin_addresses": [admin_wallet.address]}
    )  # type: ignore[attr-defined]
    buyer, _ = paid(client, node)
    admin = sign_in(client, admin_wallet)
    catch_up(services)
    entitlement = client.get("/v1/entitlements", headers=buyer.headers).json()["items"][0][
        "entitlement_id"
    ]

    no_reason = client.post(
        f"/v1/admin/entitlements/{entitlement}/revoke", json={"reason": ""}, headers=admin.headers
    )
    by_buyer = client.post(
        f"/v1/admin/entitlements/{entitlement}/revoke", json={"reason": "x"}, headers=buyer.headers
    )
    revoked = client.post(
        f"/v1/admin/entitlements/{entitlement}/revoke",
        json={"reason": "chargeback"},
        headers=admin.headers,
    )
    catch_up(services)

    assert_problem(no_reason, 422, "invalid-request")
    assert_problem(by_buyer, 403, "forbidden")
    assert revoked.status_code == 200
    assert (
        client.get("/v1/entitlements", headers=buyer.headers).json()["items"][0]["status"]
        == "revoked"
    )


def test_a_front_runner_cannot_keep_someone_elses_tx(
    client: TestClient, node: EvmNodeServer
) -> None:
    payer, thief = sign_in(client), sign_in(client)
    node.chain.pay(TX, sender=payer.wallet.address, value_minor=FEE, block=996)

    stolen = purchase(client, thief, quote(client, thief)["quote_id"], TX).json()
    honest = purchase(client, payer, quote(client, payer)["quote_id"], TX).json()

    assert (stolen["status"], stolen["reason"]) == ("rejected", "wrong-sender")
    assert honest["status"] == "verified"


def test_nothing_is_rejected_before_its_block_is_final(
    client: TestClient, node: EvmNodeServer
) -> None:
    _, response = paid(
        client, node, confirmations=1, recipient="0x2222222222222222222222222222222222222222"
    )

    assert (response.json()["status"], response.json()["reason"]) == (
        "pending_confirmations",
        "awaiting-confirmations",
    )


def test_a_reason_with_control_characters_is_refused(
    client: TestClient, services: Services
) -> None:
    admin_wallet = new_wallet()
    client.app.state.services.settings = services.settings.model_copy(
        update={"admin_addresses": [admin_wallet.address]}
    )  # type: ignore[attr-defined]
    admin = sign_in(client, admin_wallet)

    response = client.post(
        "/v1/admin/entitlements/00000000-0000-0000-0000-000000000001/revoke",
        json={"reason": "chargeback\u0000"},
        headers=admin.headers,
    )

    assert_problem(response, 422, "invalid-request")
