"""Deposit verification down to each field: what `assess` answers, how a purchase records
it, and how a transaction is claimed by one purchase at a time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from aggregates.base import CommandContext, acting, derive_id
from aggregates.purchases import (
    Assessment,
    DepositObservation,
    Payment,
    Purchase,
    PurchaseStatus,
    Reason,
    TransferLog,
    TxAlreadyClaimedError,
    TxClaim,
    assess,
    claim_id_for,
)
from tests.unit.test_purchases import NOW, PAYER, PAYMENT, QUOTE, TREASURY, USDC, seen

CONTEXT = CommandContext(actor="t", occurred_at=NOW, correlation_id="c")
PAID = Payment(value_minor=25_000_000, log_indexes=(3,))
TIMEOUT = timedelta(hours=1)


def assessed(
    observation: DepositObservation | None, waited: timedelta = timedelta(0)
) -> Assessment:
    return assess(
        observation,
        QUOTE,
        min_confirmations=6,
        now=NOW + waited,
        pending_since=NOW,
        pending_timeout=TIMEOUT,
    )


# --- assess: every field of the answer ------------------------------------------------------


def test_a_verified_deposit_names_its_confirmations_and_what_paid() -> None:
    assert assessed(seen()) == Assessment(PurchaseStatus.VERIFIED, None, 6, PAID)


def test_every_transfer_from_the_payer_counts_once_by_its_log_index() -> None:
    small = TransferLog(USDC, PAYER, TREASURY, 1, 2)

    assert assessed(seen(transfers=[PAYMENT, small])).paid == Payment(25_000_001, (2, 3))
    assert assessed(seen(transfers=[small, PAYMENT, PAYMENT])).paid == Payment(25_000_001, (2, 3))


def test_waiting_for_confirmations_counts_them_and_never_below_zero() -> None:
    assert assessed(seen(head_block=104)) == Assessment(
        PurchaseStatus.PENDING, Reason.AWAITING_CONFIRMATIONS, 5
    )
    # A node whose head is behind the receipt's block (it is still syncing).
    assert assessed(seen(head_block=90)) == Assessment(
        PurchaseStatus.PENDING, Reason.AWAITING_CONFIRMATIONS, 0
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"receipt_status": 0}, Reason.TX_FAILED),
        ({"transfers": []}, Reason.WRONG_TOKEN),
        ({"block_time": NOW + timedelta(minutes=31)}, Reason.QUOTE_EXPIRED),
    ],
)
def test_a_rejection_names_its_reason_and_confirmations(
    changes: dict[str, object], reason: Reason
) -> None:
    assert assessed(seen(**changes)) == Assessment(PurchaseStatus.REJECTED, reason, 6)


def test_a_transfer_mined_before_the_quote_was_made_is_rejected() -> None:
    # Block times are whole seconds: the quote's own second still counts.
    assert assessed(seen(block_time=NOW - timedelta(seconds=1))) == Assessment(
        PurchaseStatus.REJECTED, Reason.TX_BEFORE_QUOTE, 6
    )
    assert assessed(seen(block_time=NOW)).status is PurchaseStatus.VERIFIED


def test_a_transfer_in_the_quotes_last_moment_is_in_time() -> None:
    assert assessed(seen(block_time=QUOTE.expires_at)).status is PurchaseStatus.VERIFIED


def test_a_receipt_without_a_status_is_not_mined_yet() -> None:
    assert assessed(seen(receipt_status=None)) == Assessment(
        PurchaseStatus.PENDING, Reason.NOT_MINED
    )


def test_an_unknown_transaction_waits_then_is_rejected() -> None:
    unknown = seen(tx_known=False, receipt_status=None, block_number=None)

    assert assessed(unknown) == Assessment(PurchaseStatus.PENDING, Reason.TX_UNKNOWN)
    assert assessed(unknown, TIMEOUT * 2) == Assessment(PurchaseStatus.REJECTED, Reason.TX_UNKNOWN)


def test_a_transaction_never_mined_is_rejected_after_the_timeout_not_at_it() -> None:
    unmined = seen(receipt_status=None, block_number=None)

    assert assessed(unmined, TIMEOUT).status is PurchaseStatus.PENDING
    assert assessed(unmined, TIMEOUT + timedelta(seconds=1)) == Assessment(
        PurchaseStatus.REJECTED, Reason.NOT_MINED
    )


# --- a purchase records assessments ---------------------------------------------------------


def new_purchase() -> Purchase:
    with acting(CONTEXT):
        purchase = Purchase(
            id=uuid4(),
            user_id=uuid4(),
            quote_id=QUOTE.id,
            tx_hash="0x" + "ab" * 32,
            request_fingerprint="f",
        )
    purchase.collect_events()
    return purchase


def record(purchase: Purchase, assessment: Assessment, block: int | None = 100) -> list[Any]:
    with acting(CONTEXT):
        purchase.record(assessment, block, None if block is None else "0xaa")
    return list(purchase.collect_events())


def test_a_verified_purchase_records_the_block_the_log_and_what_was_paid() -> None:
    purchase = new_purchase()

    [verified] = record(purchase, Assessment(PurchaseStatus.VERIFIED, None, 6, PAID))

    assert isinstance(verified, Purchase.Verified)
    assert (verified.block_number, verified.block_hash, verified.log_index) == (100, "0xaa", 3)
    assert (verified.paid_minor, verified.confirmations) == (25_000_000, 6)
    assert (purchase.status, purchase.reason) == (PurchaseStatus.VERIFIED, None)
    assert (purchase.paid_minor, purchase.confirmations) == (25_000_000, 6)
    assert not purchase.is_pending


@pytest.mark.parametrize(
    ("paid", "block_number", "block_hash"),
    [(None, 100, "0xaa"), (PAID, None, "0xaa"), (PAID, 100, None)],
)
def test_nothing_is_verified_without_the_transfer_and_its_block(
    paid: Payment | None, block_number: int | None, block_hash: str | None
) -> None:
    purchase = new_purchase()

    with acting(CONTEXT), pytest.raises(AssertionError):
        purchase.record(
            Assessment(PurchaseStatus.VERIFIED, None, 6, paid), block_number, block_hash
        )

    assert purchase.is_pending and purchase.collect_events() == []


def test_a_rejected_purchase_records_its_reason() -> None:
    purchase = new_purchase()

    [rejected] = record(purchase, Assessment(PurchaseStatus.REJECTED, Reason.WRONG_SENDER, 6))

    assert isinstance(rejected, Purchase.Rejected) and rejected.reason == "wrong-sender"
    assert (purchase.status, purchase.reason) == (PurchaseStatus.REJECTED, "wrong-sender")


def test_a_settled_purchase_records_nothing_more() -> None:
    purchase = new_purchase()
    record(purchase, Assessment(PurchaseStatus.REJECTED, Reason.WRONG_SENDER, 6))

    again = record(purchase, Assessment(PurchaseStatus.VERIFIED, None, 6, PAID))
    pending = record(purchase, Assessment(PurchaseStatus.PENDING, Reason.REORGED))

    assert again == pending == []
    assert purchase.status is PurchaseStatus.REJECTED


def test_a_pending_assessment_is_recorded_only_when_something_changed() -> None:
    purchase = new_purchase()
    waiting = Assessment(PurchaseStatus.PENDING, Reason.AWAITING_CONFIRMATIONS, 3)

    [first] = record(purchase, waiting)
    repeated = record(purchase, waiting)
    [closer] = record(
        purchase, Assessment(PurchaseStatus.PENDING, Reason.AWAITING_CONFIRMATIONS, 4)
    )
    [other] = record(purchase, Assessment(PurchaseStatus.PENDING, Reason.RPC_UNAVAILABLE, 4), None)

    assert isinstance(first, Purchase.StillPending)
    assert (first.reason, first.confirmations) == ("awaiting-confirmations", 3)
    assert repeated == []
    assert (closer.reason, closer.confirmations) == ("awaiting-confirmations", 4)
    assert (other.reason, other.confirmations) == ("rpc-unavailable", 4)
    assert (purchase.status, purchase.reason, purchase.confirmations) == (
        PurchaseStatus.PENDING,
        "rpc-unavailable",
        4,
    )


# --- a transaction pays for one purchase ----------------------------------------------------


def test_a_claim_id_comes_from_the_chain_and_the_hash_in_lower_case() -> None:
    assert claim_id_for(8453, "0xABcd") == derive_id("TxClaim", "8453:0xabcd")
    assert claim_id_for(8453, "0xabcd") != claim_id_for(1, "0xabcd")


def claimed(purchase_id: UUID) -> TxClaim:
    with acting(CONTEXT):
        claim = TxClaim(id=claim_id_for(8453, "0xab"), tx_hash="0xab", purchase_id=purchase_id)
    claim.collect_events()
    return claim


def test_a_claim_is_kept_by_its_purchase_and_refused_to_another() -> None:
    first, second = uuid4(), uuid4()
    claim = claimed(first)

    with acting(CONTEXT):
        claim.claim_for(first)  # the same purchase again: nothing to do
        with pytest.raises(TxAlreadyClaimedError) as refused:
            claim.claim_for(second)

    assert str(refused.value) == "this transaction already pays for another purchase"
    assert claim.purchase_id == first and claim.collect_events() == []


def test_a_released_claim_can_be_claimed_by_another_purchase() -> None:
    first, second = uuid4(), uuid4()
    claim = claimed(first)

    with acting(CONTEXT):
        claim.release(second)  # not its purchase: nothing happens
        assert claim.purchase_id == first and claim.collect_events() == []
        claim.release(first)
        [released] = claim.collect_events()
        claim.claim_for(second)
        [reclaimed] = claim.collect_events()

    assert isinstance(released, TxClaim.Released) and released.purchase_id == first
    assert isinstance(reclaimed, TxClaim.Reclaimed) and reclaimed.purchase_id == second
    assert claim.purchase_id == second
