"""Balance deposits (the races issue, part 1): USDC from the signed-in wallet to the treasury,
verified by the same machinery as audition purchases (the same `assess`, the EVM node over
loopback JSON-RPC, the `deposit_confirmations` job, one `TxClaim` per transaction), then
credited to the user's ledger balance."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from aggregates.base import derive_id
from projections.reconciliation import reconcile
from runtime.clock import FixedClock
from services.bootstrap import Services
from services.economy import DEPOSIT_JOB
from tests.economy.test_purchases import FEE, purchase, quote, tx
from tests.support.evm_node import EvmNodeServer
from tests.support.http import assert_problem
from tests.support.jobs import run_job
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

AMOUNT = 40_000_000  # 40 USDC in minor units
OTHER = "0x3333333333333333333333333333333333333333"
NOT_USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
CAP = 5  # PUMPPARTY_MAX_PENDING_PURCHASES's default: purchases and deposits together


def deposit(client: TestClient, user: SignedIn, tx_hash: str, key: str = "dep-1") -> Any:
    return client.post(
        "/v1/economy/deposits",
        json={"tx_hash": tx_hash},
        headers={**user.headers, "Idempotency-Key": key},
    )


def pay(
    node: EvmNodeServer,
    tx_hash: str,
    payer: SignedIn,
    *,
    value: int = AMOUNT,
    confirmations: int = 5,
    **log: Any,
) -> None:
    """A USDC transfer from the payer's wallet to the treasury, `confirmations` deep."""
    node.chain.pay(
        tx_hash,
        sender=log.pop("sender", payer.wallet.address),
        value_minor=value,
        block=node.chain.head - confirmations + 1,
        **log,
    )


