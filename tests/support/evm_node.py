"""A real JSON-RPC server on loopback that answers like an EVM node (receipts, blocks, logs).

Tests set the chain's state (blocks, transactions, the head) and how the node behaves
(healthy, 500s, garbage, slow), then the service talks to it over HTTP as to any node.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aggregates.purchases import TRANSFER_TOPIC

CHAIN_ID = 8453
USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
TREASURY = "0x1111111111111111111111111111111111111111"


def topic_address(address: str) -> str:
    return "0x" + "0" * 24 + address.lower().removeprefix("0x")


def block_hash(number: int, fork: int = 0) -> str:
    return "0x" + hashlib.sha256(f"{number}:{fork}".encode()).hexdigest()


@dataclass
class Chain:
    chain_id: int = CHAIN_ID
    head: int = 1000
    forks: dict[int, int] = field(default_factory=dict)  # block number -> fork counter
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    # Two-second blocks from here: block 900 is at noon, when the tests' clock stands, so
    # what tests pay near the head (block 1000) is mined a few minutes after their quote.
    genesis: datetime = datetime(2026, 11, 25, 11, 30, tzinfo=UTC)
    mode: str = "ok"  # ok | http500 | garbage | slow | error

    def block(self, number: int) -> dict[str, Any] | None:
        if number > self.head:
            return None
        return {
            "number": hex(number),
            "hash": block_hash(number, self.forks.get(number, 0)),
            "timestamp": hex(int(self.genesis.timestamp()) + 2 * number),
            "transactions": [],
        }

    def block_time(self, number: int) -> datetime:
        return datetime.fromtimestamp(int(self.genesis.timestamp()) + 2 * number, UTC)

    def pay(
        self,
        tx_hash: str,
        *,
        sender: str,
        value_minor: int,
        block: int,
        recipient: str = TREASURY,
        token: str = USDC,
        status: int = 1,
    ) -> None:
        """A mined USDC transfer, as a real receipt with its Transfer log."""
        self.receipts[tx_hash.lower()] = {
            "transactionHash": tx_hash.lower(),
            "transactionIndex": "0x0",
            "blockNumber": hex(block),
            "blockHash": block_hash(block, self.forks.get(block, 0)),
            "from": sender.lower(),
            "to": token.lower(),
            "cumulativeGasUsed": "0x1d4c0",
            "gasUsed": "0xb411",
            "effectiveGasPrice": "0x3b9aca00",
            "contractAddress": None,
            "logsBloom": "0x" + "0" * 512,
            "type": "0x2",
            "status": hex(status),
            "logs": [],
        }
        self.add_transfer(
            tx_hash, sender=sender, value_minor=value_minor, recipient=recipient, token=token
        )

    def add_transfer(
        self,
        tx_hash: str,
        *,
        sender: str,
        value_minor: int,
        recipient: str = TREASURY,
        token: str = USDC,
    ) -> None:
        """Another ERC-20 Transfer log in a paid transaction's receipt (the next log index;
        the first is 3, as if the transaction logged other things first)."""
        receipt = self.receipts[tx_hash.lower()]
        logs = receipt["logs"]
        logs.append(
            {
                "address": token.lower(),
                "topics": [TRANSFER_TOPIC, topic_address(sender), topic_address(recipient)],
                "data": "0x" + f"{value_minor:064x}",
                "blockNumber": receipt["blockNumber"],
                "blockHash": receipt["blockHash"],
                "transactionHash": tx_hash.lower(),
                "transactionIndex": "0x0",
                "logIndex": hex(3 + len(logs)),
                "removed": False,
            }
        )

    def reorg(self, number: int) -> None:
        """Replace the block at `number`: receipts in the old one no longer match it."""
        self.forks[number] = self.forks.get(number, 0) + 1

    def answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getTransactionReceipt":
            return self.receipts.get(str(params[0]).lower())
        if method == "eth_getTransactionByHash":
            tx = str(params[0]).lower()
            known = tx in self.receipts or tx in self.pending
            return {"hash": tx, "blockNumber": None} if known else None
        if method == "eth_getBlockByNumber":
            return self.block(int(params[0], 16))
        raise KeyError(method)


class EvmNodeServer:
    def __init__(self, chain: Chain | None = None) -> None:
        self.chain = chain or Chain()
        self.calls: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length))
                server.calls.append(request["method"])
                mode = server.chain.mode
                if mode == "slow":
                    time.sleep(0.5)
                if mode == "http500":
                    self._send(500, b"internal error")
                    return
                if mode == "garbage":
                    self._send(200, b'{"jsonrpc": "2.0", "id": 1, "resu')
                    return
                if mode == "error":
                    body = {
                        "jsonrpc": "2.0",
                        "id": request["id"],
                        "error": {"code": -32000, "message": "busy"},
                    }
                else:
                    result = server.chain.answer(request["method"], request["params"])
                    body = {"jsonrpc": "2.0", "id": request["id"], "result": result}
                self._send(200, json.dumps(body).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> EvmNodeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
