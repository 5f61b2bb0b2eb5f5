"""`pumpparty devchain`: a real EVM (eth-tester with py-evm) on loopback, with a real ERC-20
"USDC" (6 decimals; Vyper source and compiled artifact in contracts/), funded demo wallets,
blocks mined on demand or on an interval, and a reorg for tests.

A development tool: nothing in the domain imports it. The service talks to it over HTTP
JSON-RPC exactly as to a public node (`DevChain.settings_env`).

`from scripts.devchain import DevChain` is the interface (scripts/devchain/chain.py). It
loads on first use: py-evm takes about a second to import, and `pumpparty` registers the
devchain's commands on every run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scripts.devchain.chain import USDC_ADDRESS, DevChain
    from scripts.devchain.wallets import DEMO_MNEMONIC

__all__ = ["DEMO_MNEMONIC", "USDC_ADDRESS", "DevChain"]


def __getattr__(name: str) -> Any:
    if name in ("DevChain", "USDC_ADDRESS"):
        from scripts.devchain import chain

        return getattr(chain, name)
    if name == "DEMO_MNEMONIC":
        from scripts.devchain import wallets

        return wallets.DEMO_MNEMONIC
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
