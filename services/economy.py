"""Economy commands: quote the audition fee, take a purchase, settle it from what the chain
says (ledger transfers and the entitlement, all at once), revoke an entitlement."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from aggregates.base import CommandContext, fingerprint
from aggregates.entitlements import Entitlement, entitlement_id_for
from aggregates.errors import NotFoundError
from aggregates.ledger import (
    AUDITION_REVENUE,
    TREASURY,
    USDC_DECIMALS,
    InvalidAmountError,
    user_account,
)
from aggregates.ports import DepositObserver
from aggregates.purchases import (
    Assessment,
    AuditionQuote,
    DepositObservation,
    PendingPurchases,
    Purchase,
    PurchaseStatus,
    QuoteNotFoundError,
    Reason,
    TxAlreadyClaimedError,
    TxClaim,
    assess,
    claim_id_for,
    pending_roster_id_for,
)
from runtime.clock import Clock
from services.eventlog import EventLog, UnitOfWork, Written
from services.jobs import job_context
from services.ledger import post_transfer

log = logging.getLogger(__name__)


DEFAULT_MAX_PENDING_PURCHASES = 5


@dataclass(frozen=True)
class DepositPolicy:
    min_confirmations: int
    pending_timeout: timedelta
    max_pending_per_user: int = DEFAULT_MAX_PENDING_PURCHASES
    """How many purchases one user may keep waiting for the chain at once."""


@dataclass(frozen=True)
class PurchaseState:
    purchase_id: UUID
    status: PurchaseStatus
    reason: str | None
    tx_hash: str

    @classmethod
    def of(cls, purchase: Purchase) -> PurchaseState:
        return cls(purchase.id, purchase.status, purchase.reason, purchase.tx_hash)


def quote_audition(
    event_log: EventLog,
    context: CommandContext,
    *,
    quote_id: UUID,
    user_id: UUID,
    payer: str,
    fee: Decimal,
    token_contract: str,
    chain_id: int,
    treasury_address: str,
    valid_for: timedelta,
) -> Written[AuditionQuote]:
    """Quote the fee in USDC minor units, valid for a while from the command's time."""
    amount_minor = usdc_minor_units(fee)

    def decide(unit: UnitOfWork) -> AuditionQuote:
        return unit.add(
            AuditionQuote(
                id=quote_id,
                user_id=user_id,
                payer=payer,
                amount_minor=amount_minor,
                token_contract=token_contract.lower(),
                chain_id=chain_id,
                treasury_address=treasury_address.lower(),
                expires_at=context.occurred_at + valid_for,
            )
        )

    return event_log.execute(context, decide)


def usdc_minor_units(amount: Decimal) -> int:
    minor = amount.scaleb(USDC_DECIMALS)
    if minor != minor.to_integral_value() or minor <= 0:
        raise InvalidAmountError(f"{amount} USDC is not a positive whole number of minor units")
    return int(minor)


def submit_purchase(
    event_log: EventLog,
    context: CommandContext,
    *,
    user_id: UUID,
    key: str,
    quote_id: UUID,
    tx_hash: str,
    max_pending: int = DEFAULT_MAX_PENDING_PURCHASES,
) -> Written[PurchaseState]:
    """Record the purchase, once per key. It claims nothing: its transaction is claimed
    only when the chain verifies it (`settle_purchase`). A tx some purchase already
    settled with is refused at once; a new purchase beyond the user's cap of pending ones
    is refused (the roster is saved with it, so the cap holds under concurrency)."""
    tx_hash = tx_hash.lower()
    request = fingerprint({"quote_id": quote_id, "tx_hash": tx_hash})

    def decide(unit: UnitOfWork) -> PurchaseState:
        quote = unit.find(AuditionQuote, quote_id)
        if quote is None or quote.user_id != user_id:
            raise QuoteNotFoundError(f"quote {quote_id} not found")
        purchase = unit.create_once(
            Purchase,
            f"{user_id}:{key}",
            request,
            lambda id: Purchase(
                id=id,
                user_id=user_id,
                quote_id=quote_id,
                tx_hash=tx_hash,
                request_fingerprint=request,
            ),
        )
        if purchase.pending_events:  # new: a repeat answers as the first time did
            claim = unit.find(TxClaim, claim_id_for(quote.chain_id, tx_hash))
            if claim is not None and claim.purchase_id not in (None, purchase.id):
                raise TxAlreadyClaimedError("this transaction already pays for another purchase")
            pending_roster(unit, user_id).enter(purchase.id, max_pending)
        if purchase.status is PurchaseStatus.VERIFIED:
            # A repeat of a settled purchase answers with the position of its grant too.
            unit.find(Entitlement, entitlement_id_for(purchase.id))
        return PurchaseState.of(purchase)

    return event_log.execute(context, decide)


def pending_roster(unit: UnitOfWork, user_id: UUID) -> PendingPurchases:
    roster_id = pending_roster_id_for(user_id)
    return unit.find(PendingPurchases, roster_id) or unit.add(
        PendingPurchases(id=roster_id, user_id=user_id)
    )


