"""The double-entry ledger: transfers between accounts, in integer minor units (USDC: 6).

Each transfer is its own aggregate, its id derived from its cause, so it posts once.
Only user accounts are aggregates (a balance that must never go negative needs a version
to guard it); system accounts such as the treasury are never loaded, their balances are
the sum of their entries in the ledger projection. So concurrent deposits by different
users touch different aggregates and never queue on one hot treasury record.

Every transfer moves `amount` from one account to another: the receiver's balance goes
up, the sender's down, so the entries of the whole ledger always sum to zero. The
treasury is the source of money that arrived on-chain, so its balance is the negative of
what users and revenue hold.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import ConflictError, InvalidCommandError

TREASURY = "treasury"
AUDITION_REVENUE = "audition_revenue"
USDC_DECIMALS = 6


def user_account(user_id: UUID) -> str:
    return f"user:{user_id}"


def user_account_id(user_id: UUID) -> UUID:
    return derive_id("UserAccount", str(user_id))


def transfer_id(cause: str) -> UUID:
    return derive_id("Transfer", cause)


class InsufficientFundsError(ConflictError):
    code = "insufficient-funds"


class InvalidAmountError(InvalidCommandError):
    code = "invalid-amount"


class Transfer(DomainAggregate):
    class Posted(DomainAggregate.Created):
        cause: str
        debit_account: str
        credit_account: str
        amount_minor: int

    @event(Posted)
    def __init__(
        self, id: UUID, cause: str, debit_account: str, credit_account: str, amount_minor: int
    ) -> None:
        self.cause = cause
        self.debit_account = debit_account
        self.credit_account = credit_account
        self.amount_minor = amount_minor


class UserAccount(DomainAggregate):
    """A user's balance; it can never go below zero."""

    snapshot_interval = 200

    class Opened(DomainAggregate.Created):
        user_id: UUID

    class Credited(DomainAggregate.Event):
        transfer_id: UUID
        amount_minor: int

    class Debited(DomainAggregate.Event):
        transfer_id: UUID
        amount_minor: int

    @event(Opened)
    def __init__(self, id: UUID, user_id: UUID) -> None:
        self.user_id = user_id
        self.balance_minor = 0

    def credit(self, transfer: UUID, amount_minor: int) -> None:
        self._credited(transfer_id=transfer, amount_minor=amount_minor)

    def debit(self, transfer: UUID, amount_minor: int) -> None:
        if amount_minor > self.balance_minor:
            raise InsufficientFundsError(
                f"balance {self.balance_minor} is less than {amount_minor} (minor units)"
            )
        self._debited(transfer_id=transfer, amount_minor=amount_minor)

    @event(Credited)
    def _credited(self, transfer_id: UUID, amount_minor: int) -> None:
        self.balance_minor += amount_minor

    @event(Debited)
    def _debited(self, transfer_id: UUID, amount_minor: int) -> None:
        self.balance_minor -= amount_minor
