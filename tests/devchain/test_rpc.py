"""The devchain over HTTP JSON-RPC: the wire format a public node answers in (as our
verifier and a wallet library read it), blocks mined on demand or held for the interval,
and reorgs that take transactions out of the chain."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from web3 import Web3

from ingest.evm import EvmNode
from scripts.devchain import DevChain
from scripts.devchain.build_contract import committed
from tests.support.wallets import new_wallet


@pytest.fixture
def held() -> Iterator[DevChain]:
    """A devchain with a block interval too long to come round in a test: transactions
    wait in the pending block until the test mines."""
    with DevChain(chain_id=1337, block_interval=3600) as devchain:
        yield devchain


def rpc(url: str, method: str, *params: Any) -> dict[str, Any]:
    response = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == 7
    return body


def result(url: str, method: str, *params: Any) -> Any:
    body = rpc(url, method, *params)
    assert "error" not in body, body
    return body["result"]


def is_quantity(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("0x") and int(value, 16) >= 0


def test_answers_in_a_public_nodes_wire_format(chain: DevChain) -> None:
    payer, payee = chain.demo_wallet(3), new_wallet()
    tx_hash = chain.transfer_usdc(payer, payee.address, 5_000_000)

    receipt = result(chain.url, "eth_getTransactionReceipt", tx_hash)
    block = result(chain.url, "eth_getBlockByNumber", receipt["blockNumber"], False)
    full = result(chain.url, "eth_getBlockByNumber", "latest", True)
    transaction = result(chain.url, "eth_getTransactionByHash", tx_hash)

    assert result(chain.url, "eth_chainId") == hex(31337)
    assert result(chain.url, "net_version") == "31337"
    assert result(chain.url, "eth_blockNumber") == receipt["blockNumber"] == hex(chain.head())
    assert (receipt["transactionHash"], receipt["status"], receipt["type"]) == (
        tx_hash,
        "0x1",
        "0x2",
    )
    assert receipt["from"] == payer.address.lower()
    assert receipt["to"] == chain.usdc_address.lower()
    assert receipt["contractAddress"] is None
    assert all(
        is_quantity(receipt[k])
        for k in ("gasUsed", "cumulativeGasUsed", "transactionIndex", "effectiveGasPrice")
    )
    assert len(receipt["logsBloom"]) == 2 + 512 and int(receipt["logsBloom"], 16) != 0
    [entry] = receipt["logs"]
    assert (entry["blockHash"], entry["transactionHash"], entry["removed"]) == (
        receipt["blockHash"],
        tx_hash,
        False,
    )
    assert (entry["logIndex"], entry["blockNumber"]) == ("0x0", receipt["blockNumber"])
    assert block["hash"] == receipt["blockHash"] and block["transactions"] == [tx_hash]
    assert is_quantity(block["timestamp"]) and is_quantity(block["baseFeePerGas"])
    assert block["miner"] == "0x" + "00" * 20
    assert full["transactions"][0]["hash"] == tx_hash
    assert transaction["input"].startswith("0xa9059cbb")  # transfer(address,uint256)
    assert transaction["blockHash"] == receipt["blockHash"]
    assert result(chain.url, "eth_getTransactionReceipt", "0x" + "ab" * 32) is None
    assert result(chain.url, "eth_getTransactionByHash", "0x" + "ab" * 32) is None
    assert result(chain.url, "eth_getBlockByNumber", hex(chain.head() + 5), False) is None


def test_our_verifier_reads_a_transfer_from_it(chain: DevChain) -> None:
    payer, treasury = chain.demo_wallet(4), chain.demo_wallet(0)
    tx_hash = chain.transfer_usdc(payer, treasury.address, 40_000_000)
    chain.mine(2)
    node = EvmNode(chain.url)

    seen = node.observe_deposit(tx_hash)
    node.close()

    assert seen is not None
    assert (seen.chain_id, seen.tx_known, seen.receipt_status) == (31337, True, 1)
    assert seen.head_block - (seen.block_number or 0) + 1 == 3
    assert seen.block_hash == seen.canonical_block_hash
    [transfer] = seen.transfers
    assert (transfer.token, transfer.sender, transfer.recipient, transfer.value_minor) == (
        chain.usdc_address.lower(),
        payer.address.lower(),
        treasury.address.lower(),
        40_000_000,
    )


def test_a_wallet_library_pays_over_http(chain: DevChain) -> None:
    w3 = Web3(Web3.HTTPProvider(chain.url))
    payer, payee = chain.demo_wallet(5), new_wallet()
    usdc = w3.eth.contract(
        address=Web3.to_checksum_address(chain.usdc_address), abi=committed()["abi"]
    )

    built = usdc.functions.transfer(payee.address, 2_500_000).build_transaction(
        {"from": payer.address, "nonce": w3.eth.get_transaction_count(payer.address, "pending")}
    )
    tx_hash = w3.eth.send_raw_transaction(
        payer.sign_transaction(cast(dict[str, Any], built)).raw_transaction
    )
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
    logs = w3.eth.get_logs(
        {"fromBlock": receipt["blockNumber"], "toBlock": "latest", "address": usdc.address}
    )

    assert w3.eth.chain_id == 31337
    assert receipt["status"] == 1
    assert usdc.functions.balanceOf(payee.address).call() == 2_500_000
    assert usdc.functions.decimals().call() == 6
    assert usdc.functions.symbol().call() == "USDC"
    assert [log["transactionHash"] for log in logs] == [tx_hash]
    assert w3.eth.get_balance(payee.address) == 0


def test_with_an_interval_a_transaction_waits_for_the_next_block(held: DevChain) -> None:
    payer, payee = held.demo_wallet(2), new_wallet()
    head = held.head()

    first = held.transfer_usdc(payer, payee.address, 1_000_000)
    second = held.transfer_usdc(payer, payee.address, 2_000_000)  # the next nonce, same block
    waiting = result(held.url, "eth_getTransactionByHash", first)
    receipt_before = result(held.url, "eth_getTransactionReceipt", first)
    nonces = (
        result(held.url, "eth_getTransactionCount", payer.address, "latest"),
        result(held.url, "eth_getTransactionCount", payer.address, "pending"),
    )
    balance_before = held.usdc_balance(payee.address)
    mined = result(held.url, "evm_mine", 1)
    receipts = [result(held.url, "eth_getTransactionReceipt", h) for h in (first, second)]

    assert held.chain_id == 1337 and result(held.url, "eth_chainId") == "0x539"
    assert (waiting["hash"], waiting["blockNumber"], waiting["blockHash"]) == (first, None, None)
    assert receipt_before is None
    assert nonces == ("0x0", "0x2")
    assert balance_before == 0
    assert mined == hex(head + 1)
    assert [r["blockNumber"] for r in receipts] == [hex(head + 1)] * 2
    assert [r["transactionIndex"] for r in receipts] == ["0x0", "0x1"]
    assert held.usdc_balance(payee.address) == 3_000_000


def test_a_reorg_replaces_the_last_blocks_and_their_transactions_are_gone(chain: DevChain) -> None:
    payer, payee = chain.demo_wallet(6), new_wallet()
    tx_hash = chain.transfer_usdc(payer, payee.address, 3_000_000)
    chain.mine(1)
    head = chain.head()
    before = [
        result(chain.url, "eth_getBlockByNumber", hex(n), False)["hash"]
        for n in (head - 2, head - 1, head)
    ]

    answer = result(chain.url, "devchain_reorg", 2)
    after = [
        result(chain.url, "eth_getBlockByNumber", hex(n), False) for n in (head - 2, head - 1, head)
    ]

    assert answer == hex(head)  # the height stays
    assert after[0]["hash"] == before[0]  # below the reorg nothing changed
    assert [b["hash"] for b in after[1:]] != before[1:]
    assert all(b["hash"] not in before for b in after[1:])
    assert [b["transactions"] for b in after[1:]] == [[], []]
    assert after[1]["parentHash"] == before[0]
    assert result(chain.url, "eth_getTransactionReceipt", tx_hash) is None
    assert result(chain.url, "eth_getTransactionByHash", tx_hash) is None
    assert chain.usdc_balance(payee.address) == 0
    assert result(chain.url, "eth_getTransactionCount", payer.address, "latest") == "0x0"


def test_a_reorg_keeps_what_waits_for_the_next_block(held: DevChain) -> None:
    payer, payee = held.demo_wallet(2), new_wallet()
    mined = held.transfer_usdc(payer, payee.address, 1_000_000)
    held.mine(2)
    waiting = held.transfer_usdc(payer, payee.address, 4_000_000)

    held.reorg(2)  # takes `mined` away; `waiting` (nonce 1) no longer fits and is dropped
    dropped = result(held.url, "eth_getTransactionByHash", waiting)
    again = held.transfer_usdc(held.demo_wallet(3), payee.address, 500_000)
    held.reorg(1)
    kept = result(held.url, "eth_getTransactionByHash", again)
    held.mine(1)

    assert result(held.url, "eth_getTransactionReceipt", mined) is None
    assert dropped is None
    assert (kept["hash"], kept["blockNumber"]) == (again, None)
    assert held.usdc_balance(payee.address) == 500_000


def test_the_setup_never_reorgs_and_bad_calls_get_json_rpc_errors(chain: DevChain) -> None:
    too_deep = rpc(chain.url, "devchain_reorg", chain.head())
    unknown = rpc(chain.url, "eth_unknownMethod")
    bad = rpc(chain.url, "eth_getTransactionReceipt", "not-a-hash")
    replay = rpc(chain.url, "eth_sendRawTransaction", "0x02")
    batch = httpx.post(
        chain.url,
        json=[
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
        ],
    ).json()
    garbage = httpx.post(chain.url, content=b'{"jsonrpc": "2.0", "id": 1, "meth').json()

    assert too_deep["error"]["code"] == -32602
    assert "never reorgs" in too_deep["error"]["message"]
    assert unknown["error"]["code"] == -32601
    assert bad["error"]["code"] == -32602
    assert replay["error"]["code"] == -32000
    assert [(r["id"], r["result"]) for r in batch] == [(1, "0x7a69"), (2, hex(chain.head()))]
    assert garbage["error"]["code"] == -32700
    assert json.loads(json.dumps(chain.settings_env())) == {
        "PUMPPARTY_EVM_RPC_URL": chain.url,
        "PUMPPARTY_CHAIN_ID": "31337",
        "PUMPPARTY_USDC_CONTRACT": chain.usdc_address,
        "PUMPPARTY_TREASURY_ADDRESS": chain.demo_wallet(0).address,
    }


def test_a_request_with_a_negative_or_garbled_length_is_refused_at_once(chain: DevChain) -> None:
    address = httpx.URL(chain.url)
    answers = []
    for length in ("-5", "ten"):
        with socket.create_connection((address.host, address.port), timeout=10) as conn:
            conn.sendall(
                f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode()
            )
            received = b""
            while chunk := conn.recv(4096):  # the server closes after its answer
                received += chunk
            answers.append(received.decode())

    assert all(answer.startswith("HTTP/1.0 400") for answer in answers), answers
    assert all("Content-Length in bytes" in answer for answer in answers)
