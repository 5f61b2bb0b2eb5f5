"""The money ledger's one command step: post a transfer between two accounts, once per cause,
inside whatever command moves the money (a purchase settling, a ticket, a payout)."""

from __future__ import annotations

from uuid import UUID

from aggregates.ledger import (
    InvalidAmountError,
    Transfer,
    UserAccount,
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
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise InvalidAmountError("a transfer moves a positive whole number of minor units")
    if debit_account == credit_account:
        raise InvalidAmountError("a transfer needs two different accounts")
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
