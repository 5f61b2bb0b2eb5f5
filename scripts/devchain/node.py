"""The devchain's node: a py-evm chain (through eth-tester) answering Ethereum JSON-RPC.

Answers are in the wire format of a public node (hex quantities, camelCase fields, `null`
for what is not there), so the ledger's verifier (ingest/evm.py) and any wallet library
talk to it as to any node. Beside the standard methods it has the dev ones: `evm_mine`,
`devchain_reorg`, `evm_snapshot` and `evm_revert`.

Transactions are applied to the pending block as they arrive (so they are validated then,
nonce and funds, as a node's mempool would) and mined with it: at once by default, or
when the block interval comes round."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from eth_bloom import BloomFilter
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import BlockNotFound, TransactionNotFound
from eth_utils import to_checksum_address

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x" + "00" * 20
PRIORITY_FEE_WEI = 10**9
"""The tip the devchain suggests: one gwei, as a quiet public chain would."""
MAX_LOG_RANGE = 10_000
"""The most blocks one eth_getLogs may scan: a public node caps it too."""
BLOCK_TAGS = ("latest", "earliest", "pending", "safe", "finalized")
CALLER_ETH = 10**6 * 10**18


class RpcFault(Exception):
    """A JSON-RPC error answer: `code` as the JSON-RPC spec and public nodes use them."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_params(message: str) -> RpcFault:
    return RpcFault(-32602, message)


