"""The devchain's demo wallets: deterministic keys from a public demo mnemonic.

DEMO ONLY. The mnemonic below is the well-known development phrase that every local EVM
tool ships: anyone can derive these keys. Never send anything of value to these addresses
on a public chain, and never point a real deployment's treasury at one of them."""

from __future__ import annotations

from functools import cache

from eth_account import Account
from eth_account.signers.local import LocalAccount

DEMO_MNEMONIC = "test test test test test test test test test test test junk"
"""PUBLIC, DEMO ONLY: the standard development mnemonic (see the module docstring)."""

TREASURY_INDEX = 0
CUSTODIAN_INDEX = 1
FIRST_USER_INDEX = 2
DEMO_WALLETS = 10
"""How many demo wallets the devchain funds at genesis (indexes 0..9)."""

# The deployer sits on another BIP-44 account of the same phrase, so none of the demo
# wallets' nonces moves the contract's deterministic address.
DEPLOYER_PATH = "m/44'/60'/1'/0/0"

Account.enable_unaudited_hdwallet_features()


@cache
def demo_wallet(index: int) -> LocalAccount:
    """Index 0 is the treasury, 1 the custodian's hot wallet, 2 and up are users."""
    if index < 0:
        raise ValueError(f"a demo wallet index is 0 or more, not {index}")
    return Account.from_mnemonic(DEMO_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


@cache
def deployer() -> LocalAccount:
    """The key that deploys USDC at nonce 0 and alone may mint it."""
    return Account.from_mnemonic(DEMO_MNEMONIC, account_path=DEPLOYER_PATH)
