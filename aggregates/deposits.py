"""Balance deposits: USDC sent on-chain from the user's wallet to the treasury, credited to
the user's ledger balance once the chain has verified it.

A deposit is a `ChainPayment` like an audition purchase and is verified the same way
(`aggregates.purchases`: the same `assess`, the same `TxClaim` per transaction taken
when it verifies, the same per-user roster of payments waiting for the chain). Only its
terms differ: there is no quote, so it is paid by whatever the transaction's qualifying
Transfer logs carry (any positive amount), whenever it was mined. The terms (payer,
token, chain, treasury) are pinned in `Submitted`, so a settings change never alters a
pending deposit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate
from aggregates.errors import ConflictError
from aggregates.purchases import ChainPayment, PurchaseStatus


class TooManyPendingDepositsError(ConflictError):
    code = "too-many-pending-deposits"


@dataclass(frozen=True)
class DepositTerms:
    """What a deposit's transaction must be (`PaymentTerms`): from the payer to the
    treasury in the token, on the chain, adding up to at least one minor unit."""

    chain_id: int
    payer: str
    token_contract: str
    treasury_address: str
    amount_minor: int = 1
    issued_at: datetime | None = None
    expires_at: datetime | None = None


class Deposit(ChainPayment, DomainAggregate):
    class Submitted(DomainAggregate.Created):
        user_id: UUID
        payer: str
        token_contract: str
        chain_id: int
        treasury_address: str
        tx_hash: str
        request_fingerprint: str

    class Incoming(DomainAggregate.Event):
        """What the transaction carries to the treasury so far, before it is final."""

        amount_minor: int

    class StillPending(DomainAggregate.Event):
        reason: str
        confirmations: int

    class Verified(DomainAggregate.Event):
        block_number: int
        block_hash: str
        log_index: int
        paid_minor: int
        confirmations: int

    class Rejected(DomainAggregate.Event):
        reason: str

    @event(Submitted)
    def __init__(
        self,
        id: UUID,
        user_id: UUID,
        payer: str,
        token_contract: str,
        chain_id: int,
        treasury_address: str,
        tx_hash: str,
        request_fingerprint: str,
    ) -> None:
        self.user_id = user_id
        self.payer = payer
        self.token_contract = token_contract
        self.chain_id = chain_id
        self.treasury_address = treasury_address
        self.tx_hash = tx_hash
        self.request_fingerprint = request_fingerprint
        self.status = PurchaseStatus.PENDING
        self.reason = None
        self.confirmations = 0
        self.paid_minor = 0
        self.incoming_minor = 0

    @property
    def terms(self) -> DepositTerms:
        return DepositTerms(
            chain_id=self.chain_id,
            payer=self.payer,
            token_contract=self.token_contract,
            treasury_address=self.treasury_address,
        )

    def expect(self, amount_minor: int | None) -> None:
        """Note what the chain shows on its way while the deposit is pending (None: the
        node said nothing; keep what was seen). Recorded only when it changed."""
        if self.is_pending and amount_minor is not None and amount_minor != self.incoming_minor:
            self._incoming(amount_minor=amount_minor)

    @event(Incoming)
    def _incoming(self, amount_minor: int) -> None:
        self.incoming_minor = amount_minor

    @event(StillPending)
    def _still_pending(self, reason: str, confirmations: int) -> None:
        self.reason = reason
        self.confirmations = confirmations

    @event(Verified)
    def _verified(
        self,
        block_number: int,
        block_hash: str,
        log_index: int,
        paid_minor: int,
        confirmations: int,
    ) -> None:
        self.status = PurchaseStatus.VERIFIED
        self.reason = None
        self.paid_minor = paid_minor
        self.confirmations = confirmations
        self.incoming_minor = 0

    @event(Rejected)
    def _rejected(self, reason: str) -> None:
        self.status = PurchaseStatus.REJECTED
        self.reason = reason
        self.incoming_minor = 0
