"""Security review (issue 15), M1 and M3: attacks on sign-in, performed over HTTP.

M1: an oversized or foreign message is refused before the (slow) EIP-4361 grammar runs.
M3: nonces are limited per client address only, kept as expiring rows (no event), single
use, and a refused attempt leaves nothing behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

import aggregates.sign_in
from aggregates.sign_in import MAX_MESSAGE_LENGTH, sign_in_message
from api.routers.auth import expectations
from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.support.http import assert_problem
from tests.support.jobs import run_job
from tests.support.wallets import new_wallet, request_nonce, sign


def verify(client: TestClient, message: str, signature: str) -> Any:
    return client.post("/v1/auth/verify", json={"message": message, "signature": signature})


def log_length(services: Services) -> int:
    with psycopg.connect(services.url) as conn:
        row = conn.execute("SELECT count(*) FROM pumpparty_events").fetchone()
    assert row is not None
    return int(row[0])


def message_for(
    client: TestClient, wallet: LocalAccount, nonce: str, clock: FixedClock, **changes: Any
) -> str:
    settings = client.app.state.services.settings  # type: ignore[attr-defined]
    return sign_in_message(
        replace(expectations(settings), **changes),
        wallet.address,
        nonce,
        clock(),
        clock() + timedelta(minutes=5),
    )


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every message that reaches the EIP-4361 grammar (the real parser still runs)."""
    seen: list[str] = []
    real: Callable[[str], Any] = aggregates.sign_in._parse

    def counting(message: str) -> Any:
        seen.append(message)
        return real(message)

    monkeypatch.setattr(aggregates.sign_in, "_parse", counting)
    yield seen


def from_address(client: TestClient, host: str) -> TestClient:
    """Another client address on the same app (and so the same rate limiter)."""
    return TestClient(client.app, client=(host, 40000))


# --- M1: the grammar sees only messages that could be ours ------------------------------


def test_an_oversized_message_is_refused_by_the_schema_unparsed(
    client: TestClient, services: Services, clock: FixedClock, parses: list[str]
) -> None:
    wallet = new_wallet()
    nonce = request_nonce(client, wallet)["nonce"]
    honest = message_for(client, wallet, nonce, clock)
    # Our own message with a statement padded to just past the cap, correctly signed.
    padded = honest.replace("Sign in to Pump Party.", "Sign in. " + "a" * MAX_MESSAGE_LENGTH)
    before = log_length(services)

    refused = assert_problem(verify(client, padded, sign(wallet, padded)), 422, "invalid-request")
    huge = "x" * 4096
    assert_problem(verify(client, huge, "0x" + "00" * 65), 422, "invalid-request")

    assert [e["type"] for e in refused["errors"]] == ["string_too_long"]
    assert parses == []
    assert log_length(services) == before
    # Nothing was consumed: the nonce still signs its wallet in.
    assert verify(client, honest, sign(wallet, honest)).status_code == 200
    assert parses == [honest]


def test_the_cap_leaves_room_for_our_own_messages(client: TestClient) -> None:
    issued = request_nonce(client, new_wallet())

    assert len(issued["message"]) + 300 <= MAX_MESSAGE_LENGTH


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"domain": "evil.example"}, 401, "siwe-domain-mismatch"),
        ({"uri": "https://evil.example/login"}, 401, "siwe-uri-mismatch"),
    ],
)
def test_a_foreign_message_is_refused_before_parsing(
    client: TestClient,
    services: Services,
    clock: FixedClock,
    parses: list[str],
    changes: dict[str, Any],
    status: int,
    code: str,
) -> None:
    wallet = new_wallet()
    nonce = request_nonce(client, wallet)["nonce"]
    foreign = message_for(client, wallet, nonce, clock, **changes)
    before = log_length(services)

    assert_problem(verify(client, foreign, sign(wallet, foreign)), status, code)

    assert parses == []
    assert log_length(services) == before
    honest = message_for(client, wallet, nonce, clock)
    assert verify(client, honest, sign(wallet, honest)).status_code == 200


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda m: "hello " * 100, id="not-eip-4361"),
        pytest.param(lambda m: m.replace("\nURI: ", "\nURL: "), id="no-uri"),
        pytest.param(lambda m: m.replace("\nNonce: ", "\nNonsense: "), id="no-nonce"),
    ],
)
def test_a_message_that_cannot_be_ours_is_malformed_unparsed(
    client: TestClient,
    clock: FixedClock,
    parses: list[str],
    mangle: Callable[[str], str],
) -> None:
    wallet = new_wallet()
    nonce = request_nonce(client, wallet)["nonce"]
    message = mangle(message_for(client, wallet, nonce, clock))

    assert_problem(verify(client, message, sign(wallet, message)), 422, "siwe-message-malformed")
    assert parses == []


