"""Which logs of a deposit's receipt count: only live 3-topic ERC-20 `Transfer` logs.

ERC-721 `Transfer` shares the event signature, with the token id as a fourth topic and no
data; a log the node marks `removed` was dropped by a reorg. Neither pays for anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from aggregates.purchases import TRANSFER_TOPIC
from ingest.evm import _transfer
from services.bootstrap import Services
from tests.economy.test_purchases import FEE, TX, purchase, quote
from tests.support.evm_node import TREASURY, USDC, EvmNodeServer, topic_address
from tests.support.projections import catch_up
from tests.support.wallets import sign_in

NFT = "0x5555555555555555555555555555555555555555"

Logs = Callable[[dict[str, Any]], list[dict[str, Any]]]


def buy(
    client: TestClient, node: EvmNodeServer, services: Services, logs: Logs
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pay the fee on-chain, let `logs` rewrite the receipt's logs (given the real USDC
    transfer), then buy: answers the purchase and the buyer's ledger account."""
    buyer = sign_in(client)
    quoted = quote(client, buyer)
    node.chain.pay(TX, sender=buyer.wallet.address, value_minor=FEE, block=node.chain.head - 4)
    receipt = node.chain.receipts[TX]
    receipt["logs"] = logs(receipt["logs"][0])
    response = purchase(client, buyer, quoted["quote_id"], TX)
    assert response.status_code == 202, response.text
    catch_up(services)
    account = client.get("/v1/ledger/accounts/me", headers=buyer.headers).json()
    return response.json(), account


def four_topics(transfer: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The ERC-721 layout: sender, recipient and the token id as topics."""
    topics = [*transfer["topics"], "0x" + f"{42:064x}"]
    return {**transfer, "topics": topics, "logIndex": "0x4", **changes}


def test_an_erc721_transfer_in_the_receipt_is_ignored(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    # An NFT sent to the treasury in the same transaction: four topics, no data.
    bought, account = buy(
        client, node, services, lambda usdc: [usdc, four_topics(usdc, address=NFT, data="0x")]
    )

    assert (bought["status"], bought["reason"]) == ("verified", None)
    assert account["balance_minor"] == "0"


def test_a_four_topic_transfer_from_the_usdc_contract_pays_nothing(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    # Shaped like a payment ten times the fee, but in the ERC-721 layout: it must not count.
    bought, account = buy(
        client,
        node,
        services,
        lambda usdc: [usdc, four_topics(usdc, address=USDC, data="0x" + f"{FEE * 10:064x}")],
    )

    assert bought["status"] == "verified"
    assert account["balance_minor"] == "0"  # only the fee arrived, and it went to revenue


def test_a_removed_log_is_not_counted(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    # A bigger transfer the node dropped in a reorg; the one still there pays the fee.
    dropped = {"data": "0x" + f"{FEE * 10:064x}", "logIndex": "0x4", "removed": True}
    bought, account = buy(client, node, services, lambda usdc: [{**usdc, **dropped}, usdc])

    assert bought["status"] == "verified"
    assert account["balance_minor"] == "0"


def test_a_receipt_whose_only_transfer_was_removed_pays_nothing(
    client: TestClient, node: EvmNodeServer, services: Services
) -> None:
    bought, account = buy(client, node, services, lambda usdc: [{**usdc, "removed": True}])

    assert (bought["status"], bought["reason"]) == ("rejected", "wrong-token")
    assert account["entries"] == []


def test_only_a_live_three_topic_transfer_log_is_parsed() -> None:
    transfer: dict[str, Any] = {
        "address": USDC,
        "topics": [TRANSFER_TOPIC, topic_address(NFT), topic_address(TREASURY)],
        "data": "0x" + f"{FEE:064x}",
        "logIndex": "0x3",
        "removed": False,
    }

    parsed = _transfer(transfer)

    assert parsed is not None and (parsed.sender, parsed.recipient) == (NFT, TREASURY)
    assert parsed.value_minor == FEE and parsed.log_index == 3
    assert _transfer({**transfer, "removed": True}) is None
    assert _transfer(four_topics(transfer)) is None
    assert _transfer({**transfer, "topics": transfer["topics"][:2]}) is None
