"""The user account's guard, two-phase transfers, and the ids every transfer and account
is found by."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from aggregates.base import CommandContext, acting, derive_id
from aggregates.ledger import (
    InsufficientFundsError,
    PendingTransfer,
    Transfer,
    TransferAlreadyResolvedError,
    UserAccount,
    transfer_id,
    user_account,
    user_account_id,
)

CONTEXT = CommandContext(
    actor="t", occurred_at=datetime(2026, 11, 25, tzinfo=UTC), correlation_id="c"
)
USER = UUID("6c1b2f4e-0d1a-4c3b-9e8f-7a6b5c4d3e2f")


def account_with(balance: int) -> UserAccount:
    with acting(CONTEXT):
        account = UserAccount(id=user_account_id(USER), user_id=USER)
        if balance:
            account.credit(uuid4(), balance)
    account.collect_events()
    return account


def test_ids_come_from_their_keys_and_never_change() -> None:
    # Stored transfers and accounts are found again by these ids: they are fixed forever.
    assert user_account_id(USER) == derive_id("UserAccount", str(USER))
    assert transfer_id("deposit:p-1") == derive_id("Transfer", "deposit:p-1")
    assert transfer_id("deposit:p-1") != transfer_id("deposit:p-2")
    assert user_account_id(USER) != user_account_id(uuid4())
    assert user_account(USER) == f"user:{USER}"


def test_a_credit_raises_the_balance_and_records_its_transfer() -> None:
    account = account_with(0)
    posted = uuid4()

    with acting(CONTEXT):
        account.credit(posted, 7)
    [credited] = account.collect_events()

    assert account.balance_minor == 7
    assert isinstance(credited, UserAccount.Credited)
    assert (credited.transfer_id, credited.amount_minor) == (posted, 7)


def test_a_debit_of_the_whole_balance_is_allowed_and_records_its_transfer() -> None:
    account = account_with(7)
    posted = uuid4()

    with acting(CONTEXT):
        account.debit(posted, 7)
    [debited] = account.collect_events()

    assert account.balance_minor == 0
    assert isinstance(debited, UserAccount.Debited)
    assert (debited.transfer_id, debited.amount_minor) == (posted, 7)


def test_a_debit_beyond_the_balance_is_refused_and_changes_nothing() -> None:
    account = account_with(7)

    with acting(CONTEXT), pytest.raises(InsufficientFundsError) as refused:
        account.debit(uuid4(), 8)

    assert str(refused.value) == "available 7 is less than 8 (minor units)"
    assert account.balance_minor == 7 and account.collect_events() == []


def test_replay_gives_the_same_balance() -> None:
    account = account_with(0)
    with acting(CONTEXT):
        account.credit(uuid4(), 10)
        account.debit(uuid4(), 4)
        events = account.collect_events()

    replayed = account_with(0)
    for event in events:
        event.mutate(replayed)

    assert replayed.balance_minor == account.balance_minor == 6


def test_a_transfer_records_both_sides_and_the_amount() -> None:
    with acting(CONTEXT):
        transfer = Transfer(
            id=transfer_id("c"), cause="c", debit_account="a", credit_account="b", amount_minor=5
        )

    assert (transfer.cause, transfer.debit_account, transfer.credit_account) == ("c", "a", "b")
    assert transfer.amount_minor == 5


def test_a_reservation_holds_money_out_of_what_is_available_not_what_is_posted() -> None:
    account = account_with(10)
    held = uuid4()

    with acting(CONTEXT):
        account.reserve(held, 6)
        with pytest.raises(InsufficientFundsError):
            account.debit(uuid4(), 5)  # 4 is available
        with pytest.raises(InsufficientFundsError):
            account.reserve(uuid4(), 5)
        account.debit(uuid4(), 4)

    assert (account.balance_minor, account.reserved_minor, account.available_minor) == (6, 6, 0)


def test_a_reservation_posts_in_full_or_is_released() -> None:
    account = account_with(10)
    posted, released = uuid4(), uuid4()

    with acting(CONTEXT):
        account.reserve(posted, 3)
        account.reserve(released, 5)
        account.post_reservation(posted, 3)
        account.release(released, 5)

    assert (account.balance_minor, account.reserved_minor, account.available_minor) == (7, 0, 7)


def pending(expires_at: datetime | None = None) -> PendingTransfer:
    with acting(CONTEXT):
        return PendingTransfer(
            id=uuid4(),
            cause="payout:1",
            debit_account="race:1:escrow",
            credit_account=f"user:{USER}",
            amount_minor=9,
            expires_at=expires_at,
        )


@pytest.mark.parametrize("first", ["post", "void"])
@pytest.mark.parametrize("second", ["post", "void"])
def test_a_pending_transfer_resolves_exactly_once(first: str, second: str) -> None:
    transfer = pending()

    with acting(CONTEXT):
        transfer.post() if first == "post" else transfer.void("rejected")
        with pytest.raises(TransferAlreadyResolvedError):
            transfer.post() if second == "post" else transfer.void("again")

    assert transfer.status == ("posted" if first == "post" else "voided")
    assert [type(e).__name__ for e in transfer.collect_events()] == [
        "Reserved",
        "Posted" if first == "post" else "Voided",
    ]


def test_a_pending_transfer_expires_only_by_the_time_a_command_gives_it() -> None:
    deadline = datetime(2026, 11, 26, tzinfo=UTC)
    transfer = pending(expires_at=deadline)

    assert not transfer.expired(datetime(2026, 11, 25, 23, 59, tzinfo=UTC))
    assert transfer.expired(deadline)
    assert not pending().expired(deadline)
    with acting(CONTEXT):
        transfer.post()
    assert not transfer.expired(deadline)  # resolved: nothing left to expire
