"""Economy commands: quote the audition fee, take a purchase or a balance deposit, settle it
from what the chain says (ledger transfers, and for a purchase the entitlement, all at
once), revoke an entitlement.

Purchases and deposits are both chain payments and take one path: submit (once per key,
refused when the tx already paid, capped per user by one roster), confirm (the node asked
outside any transaction), settle (`assess` against the payment's terms, the tx claimed
in the transaction that verifies it, then what each kind credits).

Withdrawals are chain transfers too, the other way (out of the treasury): once custody
reports the transaction, the same `confirm` asks the node, the same `assess` judges it
(on the withdrawal's terms: the treasury to the user's wallet, exactly the amount), the
same `TxClaim` is taken when it verifies, and the same `deposit_confirmations` job
re-checks what is still pending (`settle_withdrawal`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeAlias
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from aggregates.base import CommandContext, fingerprint
from aggregates.deposits import Deposit, DepositTerms, TooManyPendingDepositsError
from aggregates.entitlements import Entitlement, entitlement_id_for
from aggregates.errors import ConflictError, NotFoundError
from aggregates.ledger import (
    AUDITION_REVENUE,
    TREASURY,
    USDC_DECIMALS,
    InvalidAmountError,
    UserAccount,
    user_account,
    user_account_id,
)
from aggregates.ports import DepositObserver
from aggregates.purchases import (
    Assessment,
    AuditionQuote,
    DepositObservation,
    PaymentTerms,
    PendingPurchases,
    Purchase,
    PurchaseStatus,
    QuoteNotFoundError,
    Reason,
    TooManyPendingPurchasesError,
    TransferTerms,
    TxAlreadyClaimedError,
    TxClaim,
    assess,
    claim_id_for,
    incoming,
    pending_roster_id_for,
)
from aggregates.withdrawals import Withdrawal, WithdrawalStatus
from runtime.clock import Clock
from runtime.job_queue import JobRow
from services.eventlog import EventLog, UnitOfWork, Written
from services.job_queue import JobQueue, RetriedWork
from services.jobs import job_context
from services.ledger import post_pending, post_transfer

log = logging.getLogger(__name__)


DEFAULT_MAX_PENDING_PURCHASES = 5


@dataclass(frozen=True)
class DepositPolicy:
    min_confirmations: int
    pending_timeout: timedelta
    max_pending_per_user: int = DEFAULT_MAX_PENDING_PURCHASES
    """How many payments (purchases and deposits together) one user may keep waiting for
    the chain at once."""


PaymentAggregate: TypeAlias = Purchase | Deposit
"""A payment on-chain to the treasury: an audition purchase or a balance deposit."""


@dataclass(frozen=True)
class PaymentState:
    """Where a purchase or a deposit stands: what its commands answer."""

    payment_id: UUID
    status: PurchaseStatus
    reason: str | None
    tx_hash: str
    paid_minor: int

    @classmethod
    def of(cls, payment: PaymentAggregate) -> PaymentState:
        return cls(payment.id, payment.status, payment.reason, payment.tx_hash, payment.paid_minor)

    @classmethod
    def of_withdrawal(cls, withdrawal: Withdrawal) -> PaymentState:
        """Where a withdrawal's reported transaction stands (pending before any report)."""
        return cls(
            withdrawal.id,
            PurchaseStatus(withdrawal.tx_status or PurchaseStatus.PENDING),
            withdrawal.reason,
            withdrawal.tx_hash or "",
            withdrawal.paid_minor,
        )


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
) -> Written[PaymentState]:
    """Record the purchase, once per key. It claims nothing: its transaction is claimed
    only when the chain verifies it (`settle`). A tx some purchase or deposit already
    settled with is refused at once; a new purchase beyond the user's cap of pending
    payments is refused (the roster is saved with it, so the cap holds under concurrency)."""
    tx_hash = tx_hash.lower()
    request = fingerprint({"quote_id": quote_id, "tx_hash": tx_hash})

    def decide(unit: UnitOfWork) -> PaymentState:
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
        enter_pending(unit, purchase, quote.chain_id, max_pending, TooManyPendingPurchasesError)
        if purchase.status is PurchaseStatus.VERIFIED:
            # A repeat of a settled purchase answers with the position of its grant too.
            unit.find(Entitlement, entitlement_id_for(purchase.id))
        return PaymentState.of(purchase)

    return event_log.execute(context, decide)