class Node:
    """One chain, answering JSON-RPC calls one at a time (a lock: py-evm is not thread-safe)."""

    def __init__(self, *, chain_id: int, genesis_balances: dict[str, int]) -> None:
        self.chain_id = chain_id
        self.lock = threading.RLock()
        self.auto_mine = True
        # A call without a sender comes from the zero address, and py-evm charges a call
        # gas as a transaction (a public node does not): the zero address can afford it.
        balances = {ZERO_ADDRESS: CALLER_ETH, **genesis_balances}
        backend = PyEVMBackend(
            genesis_state={
                bytes.fromhex(address.removeprefix("0x")): {
                    "balance": wei,
                    "nonce": 0,
                    "code": b"",
                    "storage": {},
                }
                for address, wei in balances.items()
            }
        )
        # eth-tester's chain class fixes its own chain id; ours is the one the service
        # checks (PUMPPARTY_CHAIN_ID) and the one wallets sign for (EIP-155).
        chain_class = type(backend.chain)
        ours = type("DevChainPos", (chain_class,), {"chain_id": chain_id})
        backend.chain = ours(backend.chain.chaindb.db)
        self.backend = backend
        self.tester = EthereumTester(backend)
        self.final_height = 0
        """Blocks at or below this height never reorg: the devchain's own setup (its USDC)."""
        self._snapshots: dict[int, bytes] = {}
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "web3_clientVersion": lambda _: "pumpparty-devchain/eth-tester-py-evm",
            "net_version": lambda _: str(self.chain_id),
            "net_listening": lambda _: True,
            "eth_chainId": lambda _: hex(self.chain_id),
            "eth_syncing": lambda _: False,
            "eth_accounts": lambda _: [],
            "eth_blockNumber": lambda _: hex(self.head()),
            "eth_getBlockByNumber": self._get_block_by_number,
            "eth_getBlockByHash": self._get_block_by_hash,
            "eth_getTransactionByHash": self._get_transaction_by_hash,
            "eth_getTransactionReceipt": self._get_transaction_receipt,
            "eth_getTransactionCount": self._get_transaction_count,
            "eth_getBalance": self._get_balance,
            "eth_getCode": self._get_code,
            "eth_gasPrice": lambda _: hex(self._base_fee() + PRIORITY_FEE_WEI),
            "eth_maxPriorityFeePerGas": lambda _: hex(PRIORITY_FEE_WEI),
            "eth_feeHistory": self._fee_history,
            "eth_estimateGas": self._estimate_gas,
            "eth_call": self._call,
            "eth_getLogs": self._get_logs,
            "eth_sendRawTransaction": self._send_raw_transaction,
            "evm_mine": self._evm_mine,
            "anvil_mine": self._evm_mine,
            "devchain_reorg": self._devchain_reorg,
            "evm_snapshot": self._evm_snapshot,
            "evm_revert": self._evm_revert,
        }

    # The chain's own operations (the Python interface and the dev methods use these).

    def head(self) -> int:
        with self.lock:
            return int(self.tester.get_block_by_number("latest")["number"])

    def submit(self, raw_transaction: bytes) -> str:
        """Validate the signed transaction and put it in the pending block (not mined)."""
        with self.lock:
            try:
                tx_hash = self.backend.send_raw_transaction(raw_transaction)
            except Exception as error:  # py-evm's validation errors have no common base
                raise RpcFault(-32000, f"transaction rejected: {error}") from error
            return "0x" + bytes(tx_hash).hex()

    def mine(self, blocks: int = 1) -> int:
        """Mine `blocks` blocks (what is pending goes into the first); the new head."""
        if blocks < 1:
            raise invalid_params(f"mine at least one block, not {blocks}")
        with self.lock:
            self._mine_blocks(blocks)
            return self.head()

    def _mine_blocks(self, blocks: int) -> None:
        """Each block is stamped when it is mined, as a public chain's are: py-evm would
        keep the time its pending block was opened (when the previous block was mined),
        so a payment made a minute after a quiet spell would look a minute older. The
        second is rounded up: a payment is never stamped before the request it answers."""
        for _ in range(blocks):
            chain = self.backend.chain
            parent = chain.get_canonical_head()
            stamp = max(math.ceil(time.time()), parent.timestamp + 1)
            chain.header = chain.header.copy(timestamp=stamp)
            self.backend.mine_blocks(1)

    def reorg(self, depth: int) -> int:
        """The last `depth` blocks are replaced by as many empty ones, as when the network
        settles on another branch: their transactions are no longer in any block, the
        hashes at those heights change, and the head's height stays. What was waiting
        for the next block still waits. Returns the head."""
        with self.lock:
            head = self.head()
            if depth < 1:
                raise invalid_params(f"reorg at least one block, not {depth}")
            if head - depth < self.final_height:
                raise invalid_params(
                    f"the devchain's setup (blocks up to {self.final_height}) never reorgs: "
                    f"depth {depth} at head {head} reaches below it"
                )
            waiting = list(self.backend.chain.get_block().transactions)
            base = self.tester.get_block_by_number(head - depth)
            self.backend.revert_to_snapshot(_bytes(base["hash"]))
            # Post-merge blocks draw a fresh random mix hash, so every replacement block
            # differs from the one it replaces even when both are empty.
            self._mine_blocks(depth)
            for transaction in waiting:
                try:
                    self.backend.chain.apply_transaction(transaction)
                except Exception as error:  # a real mempool drops what no longer fits too
                    log.info("devchain: dropped a pending transaction after a reorg: %s", error)
            return self.head()

    # JSON-RPC

    def handle(self, method: str, params: Any) -> Any:
        """The result for one call, or RpcFault."""
        handler = self._methods.get(method)
        if handler is None:
            raise RpcFault(-32601, f"the method {method} does not exist/is not available")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise invalid_params("params must be an array")
        with self.lock:
            try:
                return handler(params)
            except RpcFault:
                raise
            except (IndexError, KeyError, TypeError, ValueError) as error:
                raise invalid_params(f"{method}: {type(error).__name__}: {error}") from error

    def _get_block_by_number(self, params: list[Any]) -> dict[str, Any] | None:
        tag = _block_tag(params[0])
        full = bool(params[1]) if len(params) > 1 else False
        try:
            block = self.tester.get_block_by_number(tag, full_transactions=full)
        except BlockNotFound:
            return None
        return _format_block(block, full)

    def _get_block_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        full = bool(params[1]) if len(params) > 1 else False
        try:
            block = self.tester.get_block_by_hash(_hash(params[0]), full_transactions=full)
        except BlockNotFound:
            return None
        return _format_block(block, full)

    def _get_transaction_by_hash(self, params: list[Any]) -> dict[str, Any] | None:
        try:
            transaction = self.tester.get_transaction_by_hash(_hash(params[0]))
        except TransactionNotFound:
            return None
        return _format_transaction(transaction)

    def _get_transaction_receipt(self, params: list[Any]) -> dict[str, Any] | None:
        try:
            receipt = self.tester.get_transaction_receipt(_hash(params[0]))
        except TransactionNotFound:
            return None
        if receipt.get("block_number") is None:
            return None  # still pending: a node has no receipt before the block
        return _format_receipt(receipt)

    def _get_transaction_count(self, params: list[Any]) -> str:
        tag = _block_tag(params[1]) if len(params) > 1 else "latest"
        return hex(self.tester.get_nonce(_address(params[0]), tag))

    def _get_balance(self, params: list[Any]) -> str:
        tag = _block_tag(params[1]) if len(params) > 1 else "latest"
        return hex(self.tester.get_balance(_address(params[0]), tag))

    def _get_code(self, params: list[Any]) -> str:
        tag = _block_tag(params[1]) if len(params) > 1 else "latest"
        return str(self.tester.get_code(_address(params[0]), tag))

    def _base_fee(self) -> int:
        return int(self.tester.get_block_by_number("pending")["base_fee_per_gas"])

    def _fee_history(self, params: list[Any]) -> dict[str, Any]:
        count = _int(params[0])
        newest = _block_tag(params[1]) if len(params) > 1 else "latest"
        percentiles = list(params[2]) if len(params) > 2 and params[2] else []
        history = self.tester.get_fee_history(count, newest, percentiles)
        return {
            "oldestBlock": hex(history["oldest_block"]),
            "baseFeePerGas": [hex(fee) for fee in history["base_fee_per_gas"]],
            "gasUsedRatio": list(history["gas_used_ratio"]),
            "reward": [[hex(tip) for tip in row] for row in history.get("reward") or []],
        }

    def _estimate_gas(self, params: list[Any]) -> str:
        tag = _state_tag(params[1]) if len(params) > 1 else "latest"
        try:
            return hex(self.tester.estimate_gas(_call_request(params[0]), tag))
        except Exception as error:
            raise RpcFault(3, f"execution reverted: {error}") from error

    def _call(self, params: list[Any]) -> str:
        tag = _state_tag(params[1]) if len(params) > 1 else "latest"
        try:
            return str(self.tester.call(_call_request(params[0]), tag))
        except Exception as error:
            raise RpcFault(3, f"execution reverted: {error}") from error

    def _get_logs(self, params: list[Any]) -> list[dict[str, Any]]:
        query = params[0] if params else {}
        if not isinstance(query, dict):
            raise invalid_params("the filter must be an object")
        if query.get("blockHash"):
            try:
                block = self.tester.get_block_by_hash(_hash(query["blockHash"]))
            except BlockNotFound:
                return []
            numbers: Iterable[int] = [int(block["number"])]
        else:
            head = self.head()
            low = self._height(query.get("fromBlock", "latest"), head)
            high = self._height(query.get("toBlock", "latest"), head)
            if high - low >= MAX_LOG_RANGE:
                raise RpcFault(-32005, f"query exceeds the limit of {MAX_LOG_RANGE} blocks")
            numbers = range(low, high + 1)
        addresses = _wanted_addresses(query.get("address"))
        topics = query.get("topics") or []
        found: list[dict[str, Any]] = []
        for number in numbers:
            for tx_hash in self.tester.get_block_by_number(number)["transactions"]:
                for entry in self.tester.get_transaction_receipt(tx_hash)["logs"]:
                    if _log_matches(entry, addresses, topics):
                        found.append(_format_log(entry))
        return found

    def _height(self, tag: Any, head: int) -> int:
        named = _block_tag(tag)
        if named == "earliest":
            return 0
        if isinstance(named, str):
            return head
        return min(named, head)

    def _send_raw_transaction(self, params: list[Any]) -> str:
        tx_hash = self.submit(_bytes(params[0]))
        if self.auto_mine:
            self.mine(1)
        return tx_hash

    def _evm_mine(self, params: list[Any]) -> str:
        """`evm_mine` / `anvil_mine` with a block count (ganache's `{"blocks": n}` too);
        answers the new head, where ganache answers "0x0"."""
        count: Any = params[0] if params and params[0] is not None else 1
        if isinstance(count, dict):
            count = count.get("blocks", 1)
        return hex(self.mine(_int(count)))

    def _devchain_reorg(self, params: list[Any]) -> str:
        return hex(self.reorg(_int(params[0]) if params else 1))

    def _evm_snapshot(self, params: list[Any]) -> str:
        snapshot_id = len(self._snapshots) + 1
        self._snapshots[snapshot_id] = _bytes(self.tester.get_block_by_number("latest")["hash"])
        return hex(snapshot_id)

    def _evm_revert(self, params: list[Any]) -> bool:
        block_hash = self._snapshots.get(_int(params[0]))
        if block_hash is None:
            return False
        number = int(self.tester.get_block_by_hash("0x" + block_hash.hex())["number"])
        if number < self.final_height:
            return False
        self.backend.revert_to_snapshot(block_hash)
        return True