def settle_purchase(
    event_log: EventLog,
    context: CommandContext,
    *,
    purchase_id: UUID,
    observation: DepositObservation | None,
    policy: DepositPolicy,
) -> Written[PurchaseState]:
    """Apply what the chain says. Verified: the deposit and the fee post and the
    entitlement is granted in the same transaction as the verification."""

    def owner_of(purchase_id: UUID) -> UUID:
        try:
            user_id: UUID = event_log.repository.get(purchase_id).user_id
        except AggregateNotFoundError as missing:
            raise NotFoundError(f"Purchase {purchase_id} not found") from missing
        return user_id

    def decide(unit: UnitOfWork) -> PurchaseState:
        # The user's roster is loaded first, so its event is saved before the purchase's
        # and a repeat of the submit (which reads the purchase, not the roster) answers
        # with the same position as the first time.
        roster = unit.find(PendingPurchases, pending_roster_id_for(owner_of(purchase_id)))
        purchase = unit.get(Purchase, purchase_id)
        if not purchase.is_pending:
            return PurchaseState.of(purchase)
        quote = unit.get(AuditionQuote, purchase.quote_id)
        assessment = assess(
            observation,
            quote,
            min_confirmations=policy.min_confirmations,
            now=context.occurred_at,
            pending_since=purchase.created_on,
            pending_timeout=policy.pending_timeout,
        )
        if assessment.status is PurchaseStatus.VERIFIED and not claim_tx(unit, quote, purchase):
            assessment = Assessment(
                PurchaseStatus.REJECTED, Reason.TX_ALREADY_CLAIMED, assessment.confirmations
            )
        purchase.record(
            assessment,
            observation.block_number if observation else None,
            observation.block_hash if observation else None,
        )
        if purchase.status is PurchaseStatus.VERIFIED:
            grant(unit, purchase, quote)
        elif purchase.status is PurchaseStatus.REJECTED:
            claim = unit.find(TxClaim, claim_id_for(quote.chain_id, purchase.tx_hash))
            if claim is not None:  # only a claim taken at submit by an older release
                claim.release(purchase.id)
        if not purchase.is_pending and roster is not None:
            roster.leave(purchase.id)
        return PurchaseState.of(purchase)

    return event_log.execute(context, decide)


def claim_tx(unit: UnitOfWork, quote: AuditionQuote, purchase: Purchase) -> bool:
    """Take the transaction's claim for this verified purchase, in its settlement; False
    when another purchase took it first. Two purchases verifying one tx at once both
    write the claim (a creation, or a `Reclaimed` at the same version), so the store lets
    one through and the other's retry finds the claim taken."""
    claim_id = claim_id_for(quote.chain_id, purchase.tx_hash)
    claim = unit.find(TxClaim, claim_id)
    if claim is None:
        unit.add(TxClaim(id=claim_id, tx_hash=purchase.tx_hash, purchase_id=purchase.id))
        return True
    if claim.purchase_id not in (None, purchase.id):
        return False
    claim.claim_for(purchase.id)
    return True


def grant(unit: UnitOfWork, purchase: Purchase, quote: AuditionQuote) -> None:
    account = user_account(purchase.user_id)
    # The whole payment lands on the user's balance (an overpayment stays there), then
    # the fee moves on to revenue.
    post_transfer(unit, f"deposit:{purchase.id}", TREASURY, account, purchase.paid_minor)
    post_transfer(
        unit, f"audition-fee:{purchase.id}", account, AUDITION_REVENUE, quote.amount_minor
    )
    unit.add(
        Entitlement(
            id=entitlement_id_for(purchase.id),
            user_id=purchase.user_id,
            purchase_id=purchase.id,
            kind="audition",
        )
    )


def revoke_entitlement(
    event_log: EventLog, context: CommandContext, entitlement_id: UUID, reason: str
) -> Written[None]:
    def decide(unit: UnitOfWork) -> None:
        unit.get(Entitlement, entitlement_id).revoke(reason)

    return event_log.execute(context, decide)


# --- deposit confirmation: ask the node about a purchase's transaction, then settle it ---
# The same path serves a new purchase (right after it is recorded) and the poller job that
# re-checks pending ones; the node's answer is fetched outside any transaction and handed
# to the command.

DEPOSIT_JOB = "deposit_confirmations"


def confirm(
    event_log: EventLog,
    context: CommandContext,
    node: DepositObserver,
    policy: DepositPolicy,
    purchase_id: UUID,
) -> Written[PurchaseState]:
    tx_hash: str = event_log.repository.get(purchase_id).tx_hash
    return settle_purchase(
        event_log,
        context,
        purchase_id=purchase_id,
        observation=node.observe_deposit(tx_hash),
        policy=policy,
    )


def purchase(
    event_log: EventLog,
    context: CommandContext,
    node: DepositObserver,
    policy: DepositPolicy,
    *,
    user_id: UUID,
    key: str,
    quote_id: UUID,
    tx_hash: str,
) -> Written[PurchaseState]:
    """Record the purchase, then, while it is pending, ask the chain about it at once."""
    written = submit_purchase(
        event_log,
        context,
        user_id=user_id,
        key=key,
        quote_id=quote_id,
        tx_hash=tx_hash,
        max_pending=policy.max_pending_per_user,
    )
    if written.result.status != "pending_confirmations":
        return written
    checked = confirm(event_log, context, node, policy, written.result.purchase_id)
    return Written(checked.result, max(written.position, checked.position))


@dataclass(frozen=True)
class DepositConfirmations:
    """The poller job: re-check every pending purchase; a round answers how many settled."""

    event_log: EventLog
    node: DepositObserver
    policy: DepositPolicy
    pending: Callable[[], list[UUID]]
    clock: Clock

    def __call__(self) -> int:
        settled = 0
        for purchase_id in self.pending():
            context = job_context(DEPOSIT_JOB, self.clock, str(purchase_id))
            try:
                state = confirm(self.event_log, context, self.node, self.policy, purchase_id)
            except Exception:
                # One purchase that cannot be settled must not hold up the others.
                log.exception("could not settle purchase %s", purchase_id)
                continue
            settled += state.result.status != "pending_confirmations"
        return settled