def submit_deposit(
    event_log: EventLog,
    context: CommandContext,
    *,
    user_id: UUID,
    key: str,
    terms: DepositTerms,
    tx_hash: str,
    max_pending: int = DEFAULT_MAX_PENDING_PURCHASES,
) -> Written[PaymentState]:
    """Record the deposit, once per key, with the terms it must meet (the signed-in
    wallet, the token, the chain, the treasury). Like a purchase, it claims nothing until
    it verifies; a tx already settled is refused; the user's pending cap applies."""
    tx_hash = tx_hash.lower()
    request = fingerprint({"tx_hash": tx_hash})

    def decide(unit: UnitOfWork) -> PaymentState:
        deposit = unit.create_once(
            Deposit,
            f"{user_id}:{key}",
            request,
            lambda id: Deposit(
                id=id,
                user_id=user_id,
                payer=terms.payer.lower(),
                token_contract=terms.token_contract.lower(),
                chain_id=terms.chain_id,
                treasury_address=terms.treasury_address.lower(),
                tx_hash=tx_hash,
                request_fingerprint=request,
            ),
        )
        enter_pending(unit, deposit, deposit.chain_id, max_pending, TooManyPendingDepositsError)
        if deposit.status is PurchaseStatus.VERIFIED:
            # A repeat of a credited deposit answers with the position of its credit too.
            unit.find(UserAccount, user_account_id(user_id))
        return PaymentState.of(deposit)

    return event_log.execute(context, decide)


def enter_pending(
    unit: UnitOfWork,
    payment: PaymentAggregate,
    chain_id: int,
    max_pending: int,
    refusal: type[ConflictError],
) -> None:
    """A new payment (a repeat answers as the first time did): refused at once when its
    tx already paid for another purchase or deposit, else it takes a place on the user's
    roster of payments waiting for the chain, or is refused (`refusal`) beyond the cap."""
    if not payment.pending_events:
        return
    check_unclaimed(unit, chain_id, payment.id, payment.tx_hash)
    pending_roster(unit, payment.user_id).enter(payment.id, max_pending, refusal)


def pending_roster(unit: UnitOfWork, user_id: UUID) -> PendingPurchases:
    roster_id = pending_roster_id_for(user_id)
    return unit.find(PendingPurchases, roster_id) or unit.add(
        PendingPurchases(id=roster_id, user_id=user_id)
    )


