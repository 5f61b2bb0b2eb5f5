from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import jwt
import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from aggregates.sign_in import sign_in_message
from api.routers.auth import expectations
from api.tokens import AccessClaims, AccessTokens
from runtime.clock import FixedClock
from scripts.worker import Worker
from services.bootstrap import Services
from tests.conftest import AUDITOR_TOKEN, ENGINE_TOKEN
from tests.support.http import assert_problem, bearer
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import new_wallet, request_nonce, sign, sign_in


def verify(client: TestClient, message: str, signature: str) -> Any:
    return client.post("/v1/auth/verify", json={"message": message, "signature": signature})


def test_sign_in_refresh_and_logout(client: TestClient, services: Services) -> None:
    signed_in = sign_in(client)

    catch_up(services)
    me = client.get("/v1/me", headers=signed_in.headers).json()
    refreshed = client.post(
        "/v1/auth/refresh", json={"refresh_token": signed_in.refresh_token}
    ).json()
    logged_out = client.post("/v1/auth/logout", json={"refresh_token": refreshed["refresh_token"]})
    after_logout = client.post(
        "/v1/auth/refresh", json={"refresh_token": refreshed["refresh_token"]}
    )

    assert me["address"] == signed_in.wallet.address and me["sign_in_count"] == 1
    assert (
        refreshed["refresh_token"] != signed_in.refresh_token
        and refreshed["token_type"] == "Bearer"
    )
    assert (
        client.get(
            "/v1/me", headers={"Authorization": f"Bearer {refreshed['access_token']}"}
        ).status_code
        == 200
    )
    assert logged_out.status_code == 200
    assert_problem(after_logout, 401, "refresh-token-invalid")


@pytest.fixture
def worker(services: Services) -> Iterator[Worker]:
    """The projections followed live in background threads, as in production."""
    running = Worker(services)
    running.start()
    yield running
    running.stop()


def test_who_just_signed_in_is_never_a_false_404(
    client: TestClient, services: Services, worker: Worker
) -> None:
    behind = 0

    for attempt in range(20):
        signed_in = sign_in(client)  # a fresh wallet: a user registered just now
        behind += services.projections.position("users") < signed_in.position

        response = client.get("/v1/me", headers=signed_in.headers)

        assert response.status_code == 200, (attempt, response.text)
        assert response.json()["id"] == signed_in.user_id
    assert behind > 0, "the projection kept up every time: this test raced nothing"


def test_the_same_wallet_is_the_same_user(client: TestClient) -> None:
    wallet = new_wallet()

    first, second = sign_in(client, wallet), sign_in(client, wallet)

    assert first.user_id == second.user_id


def nonce_message(client: TestClient, **changes: Any) -> tuple[Any, str, str]:
    """A nonce issued by the service, in a message with some fields changed."""
    wallet = new_wallet()
    issued = request_nonce(client, wallet)
    settings = client.app.state.services.settings  # type: ignore[attr-defined]
    clock: FixedClock = client.app.state.clock  # type: ignore[attr-defined]
    now = changes.pop("issued_at", clock())
    nonce = changes.pop("nonce", issued["nonce"])
    message = sign_in_message(
        replace(expectations(settings), **changes),
        wallet.address,
        nonce,
        now,
        now + timedelta(minutes=10),
    )
    return wallet, message, sign(wallet, message)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"domain": "evil.example"}, "siwe-domain-mismatch"),
        ({"uri": "https://evil.example/login"}, "siwe-uri-mismatch"),
        ({"chain_id": 1}, "siwe-chain-mismatch"),
    ],
)
def test_messages_for_another_place_are_401(
    client: TestClient, changes: dict[str, Any], code: str
) -> None:
    _, message, signature = nonce_message(client, **changes)

    assert_problem(verify(client, message, signature), 401, code)


