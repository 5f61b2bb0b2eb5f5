"""`DevChain`: the devchain as a Python object (what `pumpparty devchain` and the demo run).

At construction the chain has its genesis (ETH for the deployer and the demo wallets) and
one block more: USDC deployed by the fixed deployer at nonce 0, so at a fixed address, and
minted to the demo wallets. `start` serves it over JSON-RPC on loopback; every transaction
after that, this object's own too, goes through the same `eth_sendRawTransaction`."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import rlp
from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from scripts.devchain.node import Node
from scripts.devchain.server import RpcServer
from scripts.devchain.wallets import (
    CUSTODIAN_INDEX,
    DEMO_WALLETS,
    TREASURY_INDEX,
    demo_wallet,
    deployer,
)

ARTIFACT = Path(__file__).resolve().parent / "contracts" / "USDC.json"
USDC_UNIT = 10**6
ETH = 10**18
DEPLOYER_ETH = 1_000_000 * ETH
WALLET_ETH = 1_000 * ETH
# The treasury pays withdrawals (custody signs with its key), so it starts rich.
TREASURY_USDC = 1_000_000 * USDC_UNIT
CUSTODIAN_USDC = 100_000 * USDC_UNIT
USER_USDC = 10_000 * USDC_UNIT
TRANSFER_GAS = 120_000
ETH_TRANSFER_GAS = 21_000
DEPLOY_GAS = 3_000_000
TRANSFER_SELECTOR = keccak(text="transfer(address,uint256)")[:4]
MINT_SELECTOR = keccak(text="mint(address,uint256)")[:4]
BALANCE_OF_SELECTOR = keccak(text="balanceOf(address)")[:4]


def create_address(sender: str, nonce: int) -> str:
    """Where a contract deployed by `sender` at `nonce` lands (keccak of rlp([sender, nonce]))."""
    encoded = rlp.encode([bytes.fromhex(sender.removeprefix("0x")), nonce])
    return str(to_checksum_address(keccak(encoded)[12:]))


USDC_ADDRESS = create_address(deployer().address, 0)
"""The devchain's USDC: the same on every devchain (the deployer's nonce 0)."""


def starting_usdc(index: int) -> int:
    if index == TREASURY_INDEX:
        return TREASURY_USDC
    if index == CUSTODIAN_INDEX:
        return CUSTODIAN_USDC
    return USER_USDC


class DevChain:
    def __init__(self, *, chain_id: int = 31337, block_interval: float | None = None) -> None:
        if block_interval is not None and block_interval <= 0:
            raise ValueError(
                f"the block interval is a positive number of seconds: {block_interval}"
            )
        self.chain_id = chain_id
        self.block_interval = block_interval
        self.url = ""
        self.usdc_address = USDC_ADDRESS
        genesis: dict[str, int] = {deployer().address: DEPLOYER_ETH}
        genesis.update({demo_wallet(i).address: WALLET_ETH for i in range(DEMO_WALLETS)})
        self.node = Node(chain_id=chain_id, genesis_balances=genesis)
        self._server: RpcServer | None = None
        self._stop_mining = threading.Event()
        self._miner: threading.Thread | None = None
        self._set_up()

    def _set_up(self) -> None:
        """Block 1: the contract, then the demo wallets' USDC, all in one block."""
        bytecode = json.loads(ARTIFACT.read_text())["bytecode"]
        self.node.submit(self._signed(deployer(), None, bytes.fromhex(bytecode[2:]), DEPLOY_GAS))
        for index in range(DEMO_WALLETS):
            mint = MINT_SELECTOR + encode(
                ["address", "uint256"], [demo_wallet(index).address, starting_usdc(index)]
            )
            self.node.submit(self._signed(deployer(), self.usdc_address, mint, TRANSFER_GAS))
        self.node.final_height = self.node.mine(1)
        code = self.rpc("eth_getCode", [self.usdc_address, "latest"])
        if code in ("0x", "", None):  # pragma: no cover - the committed artifact deploys
            raise RuntimeError("USDC did not deploy on the devchain")
        # From here every transaction goes through eth_sendRawTransaction like a wallet's.
        self.node.auto_mine = self.block_interval is None

    # Serving

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve JSON-RPC in a background thread (and mine on the interval, if any)."""
        if self._server is not None:
            return self.url
        server = RpcServer(self.node, host, port)
        server.start()
        self._server = server
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{server.port}"
        if self.block_interval is not None:
            self._stop_mining.clear()
            self._miner = threading.Thread(
                target=self._mine_on_interval, args=(self.block_interval,), daemon=True
            )
            self._miner.start()
        return self.url

    def stop(self) -> None:
        self._stop_mining.set()
        if self._miner is not None:
            self._miner.join()
            self._miner = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _mine_on_interval(self, interval: float) -> None:
        while not self._stop_mining.wait(interval):
            self.node.mine(1)

    def __enter__(self) -> DevChain:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Wallets and tokens

    def demo_wallet(self, index: int) -> LocalAccount:
        return demo_wallet(index)

    def fund(self, address: str, usdc_minor: int, eth_wei: int = ETH) -> None:
        """ETH for gas and USDC from the deployer (a transfer and a mint, sent like any)."""
        recipient = to_checksum_address(address)
        if eth_wei:
            self._send(deployer(), recipient, b"", ETH_TRANSFER_GAS, value=eth_wei)
        if usdc_minor:
            mint = MINT_SELECTOR + encode(["address", "uint256"], [recipient, usdc_minor])
            self._send(deployer(), self.usdc_address, mint, TRANSFER_GAS)

    def transfer_usdc(self, sender: LocalAccount, to: str, amount_minor: int) -> str:
        """A USDC transfer signed by `sender`, sent as a wallet would; the 0x tx hash."""
        data = TRANSFER_SELECTOR + encode(
            ["address", "uint256"], [to_checksum_address(to), amount_minor]
        )
        return self._send(sender, self.usdc_address, data, TRANSFER_GAS)

    def usdc_balance(self, address: str) -> int:
        data = BALANCE_OF_SELECTOR + encode(["address"], [to_checksum_address(address)])
        answer = self.rpc("eth_call", [{"to": self.usdc_address, "data": "0x" + data.hex()}])
        return int(answer, 16)

    # The chain

    def mine(self, blocks: int = 1) -> int:
        return int(self.rpc("evm_mine", [blocks]), 16)

    def reorg(self, depth: int) -> None:
        self.rpc("devchain_reorg", [depth])

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber", []), 16)

    def settings_env(self) -> dict[str, str]:
        """What a service using this chain is given (the PUMPPARTY_ environment)."""
        if not self.url:
            raise RuntimeError("start the devchain first: its URL is known once it serves")
        return {
            "PUMPPARTY_EVM_RPC_URL": self.url,
            "PUMPPARTY_CHAIN_ID": str(self.chain_id),
            "PUMPPARTY_USDC_CONTRACT": self.usdc_address,
            "PUMPPARTY_TREASURY_ADDRESS": demo_wallet(TREASURY_INDEX).address,
        }

    def rpc(self, method: str, params: list[Any]) -> Any:
        """A call on the chain's own JSON-RPC handler (what the HTTP server answers with)."""
        return self.node.handle(method, params)

    def _send(self, sender: LocalAccount, to: str, data: bytes, gas: int, *, value: int = 0) -> str:
        # The nonce and the send under one hold of the chain: two threads funding at
        # once would otherwise sign the same nonce.
        with self.node.lock:
            nonce = int(self.rpc("eth_getTransactionCount", [sender.address, "pending"]), 16)
            raw = self._signed(sender, to, data, gas, value=value, nonce=nonce)
            return str(self.rpc("eth_sendRawTransaction", ["0x" + raw.hex()]))

    def _signed(
        self,
        sender: LocalAccount,
        to: str | None,
        data: bytes,
        gas: int,
        *,
        value: int = 0,
        nonce: int | None = None,
    ) -> bytes:
        if nonce is None:
            nonce = int(self.rpc("eth_getTransactionCount", [sender.address, "pending"]), 16)
        tip = int(self.rpc("eth_maxPriorityFeePerGas", []), 16)
        base = int(self.rpc("eth_getBlockByNumber", ["pending", False])["baseFeePerGas"], 16)
        transaction: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "gas": gas,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": 2 * base + tip,
            "value": value,
            "data": data,
        }
        if to is not None:
            transaction["to"] = to_checksum_address(to)
        return bytes(sender.sign_transaction(transaction).raw_transaction)