def settle(
    event_log: EventLog,
    context: CommandContext,
    *,
    payment_id: UUID,
    observation: DepositObservation | None,
    policy: DepositPolicy,
) -> Written[PaymentState]:
    """Apply what the chain says to a purchase or a deposit. Verified: its transaction is
    claimed and what it pays is credited in the same transaction as the verification (a
    purchase: the deposit, the fee and the entitlement; a deposit: the balance)."""

    def owner_of(payment_id: UUID) -> tuple[UUID, type[Purchase] | type[Deposit]]:
        try:
            loaded: object = event_log.repository.get(payment_id)
        except AggregateNotFoundError as missing:
            raise NotFoundError(f"payment {payment_id} not found") from missing
        if not isinstance(loaded, Purchase | Deposit):
            raise NotFoundError(f"payment {payment_id} not found")
        return loaded.user_id, type(loaded)

    def decide(unit: UnitOfWork) -> PaymentState:
        # The user's roster is loaded first, so its event is saved before the payment's
        # and a repeat of the submit (which reads the payment, not the roster) answers
        # with the same position as the first time.
        user_id, kind = owner_of(payment_id)
        roster = unit.find(PendingPurchases, pending_roster_id_for(user_id))
        payment: PaymentAggregate = (
            unit.get(Purchase, payment_id) if kind is Purchase else unit.get(Deposit, payment_id)
        )
        if not payment.is_pending:
            return PaymentState.of(payment)
        terms = terms_of(unit, payment)
        assessment = assess_and_claim(
            unit,
            observation,
            terms,
            policy,
            now=context.occurred_at,
            pending_since=payment.created_on,
            payment_id=payment.id,
            tx_hash=payment.tx_hash,
        )
        payment.record(
            assessment,
            observation.block_number if observation else None,
            observation.block_hash if observation else None,
        )
        if payment.status is PurchaseStatus.VERIFIED:
            credit(unit, payment)
        elif payment.status is PurchaseStatus.REJECTED:
            claim = unit.find(TxClaim, claim_id_for(terms.chain_id, payment.tx_hash))
            if claim is not None:  # only a claim taken at submit by an older release
                claim.release(payment.id)
        elif isinstance(payment, Deposit):
            payment.expect(incoming(observation, terms))
        if not payment.is_pending and roster is not None:
            roster.leave(payment.id)
        return PaymentState.of(payment)

    return event_log.execute(context, decide)


def assess_and_claim(
    unit: UnitOfWork,
    observation: DepositObservation | None,
    terms: PaymentTerms | TransferTerms,
    policy: DepositPolicy,
    *,
    now: datetime,
    pending_since: datetime,
    payment_id: UUID,
    tx_hash: str,
) -> Assessment:
    """What the chain's answer means for a payment (a purchase, a deposit or a withdrawal)
    by its terms; a verified one takes its transaction's claim, or is rejected when another
    payment holds it."""
    assessment = assess(
        observation,
        terms,
        min_confirmations=policy.min_confirmations,
        now=now,
        pending_since=pending_since,
        pending_timeout=policy.pending_timeout,
    )
    if assessment.status is PurchaseStatus.VERIFIED and not claim_tx(
        unit, terms.chain_id, payment_id, tx_hash
    ):
        return Assessment(
            PurchaseStatus.REJECTED, Reason.TX_ALREADY_CLAIMED, assessment.confirmations
        )
    return assessment


def terms_of(unit: UnitOfWork, payment: PaymentAggregate) -> PaymentTerms:
    """What the payment had to pay: a purchase its quote, a deposit its own terms."""
    if isinstance(payment, Purchase):
        return unit.get(AuditionQuote, payment.quote_id)
    return payment.terms


def claim_tx(unit: UnitOfWork, chain_id: int, payment_id: UUID, tx_hash: str) -> bool:
    """Take the transaction's claim for this verified payment (a purchase, a deposit or a
    withdrawal), in its settlement; False when another one took it first. Two payments
    verifying one tx at once both write the claim (a creation, or a `Reclaimed` at the same
    version), so the store lets one through and the other's retry finds the claim taken."""
    claim_id = claim_id_for(chain_id, tx_hash)
    claim = unit.find(TxClaim, claim_id)
    if claim is None:
        unit.add(TxClaim(id=claim_id, tx_hash=tx_hash, purchase_id=payment_id))
        return True
    if claim.purchase_id not in (None, payment_id):
        return False
    claim.claim_for(payment_id)
    return True


def check_unclaimed(unit: UnitOfWork, chain_id: int, payment_id: UUID, tx_hash: str) -> None:
    """Refuse at once a transaction that already settled another payment (409)."""
    claim = unit.find(TxClaim, claim_id_for(chain_id, tx_hash))
    if claim is not None and claim.purchase_id not in (None, payment_id):
        raise TxAlreadyClaimedError(
            "this transaction already settled another purchase, deposit or withdrawal"
        )