# The request side: JSON-RPC values into what eth-tester takes.


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value, 16) if value.startswith("0x") else int(value)
    raise ValueError(f"not a quantity: {value!r}")


def _block_tag(value: Any) -> str | int:
    if isinstance(value, str) and value in BLOCK_TAGS:
        return "latest" if value in ("safe", "finalized") else value
    return _int(value)


def _state_tag(value: Any) -> str | int:
    """The state a call runs on: eth-tester has none for "pending", and what is pending
    is mined at once unless an interval is set, so the latest state stands in for it."""
    tag = _block_tag(value)
    return "latest" if tag == "pending" else tag


def _bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not 0x-prefixed hex data: {value!r}")
    return bytes.fromhex(value[2:])


def _hash(value: Any) -> str:
    if len(_bytes(value)) != 32:
        raise ValueError(f"not a 32-byte hash: {value!r}")
    return str(value).lower()


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not an address: {value!r}")
    return str(to_checksum_address(value))


def _call_request(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise ValueError("the call must be an object")
    call: dict[str, Any] = {"from": _address(request.get("from") or ZERO_ADDRESS)}
    if request.get("to"):
        call["to"] = _address(request["to"])
    data = request.get("input", request.get("data"))
    if data:
        call["data"] = data
    for wire, ours in (
        ("gas", "gas"),
        ("gasPrice", "gas_price"),
        ("maxFeePerGas", "max_fee_per_gas"),
        ("maxPriorityFeePerGas", "max_priority_fee_per_gas"),
        ("value", "value"),
        ("nonce", "nonce"),
    ):
        if request.get(wire) is not None:
            call[ours] = _int(request[wire])
    return call


def _wanted_addresses(value: Any) -> set[str] | None:
    if not value:
        return None
    values = value if isinstance(value, list) else [value]
    return {str(item).lower() for item in values}


def _log_matches(entry: dict[str, Any], addresses: set[str] | None, topics: list[Any]) -> bool:
    if addresses is not None and str(entry["address"]).lower() not in addresses:
        return False
    logged = [str(topic).lower() for topic in entry["topics"]]
    for position, wanted in enumerate(topics):
        if wanted is None:
            continue
        options = {str(t).lower() for t in (wanted if isinstance(wanted, list) else [wanted])}
        if position >= len(logged) or logged[position] not in options:
            return False
    return True


# The answer side: eth-tester's Python values into a public node's wire format.


def _camel(key: str) -> str:
    first, *rest = key.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _wire(value: Any) -> Any:
    if isinstance(value, str):
        # Public nodes answer addresses in lower case (eth-tester checksums them).
        return value.lower() if value.startswith("0x") else value
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_wire(item) for item in value]
    if isinstance(value, dict):
        return {_camel(str(key)): _wire(item) for key, item in value.items()}
    return str(value)