# --- M3: nonces ------------------------------------------------------------------------


def test_another_address_cannot_keep_a_victims_wallet_at_429(client: TestClient) -> None:
    victim = new_wallet()
    client.app.state.auth_limiter.__init__("3/minute")  # type: ignore[attr-defined]
    attacker = from_address(client, "203.0.113.66")

    flood = [
        attacker.post("/v1/auth/nonce", json={"address": victim.address}).status_code
        for _ in range(5)
    ]
    own = client.post("/v1/auth/nonce", json={"address": victim.address})

    assert flood == [201, 201, 201, 429, 429]  # the attacker's own address is limited
    assert own.status_code == 201, own.text
    message = own.json()["message"]
    assert verify(client, message, sign(victim, message)).status_code == 200


def test_a_nonce_request_appends_no_event(client: TestClient, services: Services) -> None:
    before = log_length(services)

    for _ in range(5):
        request_nonce(client, new_wallet())

    assert log_length(services) == before


def test_a_nonce_is_single_use(client: TestClient, services: Services) -> None:
    wallet = new_wallet()
    message = request_nonce(client, wallet)["message"]
    signature = sign(wallet, message)

    first = verify(client, message, signature)
    after_first = log_length(services)
    again = verify(client, message, signature)

    assert first.status_code == 200
    assert_problem(again, 401, "siwe-nonce-used")
    assert log_length(services) == after_first


def test_a_nonce_expires_and_is_pruned(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    wallet = new_wallet()
    issued = request_nonce(client, wallet)
    settings = services.settings
    clock.advance(seconds=settings.nonce_ttl + 1)
    # A message of the wallet's own making, fresh, carrying the expired nonce.
    message = message_for(client, wallet, issued["nonce"], clock)
    before = log_length(services)

    expired = verify(client, message, sign(wallet, message))
    run_job(services, "sign_in_nonce_prune", clock)
    pruned = verify(client, message, sign(wallet, message))

    assert_problem(expired, 401, "siwe-nonce-expired")
    assert_problem(pruned, 401, "siwe-nonce-unknown")
    assert log_length(services) == before
    with psycopg.connect(services.url) as conn:
        row = conn.execute("SELECT count(*) FROM sign_in_nonces").fetchone()
    assert row is not None and row[0] == 0


def test_concurrent_verifies_of_one_nonce_sign_in_exactly_once(
    client: TestClient, services: Services
) -> None:
    wallet = new_wallet()
    message = request_nonce(client, wallet)["message"]
    signature = sign(wallet, message)
    barrier = threading.Barrier(6)
    answers: list[Any] = []

    def attempt() -> None:
        barrier.wait()
        answers.append(verify(client, message, signature))

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401, 401, 401]
    assert {a.json()["type"].rsplit("/", 1)[-1] for a in answers if a.status_code == 401} == {
        "siwe-nonce-used"
    }
    with psycopg.connect(services.url) as conn:
        topics = [
            row[0]
            for row in conn.execute("SELECT topic FROM pumpparty_events ORDER BY notification_id")
        ]
    assert sum(t.endswith("User.SignedIn") for t in topics) == 1
    assert sum(t.endswith("Session.Started") for t in topics) == 1
