"""Withdrawals (the payouts issue, item 3): a user's USDC leaves their available balance in a
pending transfer to `treasury:outgoing`; large ones wait for an admin other than the user;
custody (a service token with `payout:execute`) leases one with a fencing token, pays it on
the loopback chain and reports the transaction; the deposit verifier, reversed, judges it,
and only then does the transfer post."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from projections.reconciliation import reconcile
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from services.economy import DEPOSIT_JOB
from tests.conftest import CUSTODY_TOKEN, ENGINE_TOKEN
from tests.economy.test_purchases import tx
from tests.support.clones import configure
from tests.support.evm_node import TREASURY, EvmNodeServer
from tests.support.http import assert_problem, bearer
from tests.support.jobs import run_job
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, new_wallet, sign_in

USDC = 1_000_000
THRESHOLD = 50 * USDC  # from here an admin approves
LEASE_SECONDS = 60
CUSTODY = bearer(CUSTODY_TOKEN)
OTHER_WALLET = "0x3333333333333333333333333333333333333333"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Approval from 50 USDC, one-minute leases, access tokens that outlive a reorg's
    pending timeout on the test clock."""
    return settings.model_copy(
        update={
            "withdrawal_auto_approve_minor": THRESHOLD,
            "withdrawal_lease_seconds": LEASE_SECONDS,
            "access_token_ttl": 72 * 3600,
        }
    )


# --- builders ------------------------------------------------------------------------------


def funded(
    client: TestClient,
    node: EvmNodeServer,
    amount: int,
    n: int,
    wallet: LocalAccount | None = None,
) -> SignedIn:
    """A signed-in user whose balance holds `amount`, deposited on the loopback chain."""
    user = sign_in(client, wallet)
    node.chain.pay(
        tx(1000 + n), sender=user.wallet.address, value_minor=amount, block=node.chain.head - 4
    )
    response = client.post(
        "/v1/economy/deposits",
        json={"tx_hash": tx(1000 + n)},
        headers={**user.headers, "Idempotency-Key": f"fund-{n}"},
    )
    assert response.json()["status"] == "verified", response.text
    return user


def withdraw(client: TestClient, user: SignedIn, amount: str, key: str = "w-1") -> Any:
    return client.post(
        "/v1/economy/withdrawals",
        json={"amount": amount},
        headers={**user.headers, "Idempotency-Key": key},
    )


def requested(client: TestClient, user: SignedIn, amount: str, key: str = "w-1") -> dict[str, Any]:
    response = withdraw(client, user, amount, key)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def lease(client: TestClient, services: Services) -> dict[str, Any] | None:
    """One custody lease (the read model caught up first, as a polling custodian sees it)."""
    catch_up(services)
    response = client.post("/v1/custody/withdrawals/lease", headers=CUSTODY)
    assert response.status_code == 200, response.text
    leased: dict[str, Any] | None = response.json()["lease"]
    return leased


def pay_out(node: EvmNodeServer, tx_hash: str, to: str, value: int, confirmations: int) -> None:
    """A USDC transfer from the treasury on the loopback chain, `confirmations` deep."""
    node.chain.pay(
        tx_hash,
        sender=TREASURY,
        recipient=to,
        value_minor=value,
        block=node.chain.head - confirmations + 1,
    )


def report(client: TestClient, withdrawal_id: str, tx_hash: str, token: int) -> Any:
    return client.post(
        f"/v1/custody/withdrawals/{withdrawal_id}/executed",
        json={"tx_hash": tx_hash, "fencing_token": token},
        headers=CUSTODY,
    )


def cancel(client: TestClient, withdrawal_id: str, token: int) -> Any:
    return client.post(
        f"/v1/custody/withdrawals/{withdrawal_id}/cancel",
        json={"fencing_token": token, "reason": "treasury key rotation"},
        headers=CUSTODY,
    )


def money(client: TestClient, services: Services, user: SignedIn) -> tuple[int, int, int]:
    """The user's (posted, reserved, available) balance in minor units."""
    catch_up(services)
    body = client.get("/v1/ledger/accounts/me", headers=user.headers).json()
    return int(body["posted_minor"]), int(body["reserved_minor"]), int(body["available_minor"])


