"""What a deposit transaction pays, and when it may have been paid (issue 15, L1 and L2).

Every qualifying Transfer log of the transaction counts (from the USDC contract, from the
signed-in wallet, to the treasury), not only the largest; and a transfer mined before the
quote existed pays for nothing, however fresh the quote it is submitted against.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.economy.test_purchases import FEE, TX, purchase, quote
from tests.support.evm_node import EvmNodeServer
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

OTHER = "0x3333333333333333333333333333333333333333"
NOT_USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"


def account(client: TestClient, services: Services, buyer: SignedIn) -> dict[str, Any]:
    catch_up(services)
    body: dict[str, Any] = client.get("/v1/ledger/accounts/me", headers=buyer.headers).json()
    return body


def pay_in_parts(
    client: TestClient, node: EvmNodeServer, parts: list[int], **other_logs: Any
) -> tuple[SignedIn, dict[str, Any]]:
    """One transaction with a Transfer log to the treasury per part, then the purchase."""
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    sender = buyer.wallet.address
    node.chain.pay(TX, sender=sender, value_minor=parts[0], block=node.chain.head - 4)
    for part in parts[1:]:
        node.chain.add_transfer(TX, sender=sender, value_minor=part)
    for changes in other_logs.values():
        node.chain.add_transfer(TX, **{"sender": sender, **changes})
    response = purchase(client, buyer, quoted["quote_id"], TX)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return buyer, body


def test_two_transfers_in_one_transaction_are_both_credited(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    # 2 x 25 USDC: the fee is paid and the other 25 stays on the balance.
    buyer, bought = pay_in_parts(client, node, [FEE, FEE])

    ledger = account(client, services, buyer)

    assert (bought["status"], bought["reason"]) == ("verified", None)
    assert ledger["balance_minor"] == str(FEE)
    assert sorted(int(e["amount_minor"]) for e in ledger["entries"]) == [-FEE, 2 * FEE]


def test_a_fee_paid_in_two_halves_is_paid(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    buyer, bought = pay_in_parts(client, node, [FEE // 2, FEE - FEE // 2])

    ledger = account(client, services, buyer)

    assert (bought["status"], bought["reason"]) == ("verified", None)
    assert ledger["balance_minor"] == "0"


def test_only_transfers_from_the_wallet_to_the_treasury_in_usdc_add_up(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    # Half the fee from the wallet; the rest arrives by logs that must not count.
    half = FEE // 2
    buyer, bought = pay_in_parts(
        client,
        node,
        [half],
        someone_else={"sender": OTHER, "value_minor": FEE},
        another_token={"token": NOT_USDC, "value_minor": FEE},
        elsewhere={"recipient": OTHER, "value_minor": FEE},
    )

    ledger = account(client, services, buyer)

    assert (bought["status"], bought["reason"]) == ("rejected", "amount-too-low")
    assert ledger["entries"] == []


def test_a_transfer_mined_before_the_quote_is_refused(
    client: TestClient, node: EvmNodeServer, services: Services, clock: FixedClock
) -> None:
    # An old wallet -> treasury transfer, redeemed with a quote taken at noon: it is final
    # (200 confirmations) and long before the quote's expiry, but older than the quote.
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    old_block = 800
    assert node.chain.block_time(old_block) < clock()
    node.chain.pay(TX, sender=buyer.wallet.address, value_minor=FEE, block=old_block)

    response = purchase(client, buyer, quoted["quote_id"], TX).json()
    ledger = account(client, services, buyer)

    assert (response["status"], response["reason"]) == ("rejected", "tx-before-quote")
    assert ledger["entries"] == []
    entitlements = client.get("/v1/entitlements", headers=buyer.headers).json()["items"]
    assert entitlements == []


def test_a_transfer_in_the_second_of_the_quote_counts(
    client: TestClient, node: EvmNodeServer, clock: FixedClock
) -> None:
    buyer = sign_in(client)
    clock.advance(seconds=0.75)  # block times are whole seconds: 12:00:00 is this second
    quoted = quote(client, buyer)
    assert node.chain.block_time(900) == clock().replace(microsecond=0)
    node.chain.pay(TX, sender=buyer.wallet.address, value_minor=FEE, block=900)

    response = purchase(client, buyer, quoted["quote_id"], TX).json()

    assert (response["status"], response["reason"]) == ("verified", None)
