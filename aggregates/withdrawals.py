"""Withdrawals: USDC from a user's ledger balance to their wallet, paid on-chain by custody.

A request holds the amount in a pending transfer `user:<id>` -> `treasury:outgoing` (it
leaves the available balance at once; the account is guarded, so it is never overdrawn).
Below the auto-approval amount the withdrawal is authorized at once; from it, an admin
other than its maker (the requesting user) approves it, or rejects it (the transfer is
voided).

Custody (a service client holding the treasury key) leases an authorized withdrawal. Each
lease carries a fencing token one higher than the withdrawal's last and lasts until
`lease_expires_at` (the command's time plus the lease's length): an expired lease may be
taken again, so a crashed custodian's withdrawal is not stuck, and only the latest token
may report. The holder reports the transaction it sent (`execute`) or cancels (the
transfer is voided). A reported transaction is verified on chain as a deposit is, reversed
(`aggregates.purchases.assess` on `terms`: from the treasury to the wallet, exactly the
amount): verified, the withdrawal is posted (so is its transfer); rejected (the wrong
wallet or amount, reorged out, failed...), it is authorized again, for a new lease with a
new token.

    awaiting_approval -> authorized <-> leased -> executed -> posted
           |                              |         |
        rejected                      cancelled   authorized (the tx was rejected)

The aggregate never reads the clock: times are arguments.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate
from aggregates.errors import ConflictError
from aggregates.ledger import pending_transfer_id
from aggregates.payouts import MakerCannotApproveError
from aggregates.purchases import Assessment, PurchaseStatus, TransferTerms

TREASURY_OUTGOING = "treasury:outgoing"
"""The ledger account withdrawals post to: what left the treasury on chain."""


class WithdrawalStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    AUTHORIZED = "authorized"
    LEASED = "leased"
    EXECUTED = "executed"
    """A transaction is reported and being verified on chain."""
    POSTED = "posted"
    REJECTED = "rejected"
    """An admin refused it."""
    CANCELLED = "cancelled"
    """Custody gave it up."""


def transfer_cause(withdrawal_id: UUID) -> str:
    """The cause of a withdrawal's pending transfer (its id is derived from it)."""
    return f"withdrawal:{withdrawal_id}"


def withdrawal_transfer_id(withdrawal_id: UUID) -> UUID:
    """The pending transfer that holds a withdrawal's amount."""
    return pending_transfer_id(transfer_cause(withdrawal_id))


class WithdrawalNotAwaitingApprovalError(ConflictError):
    code = "withdrawal-not-awaiting-approval"


class WithdrawalNotLeasableError(ConflictError):
    code = "withdrawal-not-leasable"


class StaleFencingTokenError(ConflictError):
    code = "stale-fencing-token"


class WithdrawalNotLeasedError(ConflictError):
    code = "withdrawal-not-leased"


