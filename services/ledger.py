"""The money ledger's command steps, inside whatever command moves the money (a purchase
settling, a ticket, a payout, a withdrawal): post a transfer between two accounts, or
reserve one (two-phase) and later post or void it; each once per cause."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from aggregates.ledger import (
    InvalidAmountError,
    PendingTransfer,
    Transfer,
    UserAccount,
    pending_transfer_id,
    transfer_id,
    user_account_id,
)
from services.eventlog import UnitOfWork


def post_transfer(
    unit: UnitOfWork, cause: str, debit_account: str, credit_account: str, amount_minor: int
) -> UUID:
    """Move money from `debit_account` to `credit_account` once per cause, in this unit.

    User accounts are loaded (or opened) and guarded; a second post of the same cause
    changes nothing.
    """
    check_terms(debit_account, credit_account, amount_minor)
    posted_id = transfer_id(cause)
    if unit.find(Transfer, posted_id) is not None:
        return posted_id
    unit.add(
        Transfer(
            id=posted_id,
            cause=cause,
            debit_account=debit_account,
            credit_account=credit_account,
            amount_minor=amount_minor,
        )
    )
    if (debit := _user_of(debit_account)) is not None:
        _account(unit, debit).debit(posted_id, amount_minor)
    if (credit := _user_of(credit_account)) is not None:
        _account(unit, credit).credit(posted_id, amount_minor)
    return posted_id


def _user_of(account: str) -> UUID | None:
    return UUID(account.removeprefix("user:")) if account.startswith("user:") else None


def _account(unit: UnitOfWork, user_id: UUID) -> UserAccount:
    found = unit.find(UserAccount, user_account_id(user_id))
    return found or unit.add(UserAccount(id=user_account_id(user_id), user_id=user_id))


def check_terms(debit_account: str, credit_account: str, amount_minor: int) -> None:
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise InvalidAmountError("a transfer moves a positive whole number of minor units")
    if debit_account == credit_account:
        raise InvalidAmountError("a transfer needs two different accounts")


def reserve_transfer(
    unit: UnitOfWork,
    cause: str,
    debit_account: str,
    credit_account: str,
    amount_minor: int,
    expires_at: datetime | None = None,
) -> UUID:
    """Hold `amount_minor` for a transfer, once per cause: it leaves the sender's available
    balance now (a user's is guarded), and moves only when posted."""
    check_terms(debit_account, credit_account, amount_minor)
    pending_id = pending_transfer_id(cause)
    if unit.find(PendingTransfer, pending_id) is not None:
        return pending_id
    unit.add(
        PendingTransfer(
            id=pending_id,
            cause=cause,
            debit_account=debit_account,
            credit_account=credit_account,
            amount_minor=amount_minor,
            expires_at=expires_at,
        )
    )
    if (debit := _user_of(debit_account)) is not None:
        _account(unit, debit).reserve(pending_id, amount_minor)
    return pending_id


def post_pending(unit: UnitOfWork, pending_id: UUID) -> None:
    """Move the held amount in full; a resolved transfer refuses (409)."""
    transfer = unit.get(PendingTransfer, pending_id)
    transfer.post()
    if (debit := _user_of(transfer.debit_account)) is not None:
        _account(unit, debit).post_reservation(pending_id, transfer.amount_minor)
    if (credit := _user_of(transfer.credit_account)) is not None:
        _account(unit, credit).credit(pending_id, transfer.amount_minor)


def void_pending(unit: UnitOfWork, pending_id: UUID, reason: str) -> None:
    """Release the held amount; a resolved transfer refuses (409)."""
    transfer = unit.get(PendingTransfer, pending_id)
    transfer.void(reason)
    if (debit := _user_of(transfer.debit_account)) is not None:
        _account(unit, debit).release(pending_id, transfer.amount_minor)
