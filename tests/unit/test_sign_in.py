from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aggregates.sign_in import (
    SiweChainMismatchError,
    SiweDomainMismatchError,
    SiweExpectations,
    SiweExpiredError,
    SiweMessageMalformedError,
    SiweNotYetValidError,
    SiweSignatureInvalidError,
    SiweSignatureMalformedError,
    SiweStaleError,
    SiweUriMismatchError,
    check_message,
    sign_in_message,
)
from tests.support.wallets import new_wallet, sign

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
EXPECTED = SiweExpectations(
    "ledger.example:443", "https://ledger.example/login", 8453, timedelta(minutes=10)
)
WALLET = new_wallet()
NONCE = "a1b2c3d4e5f6a7b8"


def signed(
    expected: SiweExpectations = EXPECTED,
    issued: datetime = NOW,
    lasts: timedelta = timedelta(minutes=10),
) -> tuple[str, str]:
    message = sign_in_message(expected, WALLET.address, NONCE, issued, issued + lasts)
    return message, sign(WALLET, message)


def test_a_good_message_passes() -> None:
    message, signature = signed()

    assert check_message(message, signature, EXPECTED, NOW).address == WALLET.address


@pytest.mark.parametrize(
    ("expected", "error"),
    [
        (replace(EXPECTED, domain="evil.example"), SiweDomainMismatchError),
        (replace(EXPECTED, uri="https://ledger.example/other"), SiweUriMismatchError),
        (replace(EXPECTED, chain_id=1), SiweChainMismatchError),
    ],
)
def test_a_message_for_another_place_is_refused(
    expected: SiweExpectations, error: type[Exception]
) -> None:
    message, signature = signed(expected)

    with pytest.raises(error):
        check_message(message, signature, EXPECTED, NOW)


def test_an_expired_message_is_refused() -> None:
    message, signature = signed(issued=NOW - timedelta(minutes=5), lasts=timedelta(minutes=1))

    with pytest.raises(SiweExpiredError):
        check_message(message, signature, EXPECTED, NOW)


def test_a_message_from_the_future_is_refused() -> None:
    message, signature = signed(issued=NOW + timedelta(minutes=5))

    with pytest.raises(SiweNotYetValidError):
        check_message(message, signature, EXPECTED, NOW)


def test_a_message_with_not_before_ahead_is_refused() -> None:
    message = signed()[0].replace(
        "Expiration Time: 2026-11-25T12:10:00.000Z",
        "Expiration Time: 2026-11-25T12:10:00.000Z\nNot Before: 2026-11-25T12:05:00.000Z",
    )

    with pytest.raises(SiweNotYetValidError):
        check_message(message, sign(WALLET, message), EXPECTED, NOW)


def test_a_stale_message_is_refused() -> None:
    message, signature = signed(issued=NOW - timedelta(hours=1), lasts=timedelta(hours=2))

    with pytest.raises(SiweStaleError):
        check_message(message, signature, EXPECTED, NOW)


def test_a_signature_from_another_key_is_refused() -> None:
    message, _ = signed()

    with pytest.raises(SiweSignatureInvalidError):
        check_message(message, sign(new_wallet(), message), EXPECTED, NOW)


@pytest.mark.parametrize("text", ["", "hello", "ledger.example:443 wants you to sign in"])
def test_a_malformed_message_is_refused(text: str) -> None:
    with pytest.raises(SiweMessageMalformedError):
        check_message(text, signed()[1], EXPECTED, NOW)


@pytest.mark.parametrize("signature", ["", "0x1234", "zz" * 65, "0x" + "g" * 130])
def test_a_malformed_signature_is_refused(signature: str) -> None:
    with pytest.raises(SiweSignatureMalformedError):
        check_message(signed()[0], signature, EXPECTED, NOW)
