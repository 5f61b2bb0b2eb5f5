"""Prop trading commands: open an account, submit an action, mark to market, snapshot
equity, and the admin controls (freeze, unfreeze, flatten, close); plus the two worker
jobs that mark and snapshot every live account on a cadence.

Prices come in through a `PriceSource` and the time through the command context; the
account records both in its events. Commands on one account take turns within a process
(a striped lock), so fifty concurrent actions queue instead of exhausting the retries;
across processes, optimistic concurrency still catches and retries any collision.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID, uuid4

from aggregates.application import Ledger, UnitOfWork, Written
from aggregates.base import CommandContext, derive_id
from aggregates.errors import DomainError
from aggregates.prop_accounts import (
    ActionRequest,
    ActionResult,
    PropAccount,
    PropAction,
    Valuation,
    fingerprint,
)
from aggregates.prop_rules import rule_set
from ingest.prices import Mark, PostgresPriceSource, PriceSource
from projections.prop_accounts import accounts_to_mark, accounts_to_snapshot
from runtime.clock import Clock, system_clock

if TYPE_CHECKING:
    from runtime.services import Services

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOCKS = [threading.Lock() for _ in range(64)]


@contextmanager
def account_turn(account_id: UUID) -> Iterator[None]:
    """Serialise commands on one account within this process (striped: memory stays flat)."""
    with _LOCKS[account_id.int % len(_LOCKS)]:
        yield


def account_id_for(key: str) -> UUID:
    """Whoever opens an account names it by a key (an audition, a race entry, an operator's
    idempotency key); the same key always means the same account."""
    return derive_id(PropAccount.__name__, key)


def latest_marks(prices: PriceSource, assets: Iterable[str]) -> dict[str, Mark | None]:
    return {asset: prices.latest_mark(asset) for asset in sorted(set(assets))}


def open_account_in(
    unit: UnitOfWork,
    *,
    key: str,
    owner_id: UUID,
    clone_id: UUID,
    clone_version_hash: str,
    purpose: str,
    starting_equity: Decimal,
    rule_set_name: str,
    rule_set_version: int | None = None,
) -> PropAccount:
    """Open (once per key) an account with the rule set in force pinned on it, inside a
    command that may do more in the same transaction (an audition consuming an
    entitlement, a race starting its entrants)."""
    request = fingerprint(
        {
            "owner_id": owner_id,
            "clone_id": clone_id,
            "clone_version_hash": clone_version_hash,
            "purpose": purpose,
            "starting_equity": starting_equity,
            "rule_set": rule_set_name,
            "rule_set_version": rule_set_version,
        }
    )
    rules = rule_set(rule_set_name, rule_set_version)

    def make(account_id: UUID) -> PropAccount:
        return PropAccount.open(
            account_id,
            owner_id=owner_id,
            clone_id=clone_id,
            clone_version_hash=clone_version_hash,
            purpose=purpose,
            starting_equity=starting_equity,
            rules=rules,
            request_fingerprint=request,
        )

    return unit.create_once(PropAccount, key, request, make)


def open_account(
    ledger: Ledger,
    context: CommandContext,
    *,
    key: str,
    owner_id: UUID,
    clone_id: UUID,
    clone_version_hash: str,
    purpose: str,
    starting_equity: Decimal,
    rule_set_name: str,
    rule_set_version: int | None = None,
) -> Written[UUID]:
    """Open an account as a command of its own (operators, tests)."""

    def decide(unit: UnitOfWork) -> UUID:
        return open_account_in(
            unit,
            key=key,
            owner_id=owner_id,
            clone_id=clone_id,
            clone_version_hash=clone_version_hash,
            purpose=purpose,
            starting_equity=starting_equity,
            rule_set_name=rule_set_name,
            rule_set_version=rule_set_version,
        ).id

    return ledger.execute(context, decide)


def submit_action(
    ledger: Ledger,
    context: CommandContext,
    prices: PriceSource,
    account_id: UUID,
    request: ActionRequest,
    *,
    max_mark_age: timedelta,
) -> Written[ActionResult]:
    """Gate and fill (or reject) one action; a retry with the same id gets the same result."""

    def decide(unit: UnitOfWork) -> ActionResult:
        def record(action_id: UUID) -> PropAction:
            account = unit.get(PropAccount, account_id)
            marks = latest_marks(prices, [request.asset, *account.positions])
            result = account.submit(request, marks, context.occurred_at, max_mark_age)
            return PropAction(
                id=action_id,
                account_id=account_id,
                client_action_id=request.client_action_id,
                request_fingerprint=request.fingerprint,
                result=result.to_state(),
            )

        key = f"{account_id}:{request.client_action_id}"
        return unit.create_once(PropAction, key, request.fingerprint, record).outcome

    with account_turn(account_id):
        return ledger.execute(context, decide)


def _on_account(
    ledger: Ledger,
    context: CommandContext,
    account_id: UUID,
    change: Callable[[PropAccount], T],
) -> Written[T]:
    def decide(unit: UnitOfWork) -> T:
        return change(unit.get(PropAccount, account_id))

    with account_turn(account_id):
        return ledger.execute(context, decide)


def mark_to_market(
    ledger: Ledger, context: CommandContext, prices: PriceSource, account_id: UUID
) -> Written[Valuation | None]:
    def change(account: PropAccount) -> Valuation | None:
        marks = latest_marks(prices, account.positions)
        return account.mark_to_market(marks, context.occurred_at)

    return _on_account(ledger, context, account_id, change)


def snapshot_equity(
    ledger: Ledger, context: CommandContext, account_id: UUID
) -> Written[Valuation | None]:
    return _on_account(ledger, context, account_id, PropAccount.snapshot_equity)


def freeze(ledger: Ledger, context: CommandContext, account_id: UUID, reason: str) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.freeze(reason)
        return account.status

    return _on_account(ledger, context, account_id, change)


def unfreeze(
    ledger: Ledger, context: CommandContext, account_id: UUID, reason: str
) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.unfreeze(reason)
        return account.status

    return _on_account(ledger, context, account_id, change)


def flatten(
    ledger: Ledger, context: CommandContext, prices: PriceSource, account_id: UUID, reason: str
) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.flatten(reason, latest_marks(prices, account.positions), context.occurred_at)
        return account.status

    return _on_account(ledger, context, account_id, change)


def close(
    ledger: Ledger, context: CommandContext, prices: PriceSource, account_id: UUID, reason: str
) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.close(reason, latest_marks(prices, account.positions), context.occurred_at)
        return account.status

    return _on_account(ledger, context, account_id, change)


# --- worker jobs ---------------------------------------------------------------------------


def job_context(job: str, clock: Clock) -> CommandContext:
    return CommandContext(
        actor=f"worker:{job}", occurred_at=clock(), correlation_id=f"{job}-{uuid4().hex}"
    )


def _each_account(
    job: str, account_ids: list[UUID], command: Callable[[UUID], Written[Valuation | None]]
) -> int:
    """Run `command` on each account; one account's refusal never stops the round."""
    done = 0
    for account_id in account_ids:
        try:
            if command(account_id).result is not None:
                done += 1
        except DomainError as error:
            log.warning("%s skipped prop account %s: %s", job, account_id, error)
    return done


def mark_live_accounts(services: Services, clock: Clock = system_clock) -> int:
    """Mark every account holding positions at the latest prices; how many were revalued."""
    datastore = services.projections.datastore
    prices = PostgresPriceSource(datastore)
    context = job_context("prop_mark_to_market", clock)
    return _each_account(
        "prop_mark_to_market",
        accounts_to_mark(datastore),
        lambda account_id: mark_to_market(services.ledger, context, prices, account_id),
    )


def snapshot_live_accounts(services: Services, clock: Clock = system_clock) -> int:
    """A point on the equity curve of every account that is not closed; how many."""
    context = job_context("prop_equity_snapshots", clock)
    return _each_account(
        "prop_equity_snapshots",
        accounts_to_snapshot(services.projections.datastore),
        lambda account_id: snapshot_equity(services.ledger, context, account_id),
    )
