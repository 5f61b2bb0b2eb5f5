"""Payments verified against the devchain exactly as against a public node: the service
is given the devchain's URL, chain id, USDC and treasury (`settings_env`), a user pays
with a signed USDC transfer on it, and the service's own path (HTTP, the verifier, the
`deposit_confirmations` job) decides. Faults that need injecting stay with the hand-written
node in tests/economy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from fastapi.testclient import TestClient
from web3 import Web3

from projections.reconciliation import reconcile
from runtime.clock import FixedClock
from scripts.devchain import DevChain
from scripts.devchain.build_contract import committed
from services.bootstrap import Services
from services.economy import DEPOSIT_JOB
from tests.economy.test_deposits import account, balances, deposit, rows, shown
from tests.economy.test_purchases import purchase, quote
from tests.economy.test_withdrawals import lease, money, report, requested
from tests.support.http import assert_problem
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, new_wallet, sign_in

AMOUNT = 40_000_000  # 40 USDC


def customer(client: TestClient, chain: DevChain, usdc_minor: int = AMOUNT) -> SignedIn:
    """A new wallet, given ETH for gas and USDC on the devchain, signed in to the service."""
    wallet = new_wallet()
    chain.fund(wallet.address, usdc_minor=usdc_minor)
    return sign_in(client, wallet)


def signed_transfer(chain: DevChain, user: SignedIn, amount: int) -> bytes:
    """The user's wallet signs a USDC transfer to the treasury, as a browser wallet would."""
    w3 = Web3(Web3.HTTPProvider(chain.url))
    usdc = w3.eth.contract(
        address=Web3.to_checksum_address(chain.usdc_address), abi=committed()["abi"]
    )
    treasury = chain.settings_env()["PUMPPARTY_TREASURY_ADDRESS"]
    built = usdc.functions.transfer(treasury, amount).build_transaction(
        {
            "from": user.wallet.address,
            "nonce": w3.eth.get_transaction_count(user.wallet.address, "pending"),
            "gas": 120_000,
        }
    )
    return bytes(user.wallet.sign_transaction(cast(dict[str, Any], built)).raw_transaction)


def broadcast(chain: DevChain, raw: bytes) -> str:
    w3 = Web3(Web3.HTTPProvider(chain.url))
    return "0x" + bytes(w3.eth.send_raw_transaction(raw)).hex()


def test_a_deposit_paid_on_the_devchain_is_verified_and_credited(
    client: TestClient, chain: DevChain, services: Services, clock: FixedClock
) -> None:
    user = customer(client, chain)
    treasury = chain.settings_env()["PUMPPARTY_TREASURY_ADDRESS"]
    treasury_before = chain.usdc_balance(treasury)
    tx_hash = chain.transfer_usdc(user.wallet, treasury, AMOUNT)  # one confirmation

    submitted = deposit(client, user, tx_hash)
    waiting = account(client, services, user)
    chain.mine(2)  # three confirmations: what the tests' settings ask for
    catch_up(services)
    settled = run_job(services, DEPOSIT_JOB, clock)
    credited = account(client, services, user)
    body = submitted.json()

    assert submitted.status_code == 202, submitted.text
    assert (body["status"], body["reason"]) == ("pending_confirmations", "awaiting-confirmations")
    assert balances(waiting) == ("0", str(AMOUNT), "0")
    assert settled == 1
    assert balances(credited) == (str(AMOUNT), "0", str(AMOUNT))
    assert [(e["amount_minor"], e["cause"]) for e in credited["entries"]] == [
        (str(AMOUNT), f"deposit:{body['deposit_id']}")
    ]
    after = shown(client, user, body["deposit_id"])
    assert (after["status"], after["confirmations"], after["amount_minor"], after["tx_hash"]) == (
        "verified",
        3,
        str(AMOUNT),
        tx_hash,
    )
    assert chain.usdc_balance(user.wallet.address) == 0
    assert chain.usdc_balance(treasury) == treasury_before + AMOUNT
    assert reconcile(services.projections.datastore).ok


def test_a_final_deposit_is_credited_at_once(
    client: TestClient, chain: DevChain, services: Services
) -> None:
    user = customer(client, chain)
    tx_hash = broadcast(chain, signed_transfer(chain, user, AMOUNT))
    chain.mine(2)

    response = deposit(client, user, tx_hash).json()

    assert (response["status"], response["amount_minor"]) == ("verified", str(AMOUNT))
    assert balances(account(client, services, user)) == (str(AMOUNT), "0", str(AMOUNT))


