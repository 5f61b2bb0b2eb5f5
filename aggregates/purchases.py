"""Audition-fee quotes, purchases, and the rules that decide whether a payment counts.

What the chain says arrives as a `DepositObservation` (fetched at the edge); `assess`
turns it into verified, rejected (with a reason) or still pending, against the terms the
payment had to meet (`PaymentTerms`: a purchase's quote, or a balance deposit's terms in
`aggregates.deposits`). Purchases and deposits are both `ChainPayment`s and share the rest
too: a `TxClaim` per transaction hash, taken in the transaction that verifies a payment
(never at submit, so a pending one holds nothing), makes sure no transaction ever pays
twice, whether for a purchase or a deposit; a `PendingPurchases` roster per user, saved
with every submit and settlement, caps how many payments a user may keep waiting for the
chain.

The same `assess` verifies money going the other way: a withdrawal's transaction, out of
the treasury to the user's wallet for exactly the amount (`TransferTerms`, which say who
sends, who receives and whether the amount must be exact), and the same `TxClaim` keeps
one transaction from settling a withdrawal and anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import ConflictError, NotFoundError

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


class PurchaseStatus(StrEnum):
    """Where a payment (an audition purchase or a balance deposit) stands."""

    PENDING = "pending_confirmations"
    VERIFIED = "verified"
    REJECTED = "rejected"


class Reason(StrEnum):
    """Why a payment is still pending or was rejected: stable codes clients can act on."""

    AWAITING_CONFIRMATIONS = "awaiting-confirmations"
    NOT_MINED = "tx-not-mined"
    RPC_UNAVAILABLE = "rpc-unavailable"
    RPC_WRONG_CHAIN = "rpc-wrong-chain"
    REORGED = "reorged"
    TX_UNKNOWN = "tx-unknown"
    TX_FAILED = "tx-failed"
    WRONG_TOKEN = "wrong-token"
    WRONG_RECIPIENT = "wrong-recipient"
    WRONG_SENDER = "wrong-sender"
    AMOUNT_TOO_LOW = "amount-too-low"
    AMOUNT_TOO_HIGH = "amount-too-high"
    TX_BEFORE_QUOTE = "tx-before-quote"
    QUOTE_EXPIRED = "quote-expired"
    TX_ALREADY_CLAIMED = "tx-already-claimed"


def claim_id_for(chain_id: int, tx_hash: str) -> UUID:
    return derive_id("TxClaim", f"{chain_id}:{tx_hash.lower()}")


class QuoteNotFoundError(NotFoundError):
    code = "quote-not-found"


class TxAlreadyClaimedError(ConflictError):
    code = "tx-already-claimed"


class TooManyPendingPurchasesError(ConflictError):
    code = "too-many-pending-purchases"


def pending_roster_id_for(user_id: UUID) -> UUID:
    return derive_id("PendingPurchases", str(user_id))


class AuditionQuote(DomainAggregate):
    class Quoted(DomainAggregate.Created):
        user_id: UUID
        payer: str
        amount_minor: int
        token_contract: str
        chain_id: int
        treasury_address: str
        expires_at: datetime

    @event(Quoted)
    def __init__(
        self,
        id: UUID,
        user_id: UUID,
        payer: str,
        amount_minor: int,
        token_contract: str,
        chain_id: int,
        treasury_address: str,
        expires_at: datetime,
    ) -> None:
        self.user_id = user_id
        self.payer = payer
        self.amount_minor = amount_minor
        self.token_contract = token_contract
        self.chain_id = chain_id
        self.treasury_address = treasury_address
        self.expires_at = expires_at

    @property
    def issued_at(self) -> datetime:
        """When the quote was made: the time of the command that created it."""
        created_on: datetime = self.created_on
        return created_on


class TxClaim(DomainAggregate):
    """Which payment a transaction pays for: taken by the first payment (an audition
    purchase, a balance deposit or a withdrawal: `purchase_id` names any) the chain verifies it for,
    in that settlement's transaction. A payment that is only pending holds nothing, so
    whoever submits a tx first cannot keep it from its real payer. (Claims taken at submit
    before this rule are let go when their purchase is rejected.)"""

    class Claimed(DomainAggregate.Created):
        tx_hash: str
        purchase_id: UUID

    class Released(DomainAggregate.Event):
        purchase_id: UUID

    class Reclaimed(DomainAggregate.Event):
        purchase_id: UUID

    @event(Claimed)
    def __init__(self, id: UUID, tx_hash: str, purchase_id: UUID) -> None:
        self.tx_hash = tx_hash
        self.purchase_id: UUID | None = purchase_id

    def claim_for(self, purchase_id: UUID) -> None:
        if self.purchase_id == purchase_id:
            return
        if self.purchase_id is not None:
            raise TxAlreadyClaimedError("this transaction already pays for another purchase")
        self._reclaimed(purchase_id=purchase_id)

    def release(self, purchase_id: UUID) -> None:
        if self.purchase_id == purchase_id:
            self._released(purchase_id=purchase_id)

    @event(Released)
    def _released(self, purchase_id: UUID) -> None:
        self.purchase_id = None

    @event(Reclaimed)
    def _reclaimed(self, purchase_id: UUID) -> None:
        self.purchase_id = purchase_id


class PendingPurchases(DomainAggregate):
    """One user's payments (audition purchases and balance deposits together: `purchase_id`
    names either) still waiting for the chain. Saved in the same transaction as each
    submit (enter) and each settlement (leave), so the store's version check keeps the cap
    under concurrent submissions: of two racing for the last place, one retries and is
    refused."""

    snapshot_interval: ClassVar[int | None] = 100

    class Started(DomainAggregate.Created):
        user_id: UUID

    class Entered(DomainAggregate.Event):
        purchase_id: UUID

    class Left(DomainAggregate.Event):
        purchase_id: UUID

    @event(Started)
    def __init__(self, id: UUID, user_id: UUID) -> None:
        self.user_id = user_id
        self.pending: list[UUID] = []

    def enter(
        self,
        payment_id: UUID,
        limit: int,
        refusal: type[ConflictError] = TooManyPendingPurchasesError,
    ) -> None:
        """Take a place for a new payment, or refuse it with `refusal` (the error of its
        kind) when `limit` payments of the user are waiting already."""
        if payment_id in self.pending:
            return
        if len(self.pending) >= limit:
            raise refusal(
                f"{len(self.pending)} payments (purchases and deposits) are still waiting for"
                f" the chain (at most {limit}); submit another when one of them is settled"
            )
        self._entered(purchase_id=payment_id)

    def leave(self, payment_id: UUID) -> None:
        if payment_id in self.pending:
            self._left(purchase_id=payment_id)

    @event(Entered)
    def _entered(self, purchase_id: UUID) -> None:
        self.pending.append(purchase_id)

    @event(Left)
    def _left(self, purchase_id: UUID) -> None:
        self.pending.remove(purchase_id)


@dataclass(frozen=True)
class TransferLog:
    token: str
    sender: str
    recipient: str
    value_minor: int
    log_index: int


@dataclass(frozen=True)
class DepositObservation:
    """What the node said about a transaction, at one moment (no node reached: None)."""

    chain_id: int
    head_block: int
    tx_known: bool
    receipt_status: int | None = None  # None: no receipt yet
    block_number: int | None = None
    block_hash: str | None = None
    canonical_block_hash: str | None = None  # the node's block at that height, read again
    block_time: datetime | None = None
    transfers: list[TransferLog] = field(default_factory=list)


@dataclass(frozen=True)
class Payment:
    """What a transaction paid the treasury: every qualifying Transfer log, summed."""

    value_minor: int
    log_indexes: tuple[int, ...]

    @property
    def log_index(self) -> int:
        """The first log counted (what a `Verified` event records beside the sum)."""
        return self.log_indexes[0]


@dataclass(frozen=True)
class Assessment:
    status: PurchaseStatus
    reason: Reason | None
    confirmations: int = 0
    paid: Payment | None = None


class PaymentTerms(Protocol):
    """What a transaction must be to pay: on this chain, in this token, from the payer to
    the treasury, adding up to at least `amount_minor`, and (when given) mined no earlier
    than `issued_at` and no later than `expires_at`. An `AuditionQuote` is one; a balance
    deposit has its own (`aggregates.deposits.DepositTerms`: any positive amount, any time)."""

    @property
    def chain_id(self) -> int: ...
    @property
    def payer(self) -> str: ...
    @property
    def token_contract(self) -> str: ...
    @property
    def treasury_address(self) -> str: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def issued_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class TransferTerms:
    """What a transaction must carry, in either direction: on this chain, in this token,
    from `sender` to `recipient`, adding up to at least `amount_minor` (`exact`: to exactly
    that), and (when given) mined no earlier than `issued_at` and no later than
    `expires_at`. A payment in (`PaymentTerms`: payer to treasury, at least the amount) is
    read as one (`of`); a withdrawal's are the treasury to the user's wallet, exact."""

    chain_id: int
    token_contract: str
    sender: str
    recipient: str
    amount_minor: int
    exact: bool = False
    issued_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def of(cls, terms: PaymentTerms | TransferTerms) -> TransferTerms:
        """These terms as sender, recipient and amount (a payment in: payer to treasury)."""
        if isinstance(terms, TransferTerms):
            return terms
        return cls(
            chain_id=terms.chain_id,
            token_contract=terms.token_contract,
            sender=terms.payer,
            recipient=terms.treasury_address,
            amount_minor=terms.amount_minor,
            issued_at=terms.issued_at,
            expires_at=terms.expires_at,
        )


def assess(
    observation: DepositObservation | None,
    terms: PaymentTerms | TransferTerms,
    *,
    min_confirmations: int,
    now: datetime,
    pending_since: datetime,
    pending_timeout: timedelta,
) -> Assessment:
    """Decided only on final data: nothing is verified or rejected until the receipt's
    block is still canonical and has enough confirmations; until then it stays pending,
    and what never becomes final is rejected after the timeout. The one verifier of
    every transfer on chain: a purchase, a deposit (paid in), a withdrawal (paid out)."""
    expected = TransferTerms.of(terms)
    timed_out = now - pending_since > pending_timeout
    if observation is None:
        return Assessment(PurchaseStatus.PENDING, Reason.RPC_UNAVAILABLE)
    if observation.chain_id != expected.chain_id:
        return Assessment(PurchaseStatus.PENDING, Reason.RPC_WRONG_CHAIN)
    if observation.receipt_status is None or observation.block_number is None:
        return _uncertain(
            Reason.NOT_MINED if observation.tx_known else Reason.TX_UNKNOWN, timed_out
        )
    if observation.canonical_block_hash != observation.block_hash or observation.block_time is None:
        return _uncertain(Reason.REORGED, timed_out)
    confirmations = observation.head_block - observation.block_number + 1
    if confirmations < min_confirmations:
        return Assessment(
            PurchaseStatus.PENDING, Reason.AWAITING_CONFIRMATIONS, max(confirmations, 0)
        )
    if observation.receipt_status != 1:
        return Assessment(PurchaseStatus.REJECTED, Reason.TX_FAILED, confirmations)
    rejection, paid = _match_transfer(observation.transfers, expected)
    if rejection is not None:
        return Assessment(PurchaseStatus.REJECTED, rejection, confirmations)
    # Block times are whole seconds: a transfer in the second the quote was made counts.
    if expected.issued_at is not None and observation.block_time < expected.issued_at.replace(
        microsecond=0
    ):
        return Assessment(PurchaseStatus.REJECTED, Reason.TX_BEFORE_QUOTE, confirmations)
    if expected.expires_at is not None and observation.block_time > expected.expires_at:
        return Assessment(PurchaseStatus.REJECTED, Reason.QUOTE_EXPIRED, confirmations)
    return Assessment(PurchaseStatus.VERIFIED, None, confirmations, paid)


def incoming(
    observation: DepositObservation | None, terms: PaymentTerms | TransferTerms
) -> int | None:
    """What the transaction carries from the payer to the treasury as the node shows it
    now, final or not: what a pending payment shows as on its way. Only `assess` decides
    what is credited; this is for display. 0 while nothing qualifying is mined in a
    canonical block; None when the node said nothing usable (keep what was seen before)."""
    expected = TransferTerms.of(terms)
    if observation is None or observation.chain_id != expected.chain_id:
        return None
    if (
        observation.receipt_status != 1
        or observation.block_number is None
        or observation.canonical_block_hash != observation.block_hash
    ):
        return 0
    _, paying = _paying(observation.transfers, expected)
    return _summed(paying).value_minor if paying else 0


def _uncertain(reason: Reason, timed_out: bool) -> Assessment:
    """Not known yet: wait, but not for ever."""
    return Assessment(PurchaseStatus.REJECTED if timed_out else PurchaseStatus.PENDING, reason)


def _paying(
    transfers: list[TransferLog], terms: TransferTerms
) -> tuple[Reason | None, list[TransferLog]]:
    """The transaction's transfers of the token from the sender to the recipient (the
    payer to the treasury, or the treasury to a withdrawing user's wallet), or the most
    telling reason why there are none."""
    usdc = [t for t in transfers if t.token.lower() == terms.token_contract.lower()]
    if not usdc:
        return Reason.WRONG_TOKEN, []
    to_recipient = [t for t in usdc if t.recipient.lower() == terms.recipient.lower()]
    if not to_recipient:
        return Reason.WRONG_RECIPIENT, []
    from_sender = [t for t in to_recipient if t.sender.lower() == terms.sender.lower()]
    if not from_sender:
        return Reason.WRONG_SENDER, []
    return None, from_sender


def _summed(paying: list[TransferLog]) -> Payment:
    """Every paying transfer, summed, each log once (by its index)."""
    counted = {t.log_index: t for t in reversed(paying)}  # a repeated index counts once
    return Payment(
        value_minor=sum(t.value_minor for t in counted.values()),
        log_indexes=tuple(sorted(counted)),
    )


def _match_transfer(
    transfers: list[TransferLog], terms: TransferTerms
) -> tuple[Reason | None, Payment | None]:
    """Every transfer of the token from the sender to the recipient in the transaction,
    summed (each log once, by its index), or the most telling reason why none pays the
    terms: too little, or (when the amount must be exact) too much."""
    rejection, paying = _paying(transfers, terms)
    if rejection is not None:
        return rejection, None
    paid = _summed(paying)
    if paid.value_minor < terms.amount_minor:
        return Reason.AMOUNT_TOO_LOW, None
    if terms.exact and paid.value_minor != terms.amount_minor:
        return Reason.AMOUNT_TOO_HIGH, None
    return None, paid


class ChainPayment:
    """What an audition purchase and a balance deposit share: a transaction to verify,
    and how each assessment of it is recorded (`assess` decides, `record` writes it down).
    The aggregate mixing this in declares its own `StillPending`, `Verified` and
    `Rejected` events, with these fields, and their methods below."""

    user_id: UUID
    tx_hash: str
    status: PurchaseStatus
    reason: str | None
    confirmations: int
    paid_minor: int

    @property
    def is_pending(self) -> bool:
        return self.status is PurchaseStatus.PENDING

    def record(
        self, assessment: Assessment, block_number: int | None, block_hash: str | None
    ) -> None:
        """Apply an assessment; a pending one is recorded only when something changed."""
        if not self.is_pending:
            return
        if assessment.status is PurchaseStatus.VERIFIED:
            assert (
                assessment.paid is not None and block_number is not None and block_hash is not None
            )
            self._verified(
                block_number=block_number,
                block_hash=block_hash,
                log_index=assessment.paid.log_index,
                paid_minor=assessment.paid.value_minor,
                confirmations=assessment.confirmations,
            )
        elif assessment.status is PurchaseStatus.REJECTED:
            self._rejected(reason=str(assessment.reason))
        elif (str(assessment.reason), assessment.confirmations) != (
            self.reason,
            self.confirmations,
        ):
            self._still_pending(
                reason=str(assessment.reason), confirmations=assessment.confirmations
            )

    if TYPE_CHECKING:  # each payment aggregate defines these as its events' methods

        def _still_pending(self, reason: str, confirmations: int) -> None: ...

        def _verified(
            self,
            block_number: int,
            block_hash: str,
            log_index: int,
            paid_minor: int,
            confirmations: int,
        ) -> None: ...

        def _rejected(self, reason: str) -> None: ...


class Purchase(ChainPayment, DomainAggregate):
    class Submitted(DomainAggregate.Created):
        user_id: UUID
        quote_id: UUID
        tx_hash: str
        request_fingerprint: str

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
        self, id: UUID, user_id: UUID, quote_id: UUID, tx_hash: str, request_fingerprint: str
    ) -> None:
        self.user_id = user_id
        self.quote_id = quote_id
        self.tx_hash = tx_hash
        self.request_fingerprint = request_fingerprint
        self.status = PurchaseStatus.PENDING
        self.reason: str | None = None
        self.confirmations = 0
        self.paid_minor = 0

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

    @event(Rejected)
    def _rejected(self, reason: str) -> None:
        self.status = PurchaseStatus.REJECTED
        self.reason = reason
