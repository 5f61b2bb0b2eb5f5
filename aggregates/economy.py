"""Economy commands: quote the audition fee, take a purchase, settle it from what the chain
says (ledger transfers and the entitlement, all at once), revoke an entitlement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from aggregates.application import Ledger, UnitOfWork, Written
from aggregates.base import CommandContext, fingerprint
from aggregates.entitlements import Entitlement, entitlement_id_for
from aggregates.ledger import (
    AUDITION_REVENUE,
    TREASURY,
    USDC_DECIMALS,
    InvalidAmountError,
    post_transfer,
    user_account,
)
from aggregates.purchases import (
    AuditionQuote,
    DepositObservation,
    Purchase,
    PurchaseStatus,
    QuoteNotFoundError,
    TxClaim,
    assess,
    claim_id_for,
)


@dataclass(frozen=True)
class DepositPolicy:
    min_confirmations: int
    pending_timeout: timedelta


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
    ledger: Ledger,
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

    return ledger.execute(context, decide)


def usdc_minor_units(amount: Decimal) -> int:
    minor = amount.scaleb(USDC_DECIMALS)
    if minor != minor.to_integral_value() or minor <= 0:
        raise InvalidAmountError(f"{amount} USDC is not a positive whole number of minor units")
    return int(minor)


def submit_purchase(
    ledger: Ledger,
    context: CommandContext,
    *,
    user_id: UUID,
    key: str,
    quote_id: UUID,
    tx_hash: str,
) -> Written[PurchaseState]:
    """Record the purchase and claim its transaction, once per key and once per tx hash."""
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
        claim = unit.find(TxClaim, claim_id_for(quote.chain_id, tx_hash))
        if claim is None:
            unit.add(
                TxClaim(
                    id=claim_id_for(quote.chain_id, tx_hash),
                    tx_hash=tx_hash,
                    purchase_id=purchase.id,
                )
            )
        elif purchase.is_pending or purchase.status is PurchaseStatus.VERIFIED:
            claim.claim_for(purchase.id)
        if purchase.status is PurchaseStatus.VERIFIED:
            # A repeat of a settled purchase answers with the position of its grant too.
            unit.find(Entitlement, entitlement_id_for(purchase.id))
        return PurchaseState.of(purchase)

    return ledger.execute(context, decide)


def settle_purchase(
    ledger: Ledger,
    context: CommandContext,
    *,
    purchase_id: UUID,
    observation: DepositObservation | None,
    policy: DepositPolicy,
) -> Written[PurchaseState]:
    """Apply what the chain says. Verified: the deposit and the fee post and the
    entitlement is granted in the same transaction as the verification."""

    def decide(unit: UnitOfWork) -> PurchaseState:
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
        purchase.record(
            assessment,
            observation.block_number if observation else None,
            observation.block_hash if observation else None,
        )
        if purchase.status is PurchaseStatus.VERIFIED:
            grant(unit, purchase, quote)
        elif purchase.status is PurchaseStatus.REJECTED:
            unit.get(TxClaim, claim_id_for(quote.chain_id, purchase.tx_hash)).release(purchase.id)
        return PurchaseState.of(purchase)

    return ledger.execute(context, decide)


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
    ledger: Ledger, context: CommandContext, entitlement_id: UUID, reason: str
) -> Written[None]:
    def decide(unit: UnitOfWork) -> None:
        unit.get(Entitlement, entitlement_id).revoke(reason)

    return ledger.execute(context, decide)
