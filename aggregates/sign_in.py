"""Sign-In with Ethereum: the single-use nonce, and every check on the signed message.

The `siwe` package parses and checks signatures, domain and time window; it does not
check chain id, URI or how old `issued-at` is, so those are checked here too. The time
is passed in; nothing here reads the clock.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.errors import AuthenticationFailedError, InvalidCommandError

# abnf warns about siwe's grammar as siwe compiles it; the grammar works, the noise does not.
warnings.filterwarnings("ignore", message="rule '.*' redefines")
import siwe  # noqa: E402

STATEMENT = "Sign in to Pump Party."
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
MAX_MESSAGE_LENGTH = 1024
"""Our own messages are about 250 characters plus the domain and the URI (about 300 with
the defaults); anything longer is refused before the (slow, pure-Python) EIP-4361 grammar
ever sees it: by the request schema, and again here."""
_PREAMBLE = " wants you to sign in with your Ethereum account:"
_NONCE_LINE = re.compile(r"\nNonce: [A-Za-z0-9]{8,}\n")


class SiweMessageMalformedError(InvalidCommandError):
    code = "siwe-message-malformed"


class SiweSignatureMalformedError(InvalidCommandError):
    code = "siwe-signature-malformed"


class SiweDomainMismatchError(AuthenticationFailedError):
    code = "siwe-domain-mismatch"


class SiweUriMismatchError(AuthenticationFailedError):
    code = "siwe-uri-mismatch"


class SiweChainMismatchError(AuthenticationFailedError):
    code = "siwe-chain-mismatch"


class SiweExpiredError(AuthenticationFailedError):
    code = "siwe-expired"


class SiweNotYetValidError(AuthenticationFailedError):
    code = "siwe-not-yet-valid"


class SiweStaleError(AuthenticationFailedError):
    code = "siwe-stale"


class SiweSignatureInvalidError(AuthenticationFailedError):
    code = "siwe-signature-invalid"


class NonceUnknownError(AuthenticationFailedError):
    code = "siwe-nonce-unknown"


class NonceUsedError(AuthenticationFailedError):
    code = "siwe-nonce-used"


class NonceExpiredError(AuthenticationFailedError):
    code = "siwe-nonce-expired"


def nonce_id(nonce: str) -> UUID:
    return derive_id("SignInNonce", nonce)


class SignInNonce(DomainAggregate):
    class Issued(DomainAggregate.Created):
        address: str
        expires_at: datetime

    class Consumed(DomainAggregate.Event):
        pass

    @event(Issued)
    def __init__(self, id: UUID, address: str, expires_at: datetime) -> None:
        self.address = address
        self.expires_at = expires_at
        self.used = False

    def consume(self, address: str, now: datetime) -> None:
        if address != self.address:
            raise NonceUnknownError("this nonce was not issued for this wallet")
        if self.used:
            raise NonceUsedError("this nonce was already used")
        if now >= self.expires_at:
            raise NonceExpiredError("this nonce has expired; ask for a new one")
        self._consumed()

    @event(Consumed)
    def _consumed(self) -> None:
        self.used = True


@dataclass(frozen=True)
class SiweExpectations:
    domain: str
    uri: str
    chain_id: int
    max_age: timedelta
    clock_skew: timedelta = timedelta(seconds=60)


def sign_in_message(
    expected: SiweExpectations, address: str, nonce: str, issued_at: datetime, expires_at: datetime
) -> str:
    """The exact text the wallet signs."""
    return siwe.SiweMessage(
        domain=expected.domain,
        address=address,
        uri=expected.uri,
        version="1",
        chain_id=expected.chain_id,
        issued_at=siwe.siwe.ISO8601Datetime.from_datetime(issued_at),
        expiration_time=siwe.siwe.ISO8601Datetime.from_datetime(expires_at),
        nonce=nonce,
        statement=STATEMENT,
    ).prepare_message()


def check_message(
    message: str, signature: str, expected: SiweExpectations, now: datetime
) -> siwe.SiweMessage:
    """Every check but the nonce's (that one needs the stored nonce).

    The cheap checks (size, signature shape, domain, URI, a nonce line) come first, on the
    raw text, so a message that cannot be ours never reaches the grammar."""
    precheck(message, signature, expected)
    parsed = _parse(message)
    if parsed.domain != expected.domain:
        raise SiweDomainMismatchError(f"the message is for {parsed.domain!r}, not this service")
    if parsed.uri != expected.uri:
        raise SiweUriMismatchError("the message's URI is not this service's")
    if parsed.chain_id != expected.chain_id:
        raise SiweChainMismatchError(
            f"the message is for chain {parsed.chain_id}, not {expected.chain_id}"
        )
    issued_at = datetime.fromisoformat(str(parsed.issued_at).replace("Z", "+00:00"))
    if issued_at > now + expected.clock_skew:
        raise SiweNotYetValidError("the message was issued in the future")
    if issued_at < now - expected.max_age:
        raise SiweStaleError("the message was issued too long ago")
    try:
        parsed.verify(signature, domain=expected.domain, timestamp=now)
    except siwe.ExpiredMessage:
        raise SiweExpiredError("the message has expired") from None
    except siwe.NotYetValidMessage:
        raise SiweNotYetValidError("the message is not valid yet") from None
    except siwe.VerificationError:
        raise SiweSignatureInvalidError("the signature is not the message's wallet's") from None
    return parsed


def precheck(message: str, signature: str, expected: SiweExpectations) -> None:
    """String checks that refuse what cannot be one of our messages, in microseconds."""
    if len(message) > MAX_MESSAGE_LENGTH:
        raise SiweMessageMalformedError(
            f"the message is longer than {MAX_MESSAGE_LENGTH} characters"
        )
    if not _SIGNATURE.match(signature):
        raise SiweSignatureMalformedError("the signature is not 65 bytes of hex")
    first_line = message.split("\n", 1)[0]
    if not first_line.endswith(_PREAMBLE):
        raise SiweMessageMalformedError("the message is not an EIP-4361 message")
    domain = first_line[: -len(_PREAMBLE)]
    if domain != expected.domain:
        raise SiweDomainMismatchError(f"the message is for {domain[:100]!r}, not this service")
    if "\nURI: " not in message:
        raise SiweMessageMalformedError("the message has no URI")
    if f"\nURI: {expected.uri}\n" not in message:
        raise SiweUriMismatchError("the message's URI is not this service's")
    if not _NONCE_LINE.search(message):
        raise SiweMessageMalformedError("the message has no nonce")


def _parse(message: str) -> siwe.SiweMessage:
    try:
        parsed = siwe.SiweMessage.from_message(message)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise SiweMessageMalformedError("the message is not an EIP-4361 message") from None
    # `verify` checks the signature over the re-serialised message: insist they agree.
    if parsed.prepare_message() != message:
        raise SiweMessageMalformedError("the message is not in canonical EIP-4361 form")
    return parsed