def account(client: TestClient, services: Services, user: SignedIn) -> dict[str, Any]:
    catch_up(services)
    response = client.get("/v1/ledger/accounts/me", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def balances(body: dict[str, Any]) -> tuple[str, str, str]:
    return body["posted_minor"], body["pending_minor"], body["available_minor"]


def shown(client: TestClient, user: SignedIn, deposit_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/economy/deposits/{deposit_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows(services: Services, query: str, *params: Any) -> list[tuple[Any, ...]]:
    catch_up(services)
    with psycopg.connect(services.url) as conn:
        return conn.execute(query, params).fetchall()


def test_a_deposit_is_pending_until_confirmed_then_credited(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    pay(node, tx(1), user, confirmations=1)  # mined in the head block: not final yet

    submitted = deposit(client, user, tx(1))
    waiting = account(client, services, user)
    node.chain.head += 2  # three confirmations: what the tests' settings ask for
    catch_up(services)
    settled = run_job(services, DEPOSIT_JOB, clock)
    credited = account(client, services, user)
    body = submitted.json()

    assert submitted.status_code == 202, submitted.text
    assert (body["status"], body["reason"], body["amount_minor"]) == (
        "pending_confirmations",
        "awaiting-confirmations",
        None,
    )
    assert balances(waiting) == ("0", str(AMOUNT), "0")
    assert (waiting["pending"], waiting["available"]) == ("40.000000", "0.000000")
    assert settled == 1
    assert balances(credited) == (str(AMOUNT), "0", str(AMOUNT))
    assert (credited["posted"], credited["available"], credited["balance"]) == (
        "40.000000",
        "40.000000",
        "40.000000",
    )
    assert [(e["amount_minor"], e["cause"], e["counterparty"]) for e in credited["entries"]] == [
        (str(AMOUNT), f"deposit:{body['deposit_id']}", "treasury")
    ]
    after = shown(client, user, body["deposit_id"])
    assert (after["status"], after["reason"], after["confirmations"]) == ("verified", None, 3)
    assert (after["amount_minor"], after["incoming_minor"], after["tx_hash"]) == (
        str(AMOUNT),
        "0",
        tx(1),
    )


def test_a_final_transfer_is_credited_at_once_with_every_qualifying_log(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = sign_in(client)
    pay(node, tx(2), user, value=1_500_000)
    node.chain.add_transfer(tx(2), sender=user.wallet.address, value_minor=2_500_000)
    node.chain.add_transfer(tx(2), sender=OTHER, value_minor=AMOUNT)  # not the user's
    node.chain.add_transfer(tx(2), sender=user.wallet.address, value_minor=AMOUNT, token=NOT_USDC)

    response = deposit(client, user, tx(2)).json()

    assert (response["status"], response["amount_minor"], response["amount"]) == (
        "verified",
        "4000000",
        "4.000000",
    )
    assert balances(account(client, services, user)) == ("4000000", "0", "4000000")


def test_a_deposit_has_no_quote_so_an_older_transfer_still_counts(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    node.chain.pay(tx(14), sender=user.wallet.address, value_minor=AMOUNT, block=800)
    assert node.chain.block_time(800) < clock()  # mined before the user ever signed in

    response = deposit(client, user, tx(14)).json()

    assert (response["status"], response["amount_minor"]) == ("verified", str(AMOUNT))
    assert balances(account(client, services, user)) == (str(AMOUNT), "0", str(AMOUNT))


def test_the_same_key_repeats_the_answer_and_another_body_is_409(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = sign_in(client)
    pay(node, tx(3), user)
    pay(node, tx(4), user)

    first = deposit(client, user, tx(3))
    again = deposit(client, user, tx(3))
    other_body = deposit(client, user, tx(4))

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert first.json()["status"] == "verified"
    assert_problem(other_body, 409, "idempotency-key-reused")
    assert balances(account(client, services, user)) == (str(AMOUNT), "0", str(AMOUNT))


def test_one_tx_under_two_keys_is_credited_once(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = sign_in(client)
    pay(node, tx(5), user)

    first = deposit(client, user, tx(5), key="one")
    second = deposit(client, user, tx(5), key="two")

    assert first.json()["status"] == "verified"
    assert_problem(second, 409, "tx-already-claimed")
    assert rows(services, "SELECT count(*) FROM deposits") == [(1,)]
    assert balances(account(client, services, user)) == (str(AMOUNT), "0", str(AMOUNT))


def test_two_pending_deposits_of_one_tx_credit_only_the_first_to_verify(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    pay(node, tx(6), user, confirmations=1)
    first = deposit(client, user, tx(6), key="one").json()
    second = deposit(client, user, tx(6), key="two").json()
    assert first["status"] == second["status"] == "pending_confirmations"

    node.chain.head += 5
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)

    statuses = sorted(
        (
            shown(client, user, d["deposit_id"])["status"],
            shown(client, user, d["deposit_id"])["reason"],
        )
        for d in (first, second)
    )
    assert statuses == [("rejected", "tx-already-claimed"), ("verified", None)]
    assert balances(account(client, services, user)) == (str(AMOUNT), "0", str(AMOUNT))


def test_a_tx_credited_as_a_purchase_is_not_credited_again_as_a_deposit(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = sign_in(client)
    pay(node, tx(7), user, value=FEE)
    bought = purchase(client, user, quote(client, user)["quote_id"], tx(7)).json()

    response = deposit(client, user, tx(7))

    assert bought["status"] == "verified"
    assert_problem(response, 409, "tx-already-claimed")
    # The purchase's payment went in and its fee out: nothing more.
    assert balances(account(client, services, user)) == ("0", "0", "0")
    assert rows(services, "SELECT count(*) FROM deposits") == [(0,)]


def test_a_tx_credited_as_a_deposit_cannot_pay_for_a_purchase(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = sign_in(client)
    quoted = quote(client, user)  # the transfer is mined after the quote: it could pay it
    pay(node, tx(8), user, value=FEE)
    deposited = deposit(client, user, tx(8)).json()

    response = purchase(client, user, quoted["quote_id"], tx(8))

    assert deposited["status"] == "verified"
    assert_problem(response, 409, "tx-already-claimed")
    assert rows(services, "SELECT count(*) FROM entitlements") == [(0,)]
    assert balances(account(client, services, user)) == (str(FEE), "0", str(FEE))


def test_a_pending_purchase_and_a_pending_deposit_of_one_tx_credit_it_once(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    quoted = quote(client, user)
    pay(node, tx(9), user, value=FEE, confirmations=1)
    bought = purchase(client, user, quoted["quote_id"], tx(9)).json()
    clock.advance(seconds=1)  # the deposit is the younger of the two
    deposited = deposit(client, user, tx(9)).json()
    assert bought["status"] == deposited["status"] == "pending_confirmations"

    node.chain.head += 5
    catch_up(services)
    assert run_job(services, DEPOSIT_JOB, clock) == 2

    [(purchase_status, purchase_reason)] = rows(services, "SELECT status, reason FROM purchases")
    [(deposit_status, deposit_reason)] = rows(services, "SELECT status, reason FROM deposits")
    # The poller takes the user's oldest payment first: the purchase wins the tx.
    assert (purchase_status, purchase_reason) == ("verified", None)
    assert (deposit_status, deposit_reason) == ("rejected", "tx-already-claimed")
    assert rows(services, "SELECT count(*) FROM ledger_entries WHERE cause LIKE 'deposit:%%'") == [
        (2,)
    ]
    assert balances(account(client, services, user)) == ("0", "0", "0")


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ({"sender": OTHER}, "wrong-sender"),
        ({"recipient": OTHER}, "wrong-recipient"),
        ({"token": NOT_USDC}, "wrong-token"),
        ({"status": 0}, "tx-failed"),
        ({"value": 0}, "amount-too-low"),
    ],
)
def test_a_transfer_that_does_not_pay_the_treasury_from_the_wallet_is_rejected(
    client: TestClient,
    node: EvmNodeServer,
    services: Services,
    log: dict[str, Any],
    reason: str,
) -> None:
    user = sign_in(client)
    pay(node, tx(10), user, **log)

    response = deposit(client, user, tx(10))

    assert response.status_code == 202, response.text
    assert (response.json()["status"], response.json()["reason"]) == ("rejected", reason)
    assert balances(account(client, services, user)) == ("0", "0", "0")
    assert rows(services, "SELECT count(*) FROM ledger_entries") == [(0,)]


def test_someone_who_submits_your_tx_first_cannot_keep_it(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    payer, thief = sign_in(client), sign_in(client)
    pay(node, tx(11), payer, confirmations=1)

    stolen = deposit(client, thief, tx(11)).json()
    own = deposit(client, payer, tx(11))
    thief_waiting = account(client, services, thief)
    node.chain.head += 5
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)

    assert stolen["status"] == "pending_confirmations"
    assert own.status_code == 202 and own.json()["status"] == "pending_confirmations"
    assert thief_waiting["pending_minor"] == "0"  # not the thief's transfer: nothing on its way
    assert (shown(client, thief, stolen["deposit_id"])["reason"]) == "wrong-sender"
    assert shown(client, payer, own.json()["deposit_id"])["status"] == "verified"
    assert balances(account(client, services, payer)) == (str(AMOUNT), "0", str(AMOUNT))
    assert balances(account(client, services, thief)) == ("0", "0", "0")


def test_a_reorg_before_confirmation_never_credits(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    block = node.chain.head
    pay(node, tx(12), user, confirmations=1)
    submitted = deposit(client, user, tx(12)).json()
    seen = account(client, services, user)

    node.chain.reorg(block)  # the block is replaced before it is final
    node.chain.head += 5
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    dropped = account(client, services, user)
    clock.advance(seconds=services.settings.deposit_pending_timeout + 1)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)
    user = sign_in(client, user.wallet)  # an hour on, the first access token has expired

    assert (submitted["status"], submitted["reason"]) == (
        "pending_confirmations",
        "awaiting-confirmations",
    )
    assert seen["pending_minor"] == str(AMOUNT)
    assert balances(dropped) == ("0", "0", "0")
    after = shown(client, user, submitted["deposit_id"])
    assert (after["status"], after["reason"], after["amount_minor"]) == (
        "rejected",
        "reorged",
        None,
    )
    assert balances(account(client, services, user)) == ("0", "0", "0")
    assert rows(services, "SELECT count(*) FROM ledger_entries") == [(0,)]


def test_a_sick_node_leaves_a_deposit_pending_until_it_recovers(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    pay(node, tx(13), user)
    node.chain.mode = "http500"

    submitted = deposit(client, user, tx(13)).json()
    node.chain.mode = "ok"
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)

    assert (submitted["status"], submitted["reason"]) == (
        "pending_confirmations",
        "rpc-unavailable",
    )
    assert balances(account(client, services, user)) == (str(AMOUNT), "0", str(AMOUNT))


def test_pending_payments_are_capped_per_user_purchases_and_deposits_together(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = sign_in(client)
    for n in range(CAP - 2):
        pay(node, tx(20 + n), user, value=FEE, confirmations=1)
        bought = purchase(client, user, quote(client, user)["quote_id"], tx(20 + n), f"p{n}")
        assert bought.json()["status"] == "pending_confirmations", bought.text
    for n in range(2):
        pay(node, tx(30 + n), user, confirmations=1)
        assert deposit(client, user, tx(30 + n), f"d{n}").json()["status"] == (
            "pending_confirmations"
        )
    pay(node, tx(40), user, confirmations=1)

    refused = deposit(client, user, tx(40), "one-more")

    assert_problem(refused, 409, "too-many-pending-deposits")
    assert rows(
        services,
        "SELECT count(*) FROM pumpparty_events WHERE originator_id = %s",
        derive_id("Deposit", f"{user.user_id}:one-more"),
    ) == [(0,)]
    assert account(client, services, user)["pending_minor"] == str(2 * AMOUNT)

    node.chain.head += 5
    catch_up(services)
    assert run_job(services, DEPOSIT_JOB, clock) == CAP  # one round settles both kinds
    later = deposit(client, user, tx(40), "one-more")
    assert later.status_code == 202 and later.json()["status"] == "verified", later.text
    assert balances(account(client, services, user)) == (
        str(3 * AMOUNT),
        "0",
        str(3 * AMOUNT),
    )


def test_deposits_are_owner_safe_and_listed_for_their_owner(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    owner, stranger = sign_in(client), sign_in(client)
    ids = []
    for n in range(3):
        pay(node, tx(50 + n), owner, value=AMOUNT + n)
        ids.append(deposit(client, owner, tx(50 + n), f"k{n}").json()["deposit_id"])
    catch_up(services)

    assert_owner_only(
        client,
        "GET",
        f"/v1/economy/deposits/{ids[0]}",
        owner=owner.headers,
        stranger=stranger.headers,
    )
    first = client.get("/v1/economy/deposits?limit=2", headers=owner.headers).json()
    rest = client.get(
        f"/v1/economy/deposits?limit=2&cursor={first['next_cursor']}", headers=owner.headers
    ).json()
    theirs = client.get("/v1/economy/deposits", headers=stranger.headers).json()
    anonymous = client.get("/v1/economy/deposits")
    unknown = client.get(f"/v1/economy/deposits/{UUID(int=7)}", headers=owner.headers)

    assert [d["deposit_id"] for d in first["items"] + rest["items"]] == ids
    assert rest["next_cursor"] is None
    assert [d["amount_minor"] for d in first["items"]] == [str(AMOUNT), str(AMOUNT + 1)]
    assert theirs == {"items": [], "next_cursor": None}
    assert_problem(anonymous, 401, "unauthenticated")
    assert_problem(unknown, 404, "not-found")
    assert account(client, services, stranger)["posted_minor"] == "0"


def test_bad_deposit_requests_are_clear(client: TestClient) -> None:
    user = sign_in(client)

    no_key = client.post("/v1/economy/deposits", json={"tx_hash": tx(1)}, headers=user.headers)
    bad_hash = deposit(client, user, "0x1234")
    not_hex = deposit(client, user, "0x" + "zz" * 32)
    no_body = client.post("/v1/economy/deposits", headers={**user.headers, "Idempotency-Key": "k"})
    wrong_type = client.post(
        "/v1/economy/deposits",
        json={"tx_hash": 7},
        headers={**user.headers, "Idempotency-Key": "k"},
    )
    bad_key = deposit(client, user, tx(1), key="has space")
    anonymous = client.post(
        "/v1/economy/deposits", json={"tx_hash": tx(1)}, headers={"Idempotency-Key": "k"}
    )
    bad_id = client.get("/v1/economy/deposits/not-a-uuid", headers=user.headers)
    bad_cursor = client.get("/v1/economy/deposits?cursor=bm90LWpzb24", headers=user.headers)

    for response in (no_key, bad_hash, not_hex, no_body, wrong_type, bad_id):
        assert_problem(response, 422, "invalid-request")
    assert_problem(bad_key, 422, "invalid-request")
    assert_problem(anonymous, 401, "unauthenticated")
    assert_problem(bad_cursor, 422, "invalid-cursor")


def test_the_ledger_reconciles_with_deposits_and_purchases(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    depositor, buyer = sign_in(client), sign_in(client)
    pay(node, tx(60), depositor)
    quoted = quote(client, buyer)
    pay(node, tx(61), buyer, value=FEE + 1_000_000)
    assert deposit(client, depositor, tx(60)).json()["status"] == "verified"
    assert purchase(client, buyer, quoted["quote_id"], tx(61)).json()["status"] == "verified"
    catch_up(services)

    result = reconcile(services.projections.datastore)
    held = dict(rows(services, "SELECT account, balance_minor FROM ledger_balances"))

    assert result.ok, result.breaches
    assert held[f"user:{depositor.user_id}"] == AMOUNT
    assert held[f"user:{buyer.user_id}"] == 1_000_000
    assert held["audition_revenue"] == FEE
    # The treasury is the source of all money that arrived on-chain.
    assert held["treasury"] == -(AMOUNT + 1_000_000 + FEE)