def test_a_deposit_reorged_away_before_it_is_final_is_never_credited(
    client: TestClient, chain: DevChain, services: Services, clock: FixedClock
) -> None:
    user = customer(client, chain)
    tx_hash = chain.transfer_usdc(
        user.wallet, chain.settings_env()["PUMPPARTY_TREASURY_ADDRESS"], AMOUNT
    )
    submitted = deposit(client, user, tx_hash).json()
    seen = account(client, services, user)

    chain.reorg(1)  # the transfer's block is replaced before its third confirmation
    chain.mine(5)
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)
    dropped = shown(client, user, submitted["deposit_id"])
    clock.advance(seconds=services.settings.deposit_pending_timeout + 1)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)

    assert (submitted["status"], submitted["reason"]) == (
        "pending_confirmations",
        "awaiting-confirmations",
    )
    assert seen["pending_minor"] == str(AMOUNT)
    # The node no longer knows the transaction: it waits, then gives up.
    assert (dropped["status"], dropped["reason"]) == ("pending_confirmations", "tx-unknown")
    after = shown(client, user, submitted["deposit_id"])
    assert (after["status"], after["reason"], after["amount_minor"]) == (
        "rejected",
        "tx-unknown",
        None,
    )
    assert balances(account(client, services, user)) == ("0", "0", "0")
    assert rows(services, "SELECT count(*) FROM ledger_entries") == [(0,)]
    assert chain.usdc_balance(user.wallet.address) == AMOUNT  # on chain it never happened


def test_a_reorged_deposit_mined_again_is_credited_once(
    client: TestClient, chain: DevChain, services: Services, clock: FixedClock
) -> None:
    user = customer(client, chain)
    raw = signed_transfer(chain, user, AMOUNT)
    tx_hash = broadcast(chain, raw)
    submitted = deposit(client, user, tx_hash).json()

    chain.reorg(1)
    catch_up(services)
    run_job(services, DEPOSIT_JOB, clock)
    catch_up(services)
    dropped = shown(client, user, submitted["deposit_id"])
    # The wallet (or anyone holding it) broadcasts the same signed transaction again.
    again = broadcast(chain, raw)
    chain.mine(2)
    catch_up(services)
    settled = run_job(services, DEPOSIT_JOB, clock)
    repeated = deposit(client, user, tx_hash, key="dep-2")
    catch_up(services)

    assert (dropped["status"], dropped["reason"]) == ("pending_confirmations", "tx-unknown")
    assert again == tx_hash
    assert settled == 1
    assert shown(client, user, submitted["deposit_id"])["status"] == "verified"
    assert_problem(repeated, 409, "tx-already-claimed")
    assert balances(account(client, services, user)) == (str(AMOUNT), "0", str(AMOUNT))


def test_an_audition_purchase_paid_on_the_devchain_grants_the_entitlement(
    client: TestClient, chain: DevChain, services: Services, clock: FixedClock
) -> None:
    # The quote's window is judged against block times: the service's clock stands at the
    # devchain's head, as a live service's clock stands at a live chain's.
    head = chain.rpc("eth_getBlockByNumber", ["latest", False])
    clock.now = datetime.fromtimestamp(int(head["timestamp"], 16), UTC)
    buyer = customer(client, chain)
    quoted = quote(client, buyer)
    tx_hash = chain.transfer_usdc(
        buyer.wallet, quoted["treasury_address"], int(quoted["amount_minor"])
    )
    chain.mine(2)

    response = purchase(client, buyer, quoted["quote_id"], tx_hash)
    catch_up(services)
    entitlements = client.get("/v1/entitlements", headers=buyer.headers).json()["items"]

    assert quoted["chain_id"] == chain.chain_id
    assert quoted["treasury_address"] == chain.demo_wallet(0).address.lower()
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "verified"
    assert [(e["kind"], e["status"]) for e in entitlements] == [("audition", "available")]
    assert chain.usdc_balance(buyer.wallet.address) == AMOUNT - int(quoted["amount_minor"])


def test_a_withdrawal_paid_by_the_treasury_on_the_devchain_is_verified_and_posted(
    client: TestClient, chain: DevChain, services: Services, clock: FixedClock
) -> None:
    user = customer(client, chain)
    paid_in = chain.transfer_usdc(
        user.wallet, chain.settings_env()["PUMPPARTY_TREASURY_ADDRESS"], AMOUNT
    )
    chain.mine(2)
    assert deposit(client, user, paid_in).json()["status"] == "verified"

    asked = requested(client, user, "15")
    leased: dict[str, Any] | None = lease(client, services)
    assert leased is not None
    # Custody holds the treasury's key: wallet 0 of the devchain.
    paid_out = chain.transfer_usdc(chain.demo_wallet(0), leased["wallet"], 15_000_000)
    reported = report(client, asked["withdrawal_id"], paid_out, leased["fencing_token"])
    chain.mine(2)
    catch_up(services)
    settled = run_job(services, DEPOSIT_JOB, clock)

    assert reported.status_code == 200, reported.text
    assert reported.json()["reason"] == "awaiting-confirmations"
    assert settled == 1
    assert money(client, services, user) == (25_000_000, 0, 25_000_000)
    assert chain.usdc_balance(user.wallet.address) == 15_000_000
    assert reconcile(services.projections.datastore).ok
