from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aggregates.base import CommandContext, acting, derive_id
from aggregates.sign_in import (
    STATEMENT,
    NonceExpiredError,
    NonceUnknownError,
    NonceUsedError,
    SignInNonce,
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
    nonce_id,
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


# --- mutation gaps: the nonce, the statement, the edges of the time window ------------------
# Two mutants in `check_message` are equivalent and survive by design:
# - `.replace("Z", "+00:00")` rewritten (to "XXZXX" or "z"): Python 3.11's
#   `datetime.fromisoformat` reads a trailing "Z" itself, so the replace changes nothing.
# - `parsed.verify(..., domain=None)` or without `domain=`: the domain was compared with
#   the expected one just before, so siwe's own domain check can never refuse anything more.


def issued_nonce(address: str = WALLET.address) -> SignInNonce:
    with acting(CommandContext(actor="t", occurred_at=NOW, correlation_id="c")):
        nonce = SignInNonce(
            id=nonce_id(NONCE), address=address, expires_at=NOW + timedelta(minutes=10)
        )
    nonce.collect_events()
    return nonce


def consume(nonce: SignInNonce, address: str = WALLET.address, now: datetime = NOW) -> None:
    with acting(CommandContext(actor="t", occurred_at=now, correlation_id="c")):
        nonce.consume(address, now)


def test_a_nonces_id_comes_from_the_nonce() -> None:
    assert nonce_id(NONCE) == derive_id("SignInNonce", NONCE)
    assert nonce_id(NONCE) != nonce_id("b" * 16)


def test_a_nonce_is_consumed_once_by_its_own_wallet_before_it_expires() -> None:
    nonce = issued_nonce()

    consume(nonce, now=NOW + timedelta(minutes=10) - timedelta(microseconds=1))
    [consumed] = nonce.collect_events()

    assert isinstance(consumed, SignInNonce.Consumed) and nonce.used
    with pytest.raises(NonceUsedError):
        consume(nonce)


def test_a_nonce_for_another_wallet_is_unknown_and_stays_unused() -> None:
    nonce = issued_nonce()

    with pytest.raises(NonceUnknownError):
        consume(nonce, address=new_wallet().address)

    assert not nonce.used and nonce.collect_events() == []
    consume(nonce)  # its own wallet still can


def test_a_nonce_expires_at_its_expiry_time() -> None:
    nonce = issued_nonce()

    with pytest.raises(NonceExpiredError):
        consume(nonce, now=NOW + timedelta(minutes=10))

    assert not nonce.used


def test_the_message_carries_the_statement_the_wallet_shows() -> None:
    assert f"\n\n{STATEMENT}\n\n" in signed()[0]
    assert check_message(*signed(), EXPECTED, NOW).statement == STATEMENT


def test_a_message_issued_at_the_edges_of_the_window_passes() -> None:
    at_skew = signed(issued=NOW + EXPECTED.clock_skew)
    at_max_age = signed(issued=NOW - EXPECTED.max_age, lasts=EXPECTED.max_age * 2)

    assert check_message(*at_skew, EXPECTED, NOW).address == WALLET.address
    assert check_message(*at_max_age, EXPECTED, NOW).address == WALLET.address


def test_a_message_for_another_chain_says_which() -> None:
    message, signature = signed(replace(EXPECTED, chain_id=1))

    with pytest.raises(SiweChainMismatchError) as refused:
        check_message(message, signature, EXPECTED, NOW)

    assert str(refused.value) == "the message is for chain 1, not 8453"
