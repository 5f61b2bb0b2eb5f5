"""The EVM JSON-RPC node: what it says about a deposit transaction.

Calls are retried with backoff on timeouts, 5xx and malformed answers; when the node
stays unreachable the answer is `None`, and the purchase simply stays pending.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from aggregates.purchases import TRANSFER_TOPIC, DepositObservation, TransferLog

log = logging.getLogger(__name__)


class RpcError(Exception):
    """The node did not give a usable answer."""


class EvmNode:
    def __init__(
        self, url: str, *, timeout: float = 5.0, attempts: int = 3, backoff: float = 0.2
    ) -> None:
        self.client = httpx.Client(
            base_url=url, timeout=timeout, headers={"User-Agent": "pumpparty-ledger"}
        )
        self.attempts = attempts
        self.backoff = backoff
        self._next_id = 0

    def close(self) -> None:
        self.client.close()

    def observe_deposit(self, tx_hash: str) -> DepositObservation | None:
        try:
            return self._observe(tx_hash)
        except RpcError as error:
            log.warning("EVM node unavailable for %s: %s", tx_hash, error)
            return None

    def _observe(self, tx_hash: str) -> DepositObservation:
        chain_id = _quantity(self.call("eth_chainId", []))
        head = _quantity(self.call("eth_blockNumber", []))
        receipt = self.call("eth_getTransactionReceipt", [tx_hash])
        if receipt is None:
            known = self.call("eth_getTransactionByHash", [tx_hash]) is not None
            return DepositObservation(chain_id=chain_id, head_block=head, tx_known=known)
        if not isinstance(receipt, dict):
            raise RpcError("the receipt is not an object")
        block_number = _quantity(receipt.get("blockNumber"))
        # Read the block at that height again: a reorg shows as a different hash.
        block = self.call("eth_getBlockByNumber", [hex(block_number), False])
        if not isinstance(block, dict):
            raise RpcError("the receipt's block is missing")
        return DepositObservation(
            chain_id=chain_id,
            head_block=head,
            tx_known=True,
            receipt_status=_quantity(receipt.get("status")),
            block_number=block_number,
            block_hash=_text(receipt.get("blockHash")),
            canonical_block_hash=_text(block.get("hash")),
            block_time=_moment(block.get("timestamp")),
            # Every live ERC-20 Transfer log of the receipt: `assess` adds up those that pay.
            transfers=[t for t in (_transfer(entry) for entry in receipt.get("logs") or []) if t],
        )

    def call(self, method: str, params: list[Any]) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(initial=self.backoff, max=self.backoff * 8),
            retry=retry_if_exception_type(RpcError),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._call_once(method, params)
        raise AssertionError("unreachable")  # pragma: no cover

    def _call_once(self, method: str, params: list[Any]) -> Any:
        self._next_id += 1
        try:
            response = self.client.post(
                "", json={"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
            )
        except httpx.HTTPError as error:
            raise RpcError(f"{method}: {type(error).__name__}") from error
        if response.status_code >= 400:
            raise RpcError(f"{method}: HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as error:
            raise RpcError(f"{method}: not JSON") from error
        if not isinstance(body, dict) or "error" in body or "result" not in body:
            raise RpcError(f"{method}: no result ({str(body)[:200]})")
        return body["result"]


def _quantity(value: Any) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcError(f"not a hex quantity: {value!r}")
    try:
        return int(value, 16)
    except ValueError as error:
        raise RpcError(f"not a hex quantity: {value!r}") from error


def _moment(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(_quantity(value), UTC)
    except (ValueError, OverflowError, OSError) as error:
        raise RpcError(f"not a block timestamp: {value!r}") from error


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise RpcError(f"not a string: {value!r}")
    return value.lower()


def _transfer(entry: Any) -> TransferLog | None:
    """An ERC-20 Transfer log (three topics: ERC-721 shares the signature with four)."""
    if not isinstance(entry, dict) or entry.get("removed"):
        return None
    topics = entry.get("topics") or []
    if len(topics) != 3 or str(topics[0]).lower() != TRANSFER_TOPIC:
        return None
    return TransferLog(
        token=_text(entry.get("address")),
        sender="0x" + _text(topics[1])[-40:],
        recipient="0x" + _text(topics[2])[-40:],
        value_minor=_quantity(entry.get("data")),
        log_index=_quantity(entry.get("logIndex")),
    )
