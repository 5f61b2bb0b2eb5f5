"""The flows' loopback EVM node and short audition rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import HttpUrl

from runtime.settings import Settings
from tests.support.auditions import short_rules
from tests.support.evm_node import TREASURY, USDC, EvmNodeServer


@pytest.fixture
def node() -> Iterator[EvmNodeServer]:
    with EvmNodeServer() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, node: EvmNodeServer) -> Settings:
    """Pointed at the loopback node; an audition of two days, 5% target, two fills on two UTC
    days, and the `audition` rule set's loss limits (5% a day, 10% from the peak)."""
    return short_rules(
        settings,
        evm_rpc_url=HttpUrl(node.url),
        treasury_address=TREASURY,
        usdc_contract=USDC,
        chain_id=node.chain.chain_id,
        min_confirmations=3,
    )
