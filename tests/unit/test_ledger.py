"""The user account's guard and the ids every transfer and account is found by."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from aggregates.base import CommandContext, acting, derive_id
from aggregates.ledger import (
    InsufficientFundsError,
    Transfer,
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

    assert str(refused.value) == "balance 7 is less than 8 (minor units)"
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
