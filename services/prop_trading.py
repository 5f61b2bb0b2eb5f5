"""Prop trading commands: open an account, submit an action, mark to market, and the admin
controls (freeze, unfreeze, flatten, close); plus the worker job that marks every open
account holding positions on a cadence. Nothing here appends an event just because time
passed: an account with nothing at risk, a frozen or closed one, or marks that did not move
write nothing (the equity curve is a read model over fills and marks, see
`projections.prop_equity`).

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

from aggregates.base import CommandContext, derive_id
from aggregates.errors import DomainError
from aggregates.ports import Mark, PriceSource
from aggregates.prop_accounts import (
    ActionRequest,
    ActionResult,
    PropAccount,
    PropAction,
    Valuation,
    fingerprint,
)
from aggregates.prop_rules import rule_set
from runtime.clock import Clock
from services.eventlog import EventLog, UnitOfWork, Written
from services.jobs import job_context

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
    trading_ends_at: datetime | None = None,
) -> PropAccount:
    """Open (once per key) an account with the rule set in force pinned on it, inside a
    command that may do more in the same transaction (an audition consuming an
    entitlement, a race starting its entrants)."""
    terms: dict[str, object] = {
        "owner_id": owner_id,
        "clone_id": clone_id,
        "clone_version_hash": clone_version_hash,
        "purpose": purpose,
        "starting_equity": starting_equity,
        "rule_set": rule_set_name,
        "rule_set_version": rule_set_version,
    }
    if trading_ends_at is not None:  # absent otherwise: earlier accounts keep their prints
        terms["trading_ends_at"] = trading_ends_at.isoformat()
    request = fingerprint(terms)
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
            trading_ends_at=trading_ends_at,
        )

    return unit.create_once(PropAccount, key, request, make)


def open_account(
    event_log: EventLog,
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

    return event_log.execute(context, decide)


def submit_action(
    event_log: EventLog,
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
        return event_log.execute(context, decide)


def _on_account(
    event_log: EventLog,
    context: CommandContext,
    account_id: UUID,
    change: Callable[[PropAccount], T],
) -> Written[T]:
    def decide(unit: UnitOfWork) -> T:
        return change(unit.get(PropAccount, account_id))

    with account_turn(account_id):
        return event_log.execute(context, decide)


def mark_to_market(
    event_log: EventLog, context: CommandContext, prices: PriceSource, account_id: UUID
) -> Written[Valuation | None]:
    """Revalue an open account at the latest marks; None (and nothing written) when it is
    not open, holds nothing, or no held asset's price moved since its last mark."""

    def change(account: PropAccount) -> Valuation | None:
        marks = latest_marks(prices, account.positions)
        return account.mark_to_market(marks, context.occurred_at)

    return _on_account(event_log, context, account_id, change)


def freeze(
    event_log: EventLog, context: CommandContext, account_id: UUID, reason: str
) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.freeze(reason)
        return account.status

    return _on_account(event_log, context, account_id, change)


def unfreeze(
    event_log: EventLog, context: CommandContext, account_id: UUID, reason: str
) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.unfreeze(reason)
        return account.status

    return _on_account(event_log, context, account_id, change)


def flatten(
    event_log: EventLog, context: CommandContext, prices: PriceSource, account_id: UUID, reason: str
) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.flatten(reason, latest_marks(prices, account.positions), context.occurred_at)
        return account.status

    return _on_account(event_log, context, account_id, change)


def close(
    event_log: EventLog, context: CommandContext, prices: PriceSource, account_id: UUID, reason: str
) -> Written[str]:
    def change(account: PropAccount) -> str:
        account.close(reason, latest_marks(prices, account.positions), context.occurred_at)
        return account.status

    return _on_account(event_log, context, account_id, change)


# --- worker jobs ---------------------------------------------------------------------------


MARK_JOB = "prop_mark_to_market"


@dataclass(frozen=True)
class MarkToMarket:
    """Revalue every open account that holds positions at the latest marks; a round answers
    how many were revalued. Flat, frozen and closed accounts are not touched, and an account
    whose marks did not move writes nothing: the job never appends because time passed."""

    event_log: EventLog
    prices: PriceSource
    accounts: Callable[[], list[UUID]]
    clock: Clock

    def __call__(self) -> int:
        done = 0
        for account_id in self.accounts():
            context = job_context(MARK_JOB, self.clock, str(account_id))
            try:
                written = mark_to_market(self.event_log, context, self.prices, account_id)
            except DomainError as error:  # one account's refusal never stops the round
                log.warning("%s skipped prop account %s: %s", MARK_JOB, account_id, error)
                continue
            done += written.result is not None
        return done