def test_expired_and_future_messages_are_401(client: TestClient, clock: FixedClock) -> None:
    _, future, future_signature = nonce_message(client, issued_at=clock() + timedelta(minutes=5))
    wallet = new_wallet()
    issued = request_nonce(client, wallet)
    expired = sign_in_message(
        expectations(client.app.state.services.settings),
        wallet.address,
        issued["nonce"],  # type: ignore[attr-defined]
        clock() - timedelta(minutes=3),
        clock() - timedelta(minutes=1),
    )

    assert_problem(verify(client, future, future_signature), 401, "siwe-not-yet-valid")
    assert_problem(verify(client, expired, sign(wallet, expired)), 401, "siwe-expired")


def test_an_unknown_nonce_is_401(client: TestClient) -> None:
    _, message, signature = nonce_message(client, nonce="0123456789abcdef0123456789abcdef")

    assert_problem(verify(client, message, signature), 401, "siwe-nonce-unknown")


def test_a_nonce_signs_in_once(client: TestClient) -> None:
    wallet = new_wallet()
    message = request_nonce(client, wallet)["message"]
    signature = sign(wallet, message)

    first = verify(client, message, signature)
    second = verify(client, message, signature)

    assert first.status_code == 200
    assert_problem(second, 401, "siwe-nonce-used")


def test_an_expired_nonce_is_401(client: TestClient, clock: FixedClock) -> None:
    wallet = new_wallet()
    nonce = request_nonce(client, wallet)["nonce"]
    clock.advance(minutes=10, seconds=1)
    # A fresh message of the wallet's own making, carrying the old nonce.
    message = sign_in_message(
        expectations(client.app.state.services.settings),  # type: ignore[attr-defined]
        wallet.address,
        nonce,
        clock(),
        clock() + timedelta(minutes=5),
    )

    assert_problem(verify(client, message, sign(wallet, message)), 401, "siwe-nonce-expired")


def test_a_signature_from_another_key_is_401(client: TestClient) -> None:
    wallet = new_wallet()
    message = request_nonce(client, wallet)["message"]

    assert_problem(
        verify(client, message, sign(new_wallet(), message)), 401, "siwe-signature-invalid"
    )


def test_malformed_messages_and_signatures_are_422(client: TestClient) -> None:
    wallet = new_wallet()
    message = request_nonce(client, wallet)["message"]

    assert_problem(
        verify(client, "not a siwe message", sign(wallet, message)), 422, "siwe-message-malformed"
    )
    assert_problem(verify(client, message, "0xnothex"), 422, "siwe-signature-malformed")
    assert_problem(
        client.post("/v1/auth/verify", json={"message": message}), 422, "invalid-request"
    )
    assert_problem(client.post("/v1/auth/nonce", json={"address": "0x123"}), 422, "invalid-request")


def test_concurrent_verifies_of_one_nonce_sign_in_once(client: TestClient) -> None:
    wallet = new_wallet()
    message = request_nonce(client, wallet)["message"]
    signature = sign(wallet, message)
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(verify(client, message, signature).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 401, 401, 401]


# --- access tokens ---------------------------------------------------------------------


def forged(
    client: TestClient,
    signed_in_token: str,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    key: bytes | None = None,
    alg: str = "HS256",
) -> str:
    tokens: AccessTokens = client.app.state.access_tokens  # type: ignore[attr-defined]
    payload = {**jwt.decode(signed_in_token, options={"verify_signature": False}), **(claims or {})}
    headers = {"kid": tokens.current_kid, "typ": "at+jwt", **(header or {})}
    return jwt.encode(
        payload, key or tokens.keys[tokens.current_kid], algorithm=alg, headers=headers
    )


def unsigned(token: str) -> str:
    header = (
        base64.urlsafe_b64encode(orjson.dumps({"alg": "none", "typ": "at+jwt"}))
        .decode()
        .rstrip("=")
    )
    return f"{header}.{token.split('.')[1]}."