def _bloom(value: int) -> str:
    return "0x" + f"{value:0512x}"


def _format_block(block: dict[str, Any], full: bool) -> dict[str, Any]:
    answer = {key: value for key, value in block.items() if key != "transactions"}
    wired: dict[str, Any] = _wire(answer)
    wired["miner"] = wired.pop("coinbase")
    wired["logsBloom"] = _bloom(int(block["logs_bloom"]))
    wired["transactions"] = (
        [_format_transaction(tx) for tx in block["transactions"]]
        if full
        else [str(tx) for tx in block["transactions"]]
    )
    return wired


def _format_transaction(transaction: dict[str, Any]) -> dict[str, Any]:
    wired: dict[str, Any] = _wire(transaction)
    wired["input"] = wired.pop("data")
    if not wired.get("to"):
        wired["to"] = None  # a contract creation
    return wired


def _format_log(entry: dict[str, Any]) -> dict[str, Any]:
    wired: dict[str, Any] = _wire({key: value for key, value in entry.items() if key != "type"})
    wired["removed"] = False  # only canonical blocks are ever read
    return wired


def _format_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
    plain = {key: value for key, value in receipt.items() if key not in ("logs", "state_root")}
    wired: dict[str, Any] = _wire(plain)
    if not wired.get("to"):
        wired["to"] = None
    wired["logs"] = [_format_log(entry) for entry in receipt["logs"]]
    bloom = BloomFilter()
    for entry in receipt["logs"]:
        bloom.add(_bytes(entry["address"]))
        for topic in entry["topics"]:
            bloom.add(_bytes(topic))
    wired["logsBloom"] = _bloom(int(bloom))
    return wired
