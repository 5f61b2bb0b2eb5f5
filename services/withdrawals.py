"""Withdrawals: a user asks for USDC from their balance to their wallet; admins authorize
large ones (maker-checker); custody leases an authorized one with a fencing token, sends
it on chain and reports the transaction (or cancels); the chain decides.

The amount is held by a pending transfer `user:<id>` -> `treasury:outgoing` from the
request on (`services.ledger.reserve_transfer`: it leaves the available balance at once,
and the guarded account refuses to overdraw). A rejection or a cancellation voids it; a
verified transaction posts it (`services.economy.settle_withdrawal`, the verifier and job
deposits use)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from aggregates.base import CommandContext, fingerprint
from aggregates.ledger import PendingTransfer, UserAccount, user_account, user_account_id
from aggregates.ports import DepositObserver
from aggregates.withdrawals import (
    TREASURY_OUTGOING,
    Withdrawal,
    WithdrawalStatus,
    transfer_cause,
)
from runtime.settings import Settings
from services.economy import DepositPolicy, check_unclaimed, confirm
from services.eventlog import EventLog, UnitOfWork, Written
from services.ledger import reserve_transfer, void_pending

CUSTODY_SCOPE = "payout:execute"
"""The service scope of custody, the process that holds the treasury key."""


@dataclass(frozen=True)
class WithdrawalPolicy:
    auto_approve_below_minor: int
    """Below this amount a withdrawal is authorized at once; from it an admin approves."""
    lease: timedelta
    """How long custody holds a leased withdrawal before another custodian may take it."""


def withdrawal_policy(settings: Settings) -> WithdrawalPolicy:
    return WithdrawalPolicy(
        auto_approve_below_minor=settings.withdrawal_auto_approve_minor,
        lease=timedelta(seconds=settings.withdrawal_lease_seconds),
    )


@dataclass(frozen=True)
class ChainTerms:
    """Where a withdrawal is paid from: the chain, the token and the treasury's address
    (pinned in the request, so a settings change never alters one on its way)."""

    chain_id: int
    token_contract: str
    treasury_address: str


@dataclass(frozen=True)
class WithdrawalState:
    """Where a withdrawal stands: what its commands answer."""

    withdrawal_id: UUID
    status: str
    reason: str | None
    wallet: str
    amount_minor: int
    required_approvals: int
    fencing_token: int
    lease_expires_at: datetime | None
    tx_hash: str | None
    tx_status: str | None
    token_contract: str
    chain_id: int

    @classmethod
    def of(cls, withdrawal: Withdrawal) -> WithdrawalState:
        return cls(
            withdrawal_id=withdrawal.id,
            status=withdrawal.status,
            reason=withdrawal.reason,
            wallet=withdrawal.wallet,
            amount_minor=withdrawal.amount_minor,
            required_approvals=withdrawal.required_approvals,
            fencing_token=withdrawal.fencing_token,
            lease_expires_at=withdrawal.lease_expires_at,
            tx_hash=withdrawal.tx_hash,
            tx_status=withdrawal.tx_status,
            token_contract=withdrawal.token_contract,
            chain_id=withdrawal.chain_id,
        )


def request_withdrawal(
    event_log: EventLog,
    context: CommandContext,
    *,
    user_id: UUID,
    key: str,
    wallet: str,
    amount_minor: int,
    terms: ChainTerms,
    policy: WithdrawalPolicy,
) -> Written[WithdrawalState]:
    """Hold the amount for a withdrawal to the user's wallet, once per key (the same key
    with another amount is a 409). More than the available balance is refused (409
    `insufficient-funds`): the user's account is saved with the hold, so of two requests
    racing for one balance the second sees what the first took."""
    request = fingerprint({"amount_minor": amount_minor, "wallet": wallet.lower()})

    def decide(unit: UnitOfWork) -> WithdrawalState:
        withdrawal = unit.create_once(
            Withdrawal,
            f"{user_id}:{key}",
            request,
            lambda id: Withdrawal.request(
                id=id,
                user_id=user_id,
                maker=context.actor,
                wallet=wallet,
                amount_minor=amount_minor,
                chain_id=terms.chain_id,
                token_contract=terms.token_contract,
                treasury_address=terms.treasury_address,
                auto_approve_below_minor=policy.auto_approve_below_minor,
                request_fingerprint=request,
            ),
        )
        if withdrawal.pending_events:
            reserve_transfer(
                unit,
                transfer_cause(withdrawal.id),
                user_account(user_id),
                TREASURY_OUTGOING,
                amount_minor,
            )
        else:
            with_its_hold(unit, withdrawal)
        return WithdrawalState.of(withdrawal)

    return event_log.execute(context, decide)


def with_its_hold(unit: UnitOfWork, withdrawal: Withdrawal) -> None:
    """A repeated command reads what the first one moved (the pending transfer and the
    user's account), so it answers with a position at least that of the first's writes."""
    unit.find(PendingTransfer, withdrawal.transfer_id)
    unit.find(UserAccount, user_account_id(withdrawal.user_id))


def approve_withdrawal(
    event_log: EventLog, context: CommandContext, withdrawal_id: UUID, reason: str
) -> Written[WithdrawalState]:
    """The acting admin authorizes it; never its maker (403 `maker-cannot-approve`)."""

    def decide(unit: UnitOfWork) -> WithdrawalState:
        withdrawal = unit.get(Withdrawal, withdrawal_id)
        withdrawal.approve(context.actor, reason)
        return WithdrawalState.of(withdrawal)

    return event_log.execute(context, decide)


def reject_withdrawal(
    event_log: EventLog, context: CommandContext, withdrawal_id: UUID, reason: str
) -> Written[WithdrawalState]:
    """The acting admin refuses it; the held amount is released in the same transaction."""

    def decide(unit: UnitOfWork) -> WithdrawalState:
        withdrawal = unit.get(Withdrawal, withdrawal_id)
        withdrawal.reject(reason)
        void_pending(unit, withdrawal.transfer_id, f"withdrawal rejected: {reason}")
        return WithdrawalState.of(withdrawal)

    return event_log.execute(context, decide)


def lease_withdrawal(
    event_log: EventLog,
    context: CommandContext,
    *,
    candidates: Sequence[UUID],
    policy: WithdrawalPolicy,
) -> Written[WithdrawalState | None]:
    """Lease the first of `candidates` (oldest first, from the read model) that is still
    free on the store to the acting custodian, with the next fencing token; None when none
    is. Two custodians racing for one both write it at the same version: the store lets
    one through, and the other's retry finds it taken and leases the next, or none."""

    def decide(unit: UnitOfWork) -> WithdrawalState | None:
        for withdrawal_id in candidates:
            withdrawal = unit.find(Withdrawal, withdrawal_id)
            if withdrawal is not None and withdrawal.leasable(context.occurred_at):
                withdrawal.lease(context.actor, context.occurred_at, policy.lease)
                return WithdrawalState.of(withdrawal)
        return None

    return event_log.execute(context, decide)


def report_executed(
    event_log: EventLog,
    context: CommandContext,
    node: DepositObserver,
    deposit_policy: DepositPolicy,
    *,
    withdrawal_id: UUID,
    fencing_token: int,
    tx_hash: str,
) -> Written[WithdrawalState]:
    """The lease holder reports the transaction it sent (a stale token: 409
    `stale-fencing-token`; a tx that already settled a payment: 409 `tx-already-claimed`),
    then the chain is asked at once, as the poller asks later (`services.economy.confirm`):
    answers the withdrawal as it stands after both."""
    tx_hash = tx_hash.lower()

    def decide(unit: UnitOfWork) -> WithdrawalState:
        withdrawal = unit.get(Withdrawal, withdrawal_id)
        if withdrawal.execute(fencing_token, tx_hash, context.occurred_at):
            check_unclaimed(unit, withdrawal.chain_id, withdrawal.id, tx_hash)
        else:
            with_its_hold(unit, withdrawal)
        return WithdrawalState.of(withdrawal)

    reported = event_log.execute(context, decide)
    if reported.result.status != WithdrawalStatus.EXECUTED:
        return reported
    checked = confirm(event_log, context, node, deposit_policy, withdrawal_id)
    after = event_log.read(Withdrawal, withdrawal_id)
    assert after is not None
    return Written(WithdrawalState.of(after), max(reported.position, checked.position))


def cancel_withdrawal(
    event_log: EventLog,
    context: CommandContext,
    *,
    withdrawal_id: UUID,
    fencing_token: int,
    reason: str,
) -> Written[WithdrawalState]:
    """The lease holder gives it up; the held amount is released in the same transaction.
    The same cancellation again answers as the first did."""

    def decide(unit: UnitOfWork) -> WithdrawalState:
        withdrawal = unit.get(Withdrawal, withdrawal_id)
        if withdrawal.cancel(fencing_token, reason):
            void_pending(unit, withdrawal.transfer_id, f"withdrawal cancelled: {reason}")
        else:
            with_its_hold(unit, withdrawal)
        return WithdrawalState.of(withdrawal)

    return event_log.execute(context, decide)
