from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from aggregates.base import CommandContext, acting
from aggregates.purchases import (
    AuditionQuote,
    DepositObservation,
    PurchaseStatus,
    Reason,
    TransferLog,
    assess,
)

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
PAYER = "0x00000000000000000000000000000000000000aa"
TREASURY = "0x00000000000000000000000000000000000000bb"
USDC = "0x00000000000000000000000000000000000000cc"

with acting(CommandContext(actor="t", occurred_at=NOW, correlation_id="c")):
    QUOTE = AuditionQuote(
        id=uuid4(),
        user_id=uuid4(),
        payer=PAYER,
        amount_minor=25_000_000,
        token_contract=USDC,
        chain_id=8453,
        treasury_address=TREASURY,
        expires_at=NOW + timedelta(minutes=30),
    )

PAYMENT = TransferLog(
    token=USDC, sender=PAYER, recipient=TREASURY, value_minor=25_000_000, log_index=3
)


def seen(**changes: object) -> DepositObservation:
    values: dict[str, object] = {
        "chain_id": 8453,
        "head_block": 105,
        "tx_known": True,
        "receipt_status": 1,
        "block_number": 100,
        "block_hash": "0xaa",
        "canonical_block_hash": "0xaa",
        "block_time": NOW,
        "transfers": [PAYMENT],
    }
    values.update(changes)
    return DepositObservation(**values)  # type: ignore[arg-type]


def judge(
    observation: DepositObservation | None, *, waited: timedelta = timedelta(0)
) -> tuple[PurchaseStatus, Reason | None]:
    result = assess(
        observation,
        QUOTE,
        min_confirmations=6,
        now=NOW + waited,
        pending_since=NOW,
        pending_timeout=timedelta(hours=1),
    )
    return result.status, result.reason


def test_enough_confirmations_verify() -> None:
    assert judge(seen()) == (PurchaseStatus.VERIFIED, None)


def test_one_confirmation_short_waits() -> None:
    assert judge(seen(head_block=104)) == (PurchaseStatus.PENDING, Reason.AWAITING_CONFIRMATIONS)


@pytest.mark.parametrize(
    ("payment", "reason"),
    [
        (TransferLog(USDC, PAYER, TREASURY, 24_999_999, 3), Reason.AMOUNT_TOO_LOW),
        (TransferLog(USDC, PAYER, PAYER, 25_000_000, 3), Reason.WRONG_RECIPIENT),
        (TransferLog(USDC, TREASURY, TREASURY, 25_000_000, 3), Reason.WRONG_SENDER),
        (TransferLog(PAYER, PAYER, TREASURY, 25_000_000, 3), Reason.WRONG_TOKEN),
    ],
)
def test_the_wrong_transfer_is_rejected(payment: TransferLog, reason: Reason) -> None:
    assert judge(seen(transfers=[payment])) == (PurchaseStatus.REJECTED, reason)


def test_uncertain_answers_wait_then_time_out() -> None:
    assert judge(seen(receipt_status=None, block_number=None)) == (
        PurchaseStatus.PENDING,
        Reason.NOT_MINED,
    )
    assert judge(seen(canonical_block_hash="0xbb")) == (PurchaseStatus.PENDING, Reason.REORGED)
    assert judge(seen(canonical_block_hash="0xbb"), waited=timedelta(hours=2)) == (
        PurchaseStatus.REJECTED,
        Reason.REORGED,
    )


def test_no_node_never_verifies_nor_rejects() -> None:
    assert judge(None, waited=timedelta(days=3)) == (PurchaseStatus.PENDING, Reason.RPC_UNAVAILABLE)


def test_a_node_on_another_chain_is_never_believed() -> None:
    assert judge(seen(chain_id=1)) == (PurchaseStatus.PENDING, Reason.RPC_WRONG_CHAIN)


def test_a_transfer_mined_after_the_quote_expired_is_rejected() -> None:
    assert judge(seen(block_time=NOW + timedelta(minutes=31))) == (
        PurchaseStatus.REJECTED,
        Reason.QUOTE_EXPIRED,
    )