def settle_withdrawal(
    event_log: EventLog,
    context: CommandContext,
    *,
    payment_id: UUID,
    observation: DepositObservation | None,
    policy: DepositPolicy,
) -> Written[PaymentState]:
    """Apply what the chain says to a withdrawal's reported transaction, judged by
    `assess` on the withdrawal's terms. Verified: the transaction is claimed and the
    pending transfer posts (the user's posted balance drops, `treasury:outgoing` grows) in
    the transaction that records it. Rejected: the withdrawal is authorized again, for a
    new lease. Pending: recorded when something changed."""

    def decide(unit: UnitOfWork) -> PaymentState:
        withdrawal = unit.get(Withdrawal, payment_id)
        if not withdrawal.verifying or withdrawal.tx_hash is None:
            return PaymentState.of_withdrawal(withdrawal)
        terms = withdrawal.terms
        assert withdrawal.reported_at is not None
        assessment = assess_and_claim(
            unit,
            observation,
            terms,
            policy,
            now=context.occurred_at,
            pending_since=withdrawal.reported_at,
            payment_id=withdrawal.id,
            tx_hash=withdrawal.tx_hash,
        )
        withdrawal.record(
            assessment,
            observation.block_number if observation else None,
            observation.block_hash if observation else None,
        )
        if withdrawal.status == WithdrawalStatus.POSTED:
            # After the withdrawal's own event, so its `Verified` precedes the posting.
            post_pending(unit, withdrawal.transfer_id)
        return PaymentState.of_withdrawal(withdrawal)

    return event_log.execute(context, decide)


def credit(unit: UnitOfWork, payment: PaymentAggregate) -> None:
    """What a verified payment is worth: a purchase is granted, a deposit lands on the
    balance (treasury -> the user, once: the transfer's id comes from the deposit)."""
    if isinstance(payment, Purchase):
        grant(unit, payment, unit.get(AuditionQuote, payment.quote_id))
        return
    post_transfer(
        unit, f"deposit:{payment.id}", TREASURY, user_account(payment.user_id), payment.paid_minor
    )


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


# --- deposit confirmation: ask the node about a payment's transaction, then settle it ---
# The same path serves a new purchase or deposit (right after it is recorded) and the
# poller job that re-checks pending ones; the node's answer is fetched outside any
# transaction and handed to the command.

DEPOSIT_JOB = "deposit_confirmations"


def confirm(
    event_log: EventLog,
    context: CommandContext,
    node: DepositObserver,
    policy: DepositPolicy,
    payment_id: UUID,
) -> Written[PaymentState]:
    """Ask the node about a payment's transaction (a purchase's, a deposit's, or the one
    reported for a withdrawal), then settle it with the answer."""
    chain_transfer: PaymentAggregate | Withdrawal = event_log.repository.get(payment_id)
    tx_hash: str | None = chain_transfer.tx_hash
    observation = node.observe_deposit(tx_hash) if tx_hash else None
    settling = settle_withdrawal if isinstance(chain_transfer, Withdrawal) else settle
    return settling(
        event_log, context, payment_id=payment_id, observation=observation, policy=policy
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
) -> Written[PaymentState]:
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
    return confirm_if_pending(event_log, context, node, policy, written)


def deposit(
    event_log: EventLog,
    context: CommandContext,
    node: DepositObserver,
    policy: DepositPolicy,
    *,
    user_id: UUID,
    key: str,
    terms: DepositTerms,
    tx_hash: str,
) -> Written[PaymentState]:
    """Record the deposit, then, while it is pending, ask the chain about it at once."""
    written = submit_deposit(
        event_log,
        context,
        user_id=user_id,
        key=key,
        terms=terms,
        tx_hash=tx_hash,
        max_pending=policy.max_pending_per_user,
    )
    return confirm_if_pending(event_log, context, node, policy, written)


def confirm_if_pending(
    event_log: EventLog,
    context: CommandContext,
    node: DepositObserver,
    policy: DepositPolicy,
    written: Written[PaymentState],
) -> Written[PaymentState]:
    if written.result.status is not PurchaseStatus.PENDING:
        return written
    checked = confirm(event_log, context, node, policy, written.result.payment_id)
    return Written(checked.result, max(written.position, checked.position))