def test_rejected_access_tokens(client: TestClient, clock: FixedClock) -> None:
    token = sign_in(client).access_token
    tokens: AccessTokens = client.app.state.access_tokens  # type: ignore[attr-defined]
    payload = token.split(".")[1]
    tampered_payload = (
        base64.urlsafe_b64encode(
            orjson.dumps(
                {**jwt.decode(token, options={"verify_signature": False}), "roles": ["admin"]}
            )
        )
        .decode()
        .rstrip("=")
    )
    cases = {
        "alg none": unsigned(token),
        "wrong audience": forged(client, token, claims={"aud": "someone-else"}),
        "unknown kid": forged(client, token, header={"kid": "not-a-key"}),
        "other algorithm": forged(client, token, alg="HS512"),
        "other secret": forged(client, token, key=b"x" * 48),
        "tampered payload": token.replace(payload, tampered_payload),
        "wrong type": forged(client, token, header={"typ": "JWT"}),
    }

    for name, bad in cases.items():
        response = client.get("/v1/sessions", headers=bearer(bad))
        assert response.status_code == 401, name
        assert response.json()["type"] == "/problems/access-token-invalid", name

    clock.advance(seconds=tokens.ttl.total_seconds() + 10)
    assert_problem(client.get("/v1/sessions", headers=bearer(token)), 401, "access-token-expired")


def test_old_secret_still_verifies_after_rotation(services: Services, clock: FixedClock) -> None:
    old = AccessTokens(
        [b"o" * 48], issuer="pumpparty-ledger", audience="pumpparty-api", ttl=timedelta(minutes=15)
    )
    rotated = AccessTokens(
        [b"n" * 48, b"o" * 48],
        issuer="pumpparty-ledger",
        audience="pumpparty-api",
        ttl=timedelta(minutes=15),
    )
    claims = AccessClaims(
        user_id=__import__("uuid").uuid4(),
        address="0x0",
        roles=frozenset(),
        session_id=__import__("uuid").uuid4(),
    )

    verified = rotated.verify(old.mint(claims, clock()), clock())

    assert verified.user_id == claims.user_id
    assert rotated.current_kid != old.current_kid


# --- refresh tokens --------------------------------------------------------------------


def refresh(client: TestClient, token: str) -> Any:
    return client.post("/v1/auth/refresh", json={"refresh_token": token})


def test_refresh_reuse_revokes_the_family(client: TestClient, services: Services) -> None:
    signed_in = sign_in(client)
    newest = refresh(client, signed_in.refresh_token).json()["refresh_token"]

    reused = refresh(client, signed_in.refresh_token)
    newest_after = refresh(client, newest)

    assert_problem(reused, 401, "refresh-token-reused")
    assert_problem(newest_after, 401, "refresh-token-invalid")
    catch_up(services)
    with psycopg.connect(services.url) as conn:
        events = [
            r[0]
            for r in conn.execute(
                "SELECT event_type FROM audit_log WHERE aggregate_type = 'Session'"
            )
        ]
    assert events == ["Started", "Rotated", "ReuseDetected", "Revoked"]


def test_concurrent_double_refresh_one_wins(client: TestClient) -> None:
    token = sign_in(client).refresh_token
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(refresh(client, token).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 401]


def test_garbage_refresh_tokens_are_401(client: TestClient) -> None:
    assert_problem(refresh(client, "garbage"), 401, "refresh-token-invalid")
    assert_problem(
        refresh(client, base64.urlsafe_b64encode(b"x" * 48).decode()), 401, "refresh-token-invalid"
    )


def test_no_token_material_in_projections(client: TestClient, services: Services) -> None:
    signed_in = sign_in(client)
    catch_up(services)

    with psycopg.connect(services.url) as conn:
        dump = str(conn.execute("SELECT * FROM sessions").fetchall()) + str(
            conn.execute("SELECT * FROM users").fetchall()
        )

    assert signed_in.refresh_token not in dump and signed_in.access_token not in dump
    assert "hash" not in dump


# --- roles, services, owners, limits ---------------------------------------------------


def test_a_service_token_needs_its_scope(client: TestClient) -> None:
    assert_problem(client.get("/v1/audit/digest", headers=bearer(ENGINE_TOKEN)), 403, "forbidden")
    assert client.get("/v1/audit/digest", headers=bearer(AUDITOR_TOKEN)).status_code == 200


