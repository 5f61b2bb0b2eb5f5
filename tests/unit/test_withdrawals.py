"""The `Withdrawal` aggregate without a database: maker-checker, leases and fencing tokens,
and the deposit verifier reversed (the treasury to the wallet, exactly the amount)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from aggregates.base import CommandContext, acting
from aggregates.payouts import MakerCannotApproveError
from aggregates.purchases import DepositObservation, PurchaseStatus, Reason, TransferLog, assess
from aggregates.withdrawals import (
    StaleFencingTokenError,
    Withdrawal,
    WithdrawalNotLeasableError,
    WithdrawalNotLeasedError,
)

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
WALLET = "0x00000000000000000000000000000000000000aa"
TREASURY = "0x00000000000000000000000000000000000000bb"
USDC = "0x00000000000000000000000000000000000000cc"
MAKER = "user:RETRO-CLOCK"


def at(moment: datetime, actor: str = MAKER) -> CommandContext:
    return CommandContext(actor=actor, occurred_at=moment, correlation_id="c")


def requested(amount: int = 20_000_000, auto_below: int = 50_000_000) -> Withdrawal:
    with acting(at(NOW)):
        return Withdrawal.request(
            id=uuid4(),
            user_id=uuid4(),
            maker=MAKER,
            wallet=WALLET,
            amount_minor=amount,
            chain_id=8453,
            token_contract=USDC,
            treasury_address=TREASURY,
            auto_approve_below_minor=auto_below,
            request_fingerprint="f",
        )


def leased(withdrawal: Withdrawal, moment: datetime = NOW) -> Withdrawal:
    with acting(at(moment, "service:custody")):
        withdrawal.lease("service:custody", moment, MINUTE)
    return withdrawal


def paid(value: int, *, sender: str = TREASURY, recipient: str = WALLET) -> DepositObservation:
    return DepositObservation(
        chain_id=8453,
        head_block=105,
        tx_known=True,
        receipt_status=1,
        block_number=100,
        block_hash="0xaa",
        canonical_block_hash="0xaa",
        block_time=NOW + MINUTE,
        transfers=[TransferLog(USDC, sender, recipient, value, 3)],
    )


def judged(observation: DepositObservation) -> tuple[PurchaseStatus, Reason | None]:
    result = assess(
        observation,
        requested().terms,
        min_confirmations=3,
        now=NOW,
        pending_since=NOW,
        pending_timeout=timedelta(hours=1),
    )
    return result.status, result.reason


def test_below_the_threshold_it_is_authorized_at_once_and_from_it_it_awaits_approval() -> None:
    assert requested(49_999_999).status == "authorized"
    assert requested(50_000_000).status == "awaiting_approval"


def test_the_maker_cannot_approve_but_another_admin_can() -> None:
    withdrawal = requested(60_000_000)

    with acting(at(NOW)), pytest.raises(MakerCannotApproveError):
        withdrawal.approve(MAKER, "mine")
    with acting(at(NOW, "user:admin")):
        withdrawal.approve("user:admin", "checked")

    assert withdrawal.status == "authorized"


def test_each_lease_has_a_higher_token_and_a_held_lease_is_not_leased_again() -> None:
    withdrawal = leased(requested())

    with acting(at(NOW)), pytest.raises(WithdrawalNotLeasableError):
        withdrawal.lease("service:other", NOW + MINUTE / 2, MINUTE)
    leased(withdrawal, NOW + MINUTE)

    assert withdrawal.fencing_token == 2


def test_only_the_latest_token_may_report_or_cancel() -> None:
    withdrawal = leased(leased(requested()), NOW + MINUTE)

    with acting(at(NOW)), pytest.raises(StaleFencingTokenError):
        withdrawal.execute(1, "0x01", NOW)
    with acting(at(NOW)), pytest.raises(StaleFencingTokenError):
        withdrawal.cancel(1, "stale")
    with acting(at(NOW)):
        reported = withdrawal.execute(2, "0x01", NOW)
        repeated = withdrawal.execute(2, "0x01", NOW)

    assert (reported, repeated, withdrawal.status) == (True, False, "executed")
    with acting(at(NOW)), pytest.raises(WithdrawalNotLeasedError):
        withdrawal.execute(2, "0x02", NOW)


def test_the_verifier_reversed_wants_the_treasury_to_the_wallet_exactly() -> None:
    assert judged(paid(20_000_000)) == (PurchaseStatus.VERIFIED, None)
    assert judged(paid(20_000_001)) == (PurchaseStatus.REJECTED, Reason.AMOUNT_TOO_HIGH)
    assert judged(paid(19_999_999)) == (PurchaseStatus.REJECTED, Reason.AMOUNT_TOO_LOW)
    assert judged(paid(20_000_000, recipient=TREASURY)) == (
        PurchaseStatus.REJECTED,
        Reason.WRONG_RECIPIENT,
    )
    assert judged(paid(20_000_000, sender=WALLET)) == (
        PurchaseStatus.REJECTED,
        Reason.WRONG_SENDER,
    )


def test_a_refused_tx_makes_it_leasable_again_and_a_verified_one_posts_it() -> None:
    refused = leased(requested())
    verified = leased(requested())
    wrong = assess(
        paid(1),
        refused.terms,
        min_confirmations=3,
        now=NOW,
        pending_since=NOW,
        pending_timeout=timedelta(hours=1),
    )
    right = assess(
        paid(20_000_000),
        verified.terms,
        min_confirmations=3,
        now=NOW,
        pending_since=NOW,
        pending_timeout=timedelta(hours=1),
    )

    with acting(at(NOW, "service:custody")):
        for withdrawal, assessment in ((refused, wrong), (verified, right)):
            withdrawal.execute(1, "0x01", NOW)
            withdrawal.record(assessment, 100, "0xaa")

    assert (refused.status, refused.reason, refused.leasable(NOW)) == (
        "authorized",
        "amount-too-low",
        True,
    )
    assert (verified.status, verified.paid_minor) == ("posted", 20_000_000)
