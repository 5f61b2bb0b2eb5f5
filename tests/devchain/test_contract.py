"""The devchain's USDC: the committed artifact is what the pinned compiler makes of the
committed source, byte for byte, and the contract deployed on the devchain is that one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak

from scripts.devchain import USDC_ADDRESS, DevChain
from scripts.devchain.build_contract import (
    ARTIFACT,
    COMPILER_VERSION,
    committed,
    compile_artifact,
    main,
    render,
)
from scripts.devchain.chain import create_address
from scripts.devchain.wallets import deployer
from tests.support.wallets import new_wallet


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def view(chain: DevChain, signature: str, *args: tuple[str, Any]) -> bytes:
    data = selector(signature) + encode([t for t, _ in args], [v for _, v in args])
    answer = chain.rpc("eth_call", [{"to": chain.usdc_address, "data": "0x" + data.hex()}])
    return bytes.fromhex(answer[2:])


def test_the_committed_artifact_is_a_byte_for_byte_rebuild_of_the_source() -> None:
    vyper = pytest.importorskip("vyper")
    fresh = compile_artifact()

    assert vyper.__version__ == COMPILER_VERSION
    assert ARTIFACT.read_text() == render(fresh)
    assert committed()["bytecode"] == fresh["bytecode"]
    assert fresh["compiler"] == {
        "name": "vyper",
        "version": COMPILER_VERSION,
        "evm_version": "prague",
        "optimize": "gas",
    }
    assert main(["--check"]) == 0


def test_the_deployed_contract_is_the_committed_one_at_a_fixed_address(chain: DevChain) -> None:
    runtime = committed()["bytecode_runtime"]
    code = chain.rpc("eth_getCode", [chain.usdc_address, "latest"])

    assert chain.usdc_address == USDC_ADDRESS == create_address(deployer().address, 0)
    # Vyper appends the immutables (the minter) after the runtime code.
    assert code.startswith(runtime)
    assert code[len(runtime) :] == "00" * 12 + deployer().address[2:].lower()


def test_it_is_a_six_decimal_usdc_named_for_the_devchain(chain: DevChain) -> None:
    name = view(chain, "name()")
    symbol = view(chain, "symbol()")

    assert name[64 : 64 + 19] == b"USD Coin (devchain)"
    assert int.from_bytes(name[32:64], "big") == 19
    assert symbol[64:68] == b"USDC"
    assert int.from_bytes(view(chain, "decimals()"), "big") == 6
    abi_names = {entry.get("name") for entry in json.loads(ARTIFACT.read_text())["abi"]}
    assert {"transfer", "transferFrom", "approve", "mint", "balanceOf", "Transfer"} <= abi_names


def test_only_the_deployer_mints(chain: DevChain) -> None:
    stranger = new_wallet()
    chain.fund(stranger.address, usdc_minor=0)
    supply = int.from_bytes(view(chain, "totalSupply()"), "big")
    mint = selector("mint(address,uint256)") + encode(
        ["address", "uint256"], [stranger.address, 10**12]
    )

    tx_hash = chain._send(stranger, chain.usdc_address, mint, 120_000)
    receipt = chain.rpc("eth_getTransactionReceipt", [tx_hash])
    chain.fund(stranger.address, usdc_minor=7_000_000, eth_wei=0)

    assert receipt["status"] == "0x0"  # mined, and reverted
    assert receipt["logs"] == []
    assert chain.usdc_balance(stranger.address) == 7_000_000
    assert int.from_bytes(view(chain, "totalSupply()"), "big") == supply + 7_000_000


def test_a_transfer_moves_the_balance_and_logs_an_erc20_transfer(chain: DevChain) -> None:
    payer, payee = chain.demo_wallet(2), new_wallet()
    before = chain.usdc_balance(payer.address)

    tx_hash = chain.transfer_usdc(payer, payee.address, 1_234_567)
    receipt = chain.rpc("eth_getTransactionReceipt", [tx_hash])

    assert chain.usdc_balance(payer.address) == before - 1_234_567
    assert chain.usdc_balance(payee.address) == 1_234_567
    [entry] = receipt["logs"]
    assert entry["address"] == chain.usdc_address.lower()
    assert entry["topics"] == [
        "0x" + keccak(text="Transfer(address,address,uint256)").hex(),
        "0x" + "00" * 12 + payer.address[2:].lower(),
        "0x" + "00" * 12 + payee.address[2:].lower(),
    ]
    assert int(entry["data"], 16) == 1_234_567