def test_a_service_token_is_not_a_user(client: TestClient) -> None:
    assert_problem(client.get("/v1/me", headers=bearer(AUDITOR_TOKEN)), 403, "forbidden")


def test_sessions_are_owner_safe(client: TestClient, services: Services) -> None:
    owner, stranger = sign_in(client), sign_in(client)
    catch_up(services)
    session_id = client.get("/v1/sessions", headers=owner.headers).json()["items"][0]["session_id"]

    assert_owner_only(
        client, "GET", f"/v1/sessions/{session_id}", owner=owner.headers, stranger=stranger.headers
    )
    assert_owner_only(
        client,
        "DELETE",
        f"/v1/sessions/{session_id}",
        owner=owner.headers,
        stranger=stranger.headers,
    )


def test_admins_grant_roles_as_events(client: TestClient, services: Services) -> None:
    admin_wallet = new_wallet()
    client.app.state.services.settings = services.settings.model_copy(  # type: ignore[attr-defined]
        update={"admin_addresses": [admin_wallet.address]}
    )
    admin, member = sign_in(client, admin_wallet), sign_in(client)

    granted = client.post(
        f"/v1/admin/users/{member.user_id}/roles", json={"role": "moderator"}, headers=admin.headers
    )
    refused = client.post(
        f"/v1/admin/users/{admin.user_id}/roles", json={"role": "moderator"}, headers=member.headers
    )
    unknown = client.post(
        f"/v1/admin/users/{member.user_id}/roles", json={"role": "emperor"}, headers=admin.headers
    )

    assert granted.status_code == 200 and granted.json()["roles"] == ["moderator"]
    assert_problem(refused, 403, "forbidden")
    assert_problem(unknown, 422, "unknown-role")
    catch_up(services)
    with psycopg.connect(services.url) as conn:
        actor = conn.execute(
            "SELECT actor FROM audit_log WHERE event_type = 'RoleGranted'"
        ).fetchone()
    assert actor == (f"user:{admin.user_id}",)


def test_sign_in_is_rate_limited(client: TestClient) -> None:
    wallet = new_wallet()
    client.app.state.auth_limiter.__init__("3/minute")  # type: ignore[attr-defined]

    statuses = [
        client.post("/v1/auth/nonce", json={"address": wallet.address}).status_code
        for _ in range(4)
    ]
    limited = client.post("/v1/auth/nonce", json={"address": wallet.address})

    assert statuses == [201, 201, 201, 429]
    assert_problem(limited, 429, "rate-limited")
    assert int(limited.headers["retry-after"]) >= 1


# --- mutation gaps: the nonce's wallet and the token's issuer ------------------------------


def test_a_nonce_issued_to_another_wallet_is_401(client: TestClient, clock: FixedClock) -> None:
    owner, thief = new_wallet(), new_wallet()
    nonce = request_nonce(client, owner)["nonce"]
    # The thief's own, correctly signed message, carrying the nonce issued to `owner`.
    message = sign_in_message(
        expectations(client.app.state.services.settings),  # type: ignore[attr-defined]
        thief.address,
        nonce,
        clock(),
        clock() + timedelta(minutes=5),
    )

    assert_problem(verify(client, message, sign(thief, message)), 401, "siwe-nonce-unknown")
    # The nonce is untouched: its own wallet still signs in with it.
    owners = sign_in_message(
        expectations(client.app.state.services.settings),  # type: ignore[attr-defined]
        owner.address,
        nonce,
        clock(),
        clock() + timedelta(minutes=5),
    )
    assert verify(client, owners, sign(owner, owners)).status_code == 200


def test_an_access_token_from_another_issuer_is_401(client: TestClient) -> None:
    token = sign_in(client).access_token

    response = client.get(
        "/v1/sessions", headers=bearer(forged(client, token, claims={"iss": "someone-else"}))
    )

    assert_problem(response, 401, "access-token-invalid")
