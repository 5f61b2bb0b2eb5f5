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

A transfer is posted at once, or two-phase: `Reserved` (pending) holds the amount out of
the sender's *available* balance (not its posted one), then resolves exactly once:
posted in full, or voided (released). A user can never spend reserved money. A pending
transfer may carry an expiry, which only a command acting on its own time applies.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
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


def pending_transfer_id(cause: str) -> UUID:
    return derive_id("PendingTransfer", cause)


class InsufficientFundsError(ConflictError):
    code = "insufficient-funds"


class TransferAlreadyResolvedError(ConflictError):
    code = "transfer-already-resolved"


class TransferStatus(StrEnum):
    POSTED = "posted"
    PENDING = "pending"
    VOIDED = "voided"


class InvalidAmountError(InvalidCommandError):
    code = "invalid-amount"


class Transfer(DomainAggregate):
    """A transfer posted at once."""

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


class PendingTransfer(DomainAggregate):
    """A two-phase transfer: reserved, then posted in full or voided, exactly once."""

    class Reserved(DomainAggregate.Created):
        cause: str
        debit_account: str
        credit_account: str
        amount_minor: int
        expires_at: datetime | None

    class Posted(DomainAggregate.Event):
        pass

    class Voided(DomainAggregate.Event):
        reason: str

    @event(Reserved)
    def __init__(
        self,
        id: UUID,
        cause: str,
        debit_account: str,
        credit_account: str,
        amount_minor: int,
        expires_at: datetime | None,
    ) -> None:
        self.cause = cause
        self.debit_account = debit_account
        self.credit_account = credit_account
        self.amount_minor = amount_minor
        self.expires_at = expires_at
        self.status: str = TransferStatus.PENDING.value

    @property
    def pending(self) -> bool:
        return self.status == TransferStatus.PENDING

    def expired(self, now: datetime) -> bool:
        return self.pending and self.expires_at is not None and now >= self.expires_at

    def post(self) -> None:
        self._check_pending()
        self._posted()

    def void(self, reason: str) -> None:
        self._check_pending()
        self._voided(reason=reason)

    def _check_pending(self) -> None:
        if not self.pending:
            raise TransferAlreadyResolvedError(f"the transfer is {self.status}, not pending")

    @event(Posted)
    def _posted(self) -> None:
        self.status = TransferStatus.POSTED.value

    @event(Voided)
    def _voided(self, reason: str) -> None:
        self.status = TransferStatus.VOIDED.value


class UserAccount(DomainAggregate):
    """A user's balance; what is available (posted less reserved) never goes below zero."""

    snapshot_interval = 50  # a busy buyer replays at most 49 events per command
    reserved_minor: int = 0
    """Held by pending transfers out of this account (a class default for old snapshots)."""

    class Opened(DomainAggregate.Created):
        user_id: UUID

    class Credited(DomainAggregate.Event):
        transfer_id: UUID
        amount_minor: int

    class Debited(DomainAggregate.Event):
        transfer_id: UUID
        amount_minor: int

    class Reserved(DomainAggregate.Event):
        transfer_id: UUID
        amount_minor: int

    class ReservationPosted(DomainAggregate.Event):
        transfer_id: UUID
        amount_minor: int

    class ReservationReleased(DomainAggregate.Event):
        transfer_id: UUID
        amount_minor: int

    @event(Opened)
    def __init__(self, id: UUID, user_id: UUID) -> None:
        self.user_id = user_id
        self.balance_minor = 0
        self.reserved_minor = 0

    @property
    def available_minor(self) -> int:
        return self.balance_minor - self.reserved_minor

    def credit(self, transfer: UUID, amount_minor: int) -> None:
        self._credited(transfer_id=transfer, amount_minor=amount_minor)

    def debit(self, transfer: UUID, amount_minor: int) -> None:
        self._check_available(amount_minor)
        self._debited(transfer_id=transfer, amount_minor=amount_minor)

    def reserve(self, transfer: UUID, amount_minor: int) -> None:
        self._check_available(amount_minor)
        self._reserved(transfer_id=transfer, amount_minor=amount_minor)

    def post_reservation(self, transfer: UUID, amount_minor: int) -> None:
        self._reservation_posted(transfer_id=transfer, amount_minor=amount_minor)

    def release(self, transfer: UUID, amount_minor: int) -> None:
        self._reservation_released(transfer_id=transfer, amount_minor=amount_minor)

    def _check_available(self, amount_minor: int) -> None:
        if amount_minor > self.available_minor:
            raise InsufficientFundsError(
                f"available {self.available_minor} is less than {amount_minor} (minor units)"
            )

    @event(Credited)
    def _credited(self, transfer_id: UUID, amount_minor: int) -> None:
        self.balance_minor += amount_minor

    @event(Debited)
    def _debited(self, transfer_id: UUID, amount_minor: int) -> None:
        self.balance_minor -= amount_minor

    @event(Reserved)
    def _reserved(self, transfer_id: UUID, amount_minor: int) -> None:
        self.reserved_minor += amount_minor

    @event(ReservationPosted)
    def _reservation_posted(self, transfer_id: UUID, amount_minor: int) -> None:
        self.balance_minor -= amount_minor
        self.reserved_minor -= amount_minor

    @event(ReservationReleased)
    def _reservation_released(self, transfer_id: UUID, amount_minor: int) -> None:
        self.reserved_minor -= amount_minor
