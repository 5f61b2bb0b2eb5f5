from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import HttpUrl

from runtime.settings import Settings
from scripts.devchain import DevChain


@pytest.fixture
def chain() -> Iterator[DevChain]:
    """A fresh devchain serving JSON-RPC on loopback, one block per transaction."""
    with DevChain() as devchain:
        yield devchain


@pytest.fixture
def settings(settings: Settings, chain: DevChain) -> Settings:
    """The shared settings pointed at the devchain as `settings_env` says, with quick
    retries, three confirmations, and access tokens that outlive a pending timeout."""
    env = chain.settings_env()
    return settings.model_copy(
        update={
            "evm_rpc_url": HttpUrl(env["PUMPPARTY_EVM_RPC_URL"]),
            "chain_id": int(env["PUMPPARTY_CHAIN_ID"]),
            "usdc_contract": env["PUMPPARTY_USDC_CONTRACT"],
            "treasury_address": env["PUMPPARTY_TREASURY_ADDRESS"],
            "min_confirmations": 3,
            "evm_rpc_timeout": 2.0,
            "evm_rpc_attempts": 2,
            "evm_rpc_backoff": 0.01,
            "access_token_ttl": 72 * 3600,
        }
    )