def shown(client: TestClient, services: Services, user: SignedIn, wid: str) -> dict[str, Any]:
    catch_up(services)
    response = client.get(f"/v1/economy/withdrawals/{wid}", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def admin_view(client: TestClient, admin: SignedIn, wid: str) -> dict[str, Any]:
    response = client.get(f"/v1/admin/withdrawals/{wid}", headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def outgoing(client: TestClient, admin: SignedIn) -> int:
    response = client.get("/v1/admin/ledger/accounts/treasury:outgoing", headers=admin.headers)
    assert response.status_code == 200, response.text
    return int(response.json()["balance_minor"])


def admins(client: TestClient, services: Services, *also: LocalAccount) -> list[SignedIn]:
    """Two new signed-in admins; the wallets `also` are admins too when they sign in."""
    wallets = [new_wallet(), new_wallet()]
    configure(client, admin_addresses=[w.address for w in (*wallets, *also)])
    signed_in = [sign_in(client, wallet) for wallet in wallets]
    catch_up(services)
    return signed_in


def decide(client: TestClient, admin: SignedIn, wid: str, action: str) -> Any:
    return client.post(
        f"/v1/admin/withdrawals/{wid}/{action}",
        json={"reason": "RETRO-CLOCK"},
        headers=admin.headers,
    )


def in_threads(count: int, act: Callable[[int], Any]) -> list[Any]:
    """`act(n)` from `count` threads released together; their answers."""
    barrier = threading.Barrier(count)
    answers: list[Any] = [None] * count

    def run(n: int) -> None:
        barrier.wait()
        answers[n] = act(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


# --- the whole way, on the loopback chain ---------------------------------------------------


def test_a_small_withdrawal_is_authorized_leased_paid_verified_and_posted(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = funded(client, node, 40 * USDC, 1)
    [admin, _] = admins(client, services)

    asked = requested(client, user, "15")
    held = money(client, services, user)
    leased = lease(client, services)
    assert leased is not None
    pay_out(node, tx(1), user.wallet.address, 15 * USDC, confirmations=1)  # not final yet
    reported = report(client, asked["withdrawal_id"], tx(1), leased["fencing_token"])
    waiting = money(client, services, user)
    node.chain.head += 2  # three confirmations: what the tests' settings ask for
    catch_up(services)
    settled = run_job(services, DEPOSIT_JOB, clock)
    paid = money(client, services, user)

    assert (asked["status"], asked["required_approvals"], asked["amount_minor"]) == (
        "authorized",
        0,
        str(15 * USDC),
    )
    assert asked["wallet"] == user.wallet.address.lower()
    assert held == (40 * USDC, 15 * USDC, 25 * USDC)  # posted, reserved, available
    assert (leased["withdrawal_id"], leased["wallet"], leased["amount_minor"]) == (
        asked["withdrawal_id"],
        user.wallet.address.lower(),
        str(15 * USDC),
    )
    assert leased["fencing_token"] == 1
    assert reported.status_code == 200, reported.text
    assert (reported.json()["status"], reported.json()["reason"]) == (
        "executed",
        "awaiting-confirmations",
    )
    assert waiting == held  # nothing moves until the chain is final
    assert settled == 1
    assert paid == (25 * USDC, 0, 25 * USDC)
    after = shown(client, services, user, asked["withdrawal_id"])
    assert (after["status"], after["tx_hash"], after["tx_status"], after["confirmations"]) == (
        "posted",
        tx(1),
        "verified",
        3,
    )
    assert outgoing(client, admin) == 15 * USDC
    entries = client.get("/v1/ledger/accounts/me", headers=user.headers).json()["entries"]
    assert (entries[-1]["amount_minor"], entries[-1]["counterparty"], entries[-1]["cause"]) == (
        str(-15 * USDC),
        "treasury:outgoing",
        f"withdrawal:{asked['withdrawal_id']}",
    )
    assert reconcile(services.projections.datastore).ok


def test_a_withdrawal_at_the_threshold_waits_for_an_admin_then_is_paid(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 80 * USDC, 2)
    [admin, _] = admins(client, services)
    asked = requested(client, user, "50")
    nothing = lease(client, services)
    awaiting = client.get(
        "/v1/admin/withdrawals?status=awaiting_approval", headers=admin.headers
    ).json()["items"]

    approved = decide(client, admin, asked["withdrawal_id"], "approve")
    leased = lease(client, services)
    assert leased is not None
    pay_out(node, tx(2), user.wallet.address, 50 * USDC, confirmations=5)
    reported = report(client, asked["withdrawal_id"], tx(2), leased["fencing_token"])

    assert (asked["status"], asked["required_approvals"]) == ("awaiting_approval", 1)
    assert nothing is None
    assert [w["withdrawal_id"] for w in awaiting] == [asked["withdrawal_id"]]
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "authorized"
    assert leased["withdrawal_id"] == asked["withdrawal_id"]
    assert (reported.json()["status"], reported.json()["tx_status"]) == ("posted", "verified")
    assert money(client, services, user) == (30 * USDC, 0, 30 * USDC)
    record = admin_view(client, admin, asked["withdrawal_id"])
    assert (record["maker"], record["approved_by"]) == (
        f"user:{user.user_id}",
        f"user:{admin.user_id}",
    )
    assert record["attempts"][0]["status"] == "verified"
    assert reconcile(services.projections.datastore).ok


def test_the_maker_cannot_approve_their_own_withdrawal(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    maker_wallet = new_wallet()
    [admin, _] = admins(client, services, maker_wallet)  # the user is an admin too
    maker = funded(client, node, 80 * USDC, 3, maker_wallet)
    asked = requested(client, maker, "60")

    own = decide(client, maker, asked["withdrawal_id"], "approve")
    other = decide(client, admin, asked["withdrawal_id"], "approve")
    again = decide(client, admin, asked["withdrawal_id"], "approve")

    assert_problem(own, 403, "maker-cannot-approve")
    assert other.json()["status"] == "authorized"
    assert_problem(again, 409, "withdrawal-not-awaiting-approval")


def test_a_rejected_withdrawal_releases_its_amount(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 80 * USDC, 4)
    [admin, _] = admins(client, services)
    asked = requested(client, user, "70")
    held = money(client, services, user)

    rejected = decide(client, admin, asked["withdrawal_id"], "reject")

    assert held == (80 * USDC, 70 * USDC, 10 * USDC)
    assert rejected.json()["status"] == "rejected"
    assert money(client, services, user) == (80 * USDC, 0, 80 * USDC)
    assert lease(client, services) is None
    assert shown(client, services, user, asked["withdrawal_id"])["reason"] == "RETRO-CLOCK"
    assert_problem(
        decide(client, admin, asked["withdrawal_id"], "approve"),
        409,
        "withdrawal-not-awaiting-approval",
    )


# --- what the chain shows decides ------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "value", "reason"),
    [
        (OTHER_WALLET, 20 * USDC, "wrong-recipient"),
        (None, 20 * USDC + 1, "amount-too-high"),
        (None, 20 * USDC - 1, "amount-too-low"),
    ],
    ids=["wrong-wallet", "too-much", "too-little"],
)
def test_a_tx_paying_the_wrong_wallet_or_amount_is_rejected_and_leasable_again(
    client: TestClient,
    node: EvmNodeServer,
    services: Services,
    recipient: str | None,
    value: int,
    reason: str,
) -> None:
    user = funded(client, node, 40 * USDC, 5)
    asked = requested(client, user, "20")
    first = lease(client, services)
    assert first is not None
    pay_out(node, tx(5), recipient or user.wallet.address, value, confirmations=5)

    refused = report(client, asked["withdrawal_id"], tx(5), first["fencing_token"])
    again = lease(client, services)
    assert again is not None
    pay_out(node, tx(6), user.wallet.address, 20 * USDC, confirmations=5)
    paid = report(client, asked["withdrawal_id"], tx(6), again["fencing_token"])

    assert (refused.json()["status"], refused.json()["reason"]) == ("authorized", reason)
    assert refused.json()["tx_status"] == "rejected"
    assert (again["withdrawal_id"], again["fencing_token"]) == (asked["withdrawal_id"], 2)
    assert paid.json()["status"] == "posted"
    assert money(client, services, user) == (20 * USDC, 0, 20 * USDC)
    attempts = [
        (a["tx_hash"], a["status"], a["reason"]) for a in admin_attempts(client, services, asked)
    ]
    assert attempts == [(tx(5), "rejected", reason), (tx(6), "verified", None)]


def admin_attempts(
    client: TestClient, services: Services, asked: dict[str, Any]
) -> list[dict[str, Any]]:
    [admin, _] = admins(client, services)
    attempts: list[dict[str, Any]] = admin_view(client, admin, asked["withdrawal_id"])["attempts"]
    return attempts


def test_a_reorged_out_tx_is_rejected_after_the_pending_timeout_and_leasable_again(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = funded(client, node, 40 * USDC, 6)
    asked = requested(client, user, "20")
    leased = lease(client, services)
    assert leased is not None
    pay_out(node, tx(7), user.wallet.address, 20 * USDC, confirmations=1)
    report(client, asked["withdrawal_id"], tx(7), leased["fencing_token"])
    node.chain.reorg(node.chain.head)  # the block that held it is replaced
    node.chain.head += 5

    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    uncertain = shown(client, services, user, asked["withdrawal_id"])
    clock.advance(seconds=services.settings.deposit_pending_timeout + 1)
    run_job(services, DEPOSIT_JOB, clock)
    after = shown(client, services, user, asked["withdrawal_id"])

    assert (uncertain["status"], uncertain["reason"]) == ("executed", "reorged")
    assert (after["status"], after["reason"], after["tx_status"]) == (
        "authorized",
        "reorged",
        "rejected",
    )
    assert money(client, services, user) == (40 * USDC, 20 * USDC, 20 * USDC)
    again = lease(client, services)
    assert again is not None and again["fencing_token"] == 2


def test_one_tx_settles_one_withdrawal_only(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = funded(client, node, 40 * USDC, 7)
    first = requested(client, user, "10", key="one")
    second = requested(client, user, "10", key="two")
    leases = [lease(client, services), lease(client, services)]
    pay_out(node, tx(8), user.wallet.address, 10 * USDC, confirmations=1)
    for leased in leases:  # both report the one transaction while it is not final
        assert leased is not None
        assert (
            report(client, leased["withdrawal_id"], tx(8), leased["fencing_token"]).json()["status"]
            == "executed"
        )
    node.chain.head += 5

    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)

    outcomes = sorted(
        (
            shown(client, services, user, w["withdrawal_id"])["status"],
            shown(client, services, user, w["withdrawal_id"])["reason"],
        )
        for w in (first, second)
    )
    assert outcomes == [("authorized", "tx-already-claimed"), ("posted", None)]
    assert money(client, services, user) == (30 * USDC, 10 * USDC, 20 * USDC)
    again = lease(client, services)
    assert again is not None
    assert_problem(
        report(client, again["withdrawal_id"], tx(8), again["fencing_token"]),
        409,
        "tx-already-claimed",
    )


def test_a_deposits_tx_cannot_settle_a_withdrawal(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 40 * USDC, 8)
    asked = requested(client, user, "10")
    leased = lease(client, services)
    assert leased is not None

    response = report(client, asked["withdrawal_id"], tx(1008), leased["fencing_token"])

    assert_problem(response, 409, "tx-already-claimed")
    assert shown(client, services, user, asked["withdrawal_id"])["status"] == "leased"


# --- concurrency ------------------------------------------------------------------------------


def test_withdrawals_racing_for_one_balance_never_overdraw(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 40 * USDC, 9)

    answers = in_threads(10, lambda n: withdraw(client, user, "10", key=f"race-{n}"))

    taken = [a for a in answers if a.status_code == 202]
    refused = [a.json()["type"] for a in answers if a.status_code != 202]
    assert 1 <= len(taken) <= 4
    assert set(refused) <= {"/problems/insufficient-funds", "/problems/concurrency-conflict"}
    posted, reserved, available = money(client, services, user)
    assert (posted, reserved, available) == (
        40 * USDC,
        len(taken) * 10 * USDC,
        (40 - 10 * len(taken)) * USDC,
    )
    for n in range(len(taken), 4):  # what is left can still be withdrawn, and no more
        assert withdraw(client, user, "10", key=f"rest-{n}").status_code == 202
    assert_problem(
        withdraw(client, user, "0.000001", key="one-too-many"), 409, "insufficient-funds"
    )
    assert money(client, services, user) == (40 * USDC, 40 * USDC, 0)


def test_custodians_racing_to_lease_get_different_withdrawals_or_none(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 40 * USDC, 10)
    asked = {requested(client, user, "5", key=f"w-{n}")["withdrawal_id"] for n in range(3)}
    catch_up(services)

    answers = in_threads(6, lambda n: client.post("/v1/custody/withdrawals/lease", headers=CUSTODY))

    assert {a.status_code for a in answers} <= {200, 409}
    leased = [a.json()["lease"] for a in answers if a.status_code == 200 and a.json()["lease"]]
    ids = [lease["withdrawal_id"] for lease in leased]
    assert len(ids) == len(set(ids))  # never one withdrawal to two custodians
    assert set(ids) <= asked
    assert {lease["fencing_token"] for lease in leased} <= {1}
    while (late := lease(client, services)) is not None:  # a 409 left one free, never held
        ids.append(late["withdrawal_id"])
    assert sorted(ids) == sorted(asked)


def test_a_stale_fencing_token_is_refused_once_another_custodian_leased(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    user = funded(client, node, 40 * USDC, 11)
    asked = requested(client, user, "10")
    crashed = lease(client, services)
    assert crashed is not None
    held = lease(client, services)  # still leased: nobody else gets it
    clock.advance(seconds=LEASE_SECONDS)
    taken_over = lease(client, services)
    assert taken_over is not None
    pay_out(node, tx(11), user.wallet.address, 10 * USDC, confirmations=5)

    stale_report = report(client, asked["withdrawal_id"], tx(11), crashed["fencing_token"])
    stale_cancel = cancel(client, asked["withdrawal_id"], crashed["fencing_token"])
    current = report(client, asked["withdrawal_id"], tx(11), taken_over["fencing_token"])
    repeated = report(client, asked["withdrawal_id"], tx(11), taken_over["fencing_token"])

    assert held is None
    assert (taken_over["withdrawal_id"], crashed["fencing_token"], taken_over["fencing_token"]) == (
        asked["withdrawal_id"],
        1,
        2,
    )
    assert_problem(stale_report, 409, "stale-fencing-token")
    assert_problem(stale_cancel, 409, "stale-fencing-token")
    assert current.json()["status"] == "posted"
    assert repeated.json() == current.json()  # a retried report answers the same
    assert money(client, services, user) == (30 * USDC, 0, 30 * USDC)


def test_custody_cancels_with_its_token_and_the_amount_is_released(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 40 * USDC, 12)
    asked = requested(client, user, "10")
    leased = lease(client, services)
    assert leased is not None

    cancelled = cancel(client, asked["withdrawal_id"], leased["fencing_token"])
    repeated = cancel(client, asked["withdrawal_id"], leased["fencing_token"])

    assert (cancelled.json()["status"], cancelled.json()["reason"]) == (
        "cancelled",
        "treasury key rotation",
    )
    assert repeated.json() == cancelled.json()
    assert money(client, services, user) == (40 * USDC, 0, 40 * USDC)
    assert lease(client, services) is None
    assert_problem(
        report(client, asked["withdrawal_id"], tx(12), leased["fencing_token"]),
        409,
        "withdrawal-not-leased",
    )


# --- who may do what, and bad input ------------------------------------------------------------


def test_a_withdrawal_is_its_owners_only(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    owner = funded(client, node, 40 * USDC, 13)
    stranger = sign_in(client)
    asked = requested(client, owner, "10")
    again = requested(client, owner, "10")  # the same key: the first withdrawal
    catch_up(services)

    shown_ = assert_owner_only(
        client,
        "GET",
        f"/v1/economy/withdrawals/{asked['withdrawal_id']}",
        owner=owner.headers,
        stranger=stranger.headers,
    ).json()
    mine = client.get("/v1/economy/withdrawals", headers=owner.headers).json()["items"]
    theirs = client.get("/v1/economy/withdrawals", headers=stranger.headers).json()["items"]

    assert again["withdrawal_id"] == asked["withdrawal_id"]
    assert (shown_["status"], shown_["amount"]) == ("authorized", "10.000000")
    assert [w["withdrawal_id"] for w in mine] == [asked["withdrawal_id"]]
    assert theirs == []
    assert_problem(withdraw(client, owner, "11"), 409, "idempotency-key-reused")
    assert client.get("/v1/economy/withdrawals").status_code == 401


def test_admin_and_custody_routes_refuse_everyone_else(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 80 * USDC, 14)
    [admin, _] = admins(client, services)
    asked = requested(client, user, "60")
    path = f"/v1/admin/withdrawals/{asked['withdrawal_id']}"
    custody = f"/v1/custody/withdrawals/{asked['withdrawal_id']}"
    token_body = {"fencing_token": 1, "reason": "x"}

    for url in ("/v1/admin/withdrawals", path):
        assert_problem(client.get(url), 401, "unauthenticated")
        assert_problem(client.get(url, headers=user.headers), 403, "forbidden")
        assert_problem(client.get(url, headers=CUSTODY), 403, "forbidden")
    for action in ("approve", "reject"):
        assert_problem(
            client.post(f"{path}/{action}", json={"reason": "x"}), 401, "unauthenticated"
        )
        assert_problem(decide(client, user, asked["withdrawal_id"], action), 403, "forbidden")
    for url, body in (
        ("/v1/custody/withdrawals/lease", None),
        (f"{custody}/executed", {"tx_hash": tx(14), "fencing_token": 1}),
        (f"{custody}/cancel", token_body),
    ):
        assert_problem(client.post(url, json=body), 401, "unauthenticated")
        for headers in (user.headers, admin.headers, bearer(ENGINE_TOKEN)):
            assert_problem(client.post(url, json=body, headers=headers), 403, "forbidden")
    assert shown(client, services, user, asked["withdrawal_id"])["status"] == "awaiting_approval"


@pytest.mark.parametrize(
    "amount", ["0", "-1", "abc", "1.0000001", "1e10", "", None, [], "NaN", "Infinity"]
)
def test_a_bad_amount_is_a_422(
    client: TestClient, node: EvmNodeServer, services: Services, amount: Any
) -> None:
    user = sign_in(client)

    response = client.post(
        "/v1/economy/withdrawals",
        json={"amount": amount},
        headers={**user.headers, "Idempotency-Key": "bad"},
    )

    assert_problem(response, 422, "invalid-request")


def test_bad_requests_are_problems_never_500s(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    user = funded(client, node, 40 * USDC, 15)
    [admin, _] = admins(client, services)
    asked = requested(client, user, "10")
    unknown = "00000000-0000-4000-8000-000000000000"
    custody = f"/v1/custody/withdrawals/{asked['withdrawal_id']}"

    no_key = client.post("/v1/economy/withdrawals", json={"amount": "1"}, headers=user.headers)
    poor = withdraw(client, user, "41", key="too-much")
    bad_hash = client.post(
        f"{custody}/executed", json={"tx_hash": "0x12", "fencing_token": 1}, headers=CUSTODY
    )
    bad_token = client.post(
        f"{custody}/executed", json={"tx_hash": tx(15), "fencing_token": 0}, headers=CUSTODY
    )
    not_leased = report(client, asked["withdrawal_id"], tx(15), 0 + 1)
    missing = report(client, unknown, tx(15), 1)
    bad_filter = client.get("/v1/admin/withdrawals?status=paid", headers=admin.headers)
    not_awaiting = decide(client, admin, asked["withdrawal_id"], "approve")
    missing_admin = decide(client, admin, unknown, "reject")
    empty_reason = client.post(
        f"/v1/admin/withdrawals/{asked['withdrawal_id']}/reject",
        json={"reason": ""},
        headers=admin.headers,
    )

    assert no_key.status_code == 422
    assert_problem(poor, 409, "insufficient-funds")
    assert_problem(bad_hash, 422, "invalid-request")
    assert_problem(bad_token, 422, "invalid-request")
    assert_problem(not_leased, 409, "stale-fencing-token")  # never leased: token 0
    assert_problem(missing, 404, "not-found")
    assert_problem(bad_filter, 422, "invalid-request")
    assert_problem(not_awaiting, 409, "withdrawal-not-awaiting-approval")
    assert_problem(missing_admin, 404, "not-found")
    assert_problem(empty_reason, 422, "invalid-request")
    assert money(client, services, user) == (40 * USDC, 10 * USDC, 30 * USDC)


# --- reconciliation ---------------------------------------------------------------------------


def tamper(services: Services, statement: str) -> None:
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    ("statement", "check"),
    [
        ("UPDATE withdrawals SET tx_hash = NULL", "withdrawal-posted-with-verified-tx"),
        (
            "UPDATE withdrawals SET paid_minor = paid_minor - 1",
            "withdrawal-posted-with-verified-tx",
        ),
        (
            "UPDATE withdrawals SET amount_minor = amount_minor + 1",
            "treasury-outgoing-equals-posted-withdrawals",
        ),
        (
            "UPDATE withdrawals SET status = 'authorized'",
            "treasury-outgoing-equals-posted-withdrawals",
        ),
    ],
    ids=["no-tx", "paid-another-amount", "amount-changed", "not-posted"],
)
def test_reconciliation_catches_a_posted_withdrawal_that_does_not_add_up(
    client: TestClient,
    node: EvmNodeServer,
    services: Services,
    statement: str,
    check: str,
) -> None:
    user = funded(client, node, 40 * USDC, 16)
    asked = requested(client, user, "10")
    leased = lease(client, services)
    assert leased is not None
    pay_out(node, tx(16), user.wallet.address, 10 * USDC, confirmations=5)
    assert (
        report(client, asked["withdrawal_id"], tx(16), leased["fencing_token"]).json()["status"]
        == "posted"
    )
    catch_up(services)
    assert reconcile(services.projections.datastore).ok

    tamper(services, statement)
    result = reconcile(services.projections.datastore)

    assert check in [b["check"] for b in result.breaches]
