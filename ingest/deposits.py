"""Deposit confirmation: ask the node about a purchase's transaction, then settle it.

The same path serves a new purchase (right after it is recorded) and the poller job that
re-checks pending ones; the node's answer is fetched here, outside any transaction, and
handed to the command.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from aggregates.application import Ledger, Written
from aggregates.base import CommandContext
from aggregates.economy import DepositPolicy, PurchaseState, settle_purchase, submit_purchase
from ingest.evm import EvmNode
from projections.purchases import pending_purchases
from runtime.clock import Clock, system_clock
from runtime.services import Services
from runtime.settings import Settings

log = logging.getLogger(__name__)

POLLER = "worker:deposit-confirmations"


def deposit_policy(settings: Settings) -> DepositPolicy:
    return DepositPolicy(
        min_confirmations=settings.min_confirmations,
        pending_timeout=timedelta(seconds=settings.deposit_pending_timeout),
    )


def evm_node(settings: Settings) -> EvmNode:
    return EvmNode(
        str(settings.evm_rpc_url),
        timeout=settings.evm_rpc_timeout,
        attempts=settings.evm_rpc_attempts,
        backoff=settings.evm_rpc_backoff,
    )


def confirm(
    ledger: Ledger, context: CommandContext, node: EvmNode, policy: DepositPolicy, purchase_id: UUID
) -> Written[PurchaseState]:
    tx_hash: str = ledger.repository.get(purchase_id).tx_hash
    return settle_purchase(
        ledger,
        context,
        purchase_id=purchase_id,
        observation=node.observe_deposit(tx_hash),
        policy=policy,
    )


def purchase(
    ledger: Ledger,
    context: CommandContext,
    node: EvmNode,
    policy: DepositPolicy,
    *,
    user_id: UUID,
    key: str,
    quote_id: UUID,
    tx_hash: str,
) -> Written[PurchaseState]:
    """Record the purchase, then, while it is pending, ask the chain about it at once."""
    written = submit_purchase(
        ledger, context, user_id=user_id, key=key, quote_id=quote_id, tx_hash=tx_hash
    )
    if written.result.status != "pending_confirmations":
        return written
    checked = confirm(ledger, context, node, policy, written.result.purchase_id)
    return Written(checked.result, max(written.position, checked.position))


def confirm_pending(services: Services, node: EvmNode, clock: Clock) -> int:
    """The poller job: re-check every pending purchase; returns how many were settled."""
    policy = deposit_policy(services.settings)
    settled = 0
    for purchase_id in pending_purchases(services.projections.datastore):
        context = CommandContext(
            actor=POLLER, occurred_at=clock(), correlation_id=f"poll-{purchase_id}"
        )
        try:
            state = confirm(services.ledger, context, node, policy, purchase_id).result
        except Exception:
            # One purchase that cannot be settled must not hold up the others.
            log.exception("could not settle purchase %s", purchase_id)
            continue
        settled += state.status != "pending_confirmations"
    return settled


def confirm_deposits(services: Services) -> None:
    """The scheduled job (one node client per run)."""
    node = evm_node(services.settings)
    try:
        confirm_pending(services, node, system_clock)
    finally:
        node.close()