DEPOSIT_VERIFICATION = "deposit_verification"
"""The job queue's kind for one purchase's or deposit's check that failed."""
WITHDRAWAL_VERIFICATION = "withdrawal_verification"
"""The job queue's kind for one withdrawal's reported transaction's check that failed."""
NODE_FAILURES = (Reason.RPC_UNAVAILABLE, Reason.RPC_WRONG_CHAIN)
"""Pending because the node failed us for this tx, not because the chain is not final yet:
a failure of the check, retried with backoff (waiting for confirmations is not)."""


@dataclass(frozen=True)
class DepositConfirmations:
    """The poller job: re-check every pending purchase and deposit, and every withdrawal
    whose reported transaction is being verified; a round answers how many settled.

    With `retries` (the job queue), a payment whose check fails (the node errored for its
    tx, or anything unexpected) is retried after a capped, jittered backoff of its own and
    becomes a dead letter after the last attempt (`services/dead_letters.py`); until its
    retry is due, while it is dead, and for good once discarded, the rounds pass it by.
    The others carry on."""

    event_log: EventLog
    node: DepositObserver
    policy: DepositPolicy
    pending: Callable[[], list[UUID]]
    clock: Clock
    retries: JobQueue | None = None

    def __call__(self) -> int:
        settled = 0
        payments = self.pending()
        failed_before = self._open([str(payment_id) for payment_id in payments])
        for payment_id in payments:
            retry = failed_before.get(str(payment_id))
            if retry is not None and retry[0].is_held(retry[1]):
                continue
            context = job_context(DEPOSIT_JOB, self.clock, str(payment_id))
            try:
                state = confirm(self.event_log, context, self.node, self.policy, payment_id)
            except Exception as error:
                # One payment that cannot be settled must not hold up the others.
                log.exception("could not settle payment %s", payment_id)
                self._failed(payment_id, f"{type(error).__name__}: {error}")
                continue
            result = state.result
            if result.status is PurchaseStatus.PENDING and result.reason in NODE_FAILURES:
                self._failed(
                    payment_id, f"the EVM node failed for {result.tx_hash}: {result.reason}"
                )
                continue
            if retry is not None:
                self._succeeded(retry[0], payment_id, result)
            settled += result.status != "pending_confirmations"
        return settled

    def _open(self, subjects: list[str]) -> dict[str, tuple[RetriedWork, JobRow]]:
        """The payments that failed before, with their open rows."""
        if self.retries is None:
            return {}
        found: dict[str, tuple[RetriedWork, JobRow]] = {}
        for kind in (DEPOSIT_VERIFICATION, WITHDRAWAL_VERIFICATION):
            work = RetriedWork(self.retries, kind, discard_is_final=True)
            found |= {subject: (work, row) for subject, row in work.open(subjects).items()}
        return found

    def _failed(self, payment_id: UUID, error: str) -> None:
        if self.retries is None:
            return
        work = RetriedWork(self.retries, self._kind_of(payment_id), discard_is_final=True)
        try:
            work.failed(str(payment_id), error, {"payment_id": str(payment_id)})
        except Exception:  # the database away: this payment is simply checked again
            log.exception("could not record the failed check of payment %s", payment_id)

    @staticmethod
    def _succeeded(work: RetriedWork, payment_id: UUID, result: PaymentState) -> None:
        try:
            work.succeeded(str(payment_id), {"status": str(result.status)})
        except Exception:  # the database away: the next round closes it
            log.exception("could not close the retry of payment %s", payment_id)

    def _kind_of(self, payment_id: UUID) -> str:
        try:
            loaded: object = self.event_log.repository.get(payment_id)
        except Exception:
            return DEPOSIT_VERIFICATION
        return WITHDRAWAL_VERIFICATION if isinstance(loaded, Withdrawal) else DEPOSIT_VERIFICATION