class Withdrawal(DomainAggregate):
    class Requested(DomainAggregate.Created):
        user_id: UUID
        maker: str
        wallet: str
        amount_minor: int
        chain_id: int
        token_contract: str
        treasury_address: str
        required_approvals: int
        request_fingerprint: str

    class Approved(DomainAggregate.Event):
        approver: str
        reason: str

    class Rejected(DomainAggregate.Event):
        reason: str

    class Leased(DomainAggregate.Event):
        custodian: str
        fencing_token: int
        lease_expires_at: datetime

    class Executed(DomainAggregate.Event):
        fencing_token: int
        tx_hash: str
        reported_at: datetime

    class StillPending(DomainAggregate.Event):
        reason: str
        confirmations: int

    class Verified(DomainAggregate.Event):
        tx_hash: str
        block_number: int
        block_hash: str
        log_index: int
        paid_minor: int
        confirmations: int

    class TxRejected(DomainAggregate.Event):
        tx_hash: str
        reason: str
        confirmations: int

    class Cancelled(DomainAggregate.Event):
        fencing_token: int
        reason: str

    @event(Requested)
    def __init__(
        self,
        id: UUID,
        user_id: UUID,
        maker: str,
        wallet: str,
        amount_minor: int,
        chain_id: int,
        token_contract: str,
        treasury_address: str,
        required_approvals: int,
        request_fingerprint: str,
    ) -> None:
        self.user_id = user_id
        self.maker = maker
        self.wallet = wallet
        self.amount_minor = amount_minor
        self.chain_id = chain_id
        self.token_contract = token_contract
        self.treasury_address = treasury_address
        self.required_approvals = required_approvals
        self.request_fingerprint = request_fingerprint
        self.status: str = (
            WithdrawalStatus.AUTHORIZED.value
            if required_approvals == 0
            else WithdrawalStatus.AWAITING_APPROVAL.value
        )
        self.reason: str | None = None
        self.fencing_token = 0
        self.custodian: str | None = None
        self.lease_expires_at: datetime | None = None
        self.tx_hash: str | None = None
        self.reported_at: datetime | None = None
        self.tx_status: str | None = None
        self.confirmations = 0
        self.paid_minor = 0

    @classmethod
    def request(
        cls,
        *,
        id: UUID,
        user_id: UUID,
        maker: str,
        wallet: str,
        amount_minor: int,
        chain_id: int,
        token_contract: str,
        treasury_address: str,
        auto_approve_below_minor: int,
        request_fingerprint: str,
    ) -> Withdrawal:
        """A new withdrawal: authorized at once below `auto_approve_below_minor`, otherwise
        awaiting an admin's approval."""
        return cls(
            id=id,
            user_id=user_id,
            maker=maker,
            wallet=wallet.lower(),
            amount_minor=amount_minor,
            chain_id=chain_id,
            token_contract=token_contract.lower(),
            treasury_address=treasury_address.lower(),
            required_approvals=0 if amount_minor < auto_approve_below_minor else 1,
            request_fingerprint=request_fingerprint,
        )

    @property
    def transfer_id(self) -> UUID:
        """The pending transfer that holds the amount."""
        return withdrawal_transfer_id(self.id)

    @property
    def terms(self) -> TransferTerms:
        """What the reported transaction must carry: the token, from the treasury to the
        wallet, exactly the amount, on the chain, mined no earlier than the request."""
        requested_at: datetime = self.created_on
        return TransferTerms(
            chain_id=self.chain_id,
            token_contract=self.token_contract,
            sender=self.treasury_address,
            recipient=self.wallet,
            amount_minor=self.amount_minor,
            exact=True,
            issued_at=requested_at,
        )

    # --- authorization (maker-checker) ---------------------------------------------------

    def approve(self, approver: str, reason: str) -> None:
        """An admin other than the maker authorizes it."""
        self.check_awaiting_approval()
        if approver == self.maker:
            raise MakerCannotApproveError("the maker of a withdrawal cannot approve it")
        self._approved(approver=approver, reason=reason)

    def reject(self, reason: str) -> None:
        """An admin refuses it (the caller voids its transfer in the same command)."""
        self.check_awaiting_approval()
        self._rejected(reason=reason)

    def check_awaiting_approval(self) -> None:
        if self.status != WithdrawalStatus.AWAITING_APPROVAL:
            raise WithdrawalNotAwaitingApprovalError(f"the withdrawal is {self.status}")

    # --- custody: lease, then report the transaction or cancel ----------------------------

    def leasable(self, now: datetime) -> bool:
        """Authorized, or leased with the lease run out."""
        if self.status == WithdrawalStatus.AUTHORIZED:
            return True
        return (
            self.status == WithdrawalStatus.LEASED
            and self.lease_expires_at is not None
            and now >= self.lease_expires_at
        )

    def lease(self, custodian: str, now: datetime, length: timedelta) -> None:
        """Hand it to a custodian until `now + length`, with the next fencing token."""
        if not self.leasable(now):
            raise WithdrawalNotLeasableError(f"the withdrawal is {self.status} and not free")
        self._leased(
            custodian=custodian,
            fencing_token=self.fencing_token + 1,
            lease_expires_at=now + length,
        )

    def execute(self, fencing_token: int, tx_hash: str, now: datetime) -> bool:
        """The lease holder reports the transaction it sent. The same report again changes
        nothing (answers False); any other needs the latest token and a lease not yet
        ended by a report (a lease that ran out still counts until someone leases again:
        no other custodian can hold a token for it meanwhile)."""
        reported = (fencing_token, tx_hash) == (self.fencing_token, self.tx_hash)
        if reported and self.status in (WithdrawalStatus.EXECUTED, WithdrawalStatus.POSTED):
            return False
        self.check_lease(fencing_token)
        self._executed(fencing_token=fencing_token, tx_hash=tx_hash, reported_at=now)
        return True

    def cancel(self, fencing_token: int, reason: str) -> bool:
        """The lease holder gives the withdrawal up (the caller voids its transfer when
        this answers True; a repeat of the same cancellation answers False)."""
        if self.status == WithdrawalStatus.CANCELLED and fencing_token == self.fencing_token:
            return False
        self.check_lease(fencing_token)
        self._cancelled(fencing_token=fencing_token, reason=reason)
        return True

    def check_lease(self, fencing_token: int) -> None:
        if fencing_token != self.fencing_token:
            raise StaleFencingTokenError(
                f"fencing token {fencing_token} is not the latest ({self.fencing_token})"
            )
        if self.status != WithdrawalStatus.LEASED:
            raise WithdrawalNotLeasedError(f"the withdrawal is {self.status}, not leased")

    # --- verification of the reported transaction ----------------------------------------

    @property
    def verifying(self) -> bool:
        return self.status == WithdrawalStatus.EXECUTED

    def record(
        self, assessment: Assessment, block_number: int | None, block_hash: str | None
    ) -> None:
        """Apply an assessment of the reported transaction (`aggregates.purchases.assess`
        on `terms`); a pending one is recorded only when something changed."""
        if not self.verifying or self.tx_hash is None:
            return
        if assessment.status is PurchaseStatus.VERIFIED:
            assert (
                assessment.paid is not None and block_number is not None and block_hash is not None
            )
            self._verified(
                tx_hash=self.tx_hash,
                block_number=block_number,
                block_hash=block_hash,
                log_index=assessment.paid.log_index,
                paid_minor=assessment.paid.value_minor,
                confirmations=assessment.confirmations,
            )
        elif assessment.status is PurchaseStatus.REJECTED:
            self._tx_rejected(
                tx_hash=self.tx_hash,
                reason=str(assessment.reason),
                confirmations=assessment.confirmations,
            )
        elif (str(assessment.reason), assessment.confirmations) != (
            self.reason,
            self.confirmations,
        ):
            self._still_pending(
                reason=str(assessment.reason), confirmations=assessment.confirmations
            )

    # --- what each event changes ----------------------------------------------------------

    @event(Approved)
    def _approved(self, approver: str, reason: str) -> None:
        self.status = WithdrawalStatus.AUTHORIZED.value

    @event(Rejected)
    def _rejected(self, reason: str) -> None:
        self.status = WithdrawalStatus.REJECTED.value
        self.reason = reason

    @event(Leased)
    def _leased(self, custodian: str, fencing_token: int, lease_expires_at: datetime) -> None:
        self.status = WithdrawalStatus.LEASED.value
        self.custodian = custodian
        self.fencing_token = fencing_token
        self.lease_expires_at = lease_expires_at

    @event(Executed)
    def _executed(self, fencing_token: int, tx_hash: str, reported_at: datetime) -> None:
        self.status = WithdrawalStatus.EXECUTED.value
        self.tx_hash = tx_hash
        self.reported_at = reported_at
        self.tx_status = PurchaseStatus.PENDING.value
        self.reason = None
        self.confirmations = 0

    @event(StillPending)
    def _still_pending(self, reason: str, confirmations: int) -> None:
        self.reason = reason
        self.confirmations = confirmations

    @event(Verified)
    def _verified(
        self,
        tx_hash: str,
        block_number: int,
        block_hash: str,
        log_index: int,
        paid_minor: int,
        confirmations: int,
    ) -> None:
        self.status = WithdrawalStatus.POSTED.value
        self.tx_status = PurchaseStatus.VERIFIED.value
        self.reason = None
        self.paid_minor = paid_minor
        self.confirmations = confirmations

    @event(TxRejected)
    def _tx_rejected(self, tx_hash: str, reason: str, confirmations: int) -> None:
        self.status = WithdrawalStatus.AUTHORIZED.value
        self.tx_status = PurchaseStatus.REJECTED.value
        self.reason = reason
        self.confirmations = confirmations
        self.custodian = None
        self.lease_expires_at = None

    @event(Cancelled)
    def _cancelled(self, fencing_token: int, reason: str) -> None:
        self.status = WithdrawalStatus.CANCELLED.value
        self.reason = reason
