from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import HttpUrl

from runtime.settings import Settings
from tests.support.evm_node import TREASURY, USDC, EvmNodeServer


@pytest.fixture
def node() -> Iterator[EvmNodeServer]:
    with EvmNodeServer() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, node: EvmNodeServer) -> Settings:
    """The shared settings, pointed at the loopback node, with quick retries."""
    return settings.model_copy(
        update={
            "evm_rpc_url": HttpUrl(node.url),
            "treasury_address": TREASURY,
            "usdc_contract": USDC,
            "chain_id": node.chain.chain_id,
            "min_confirmations": 3,
            "evm_rpc_timeout": 0.3,
            "evm_rpc_attempts": 2,
            "evm_rpc_backoff": 0.01,
        }
    )
