"""Access tokens are taken as things stand (issue M4): a logout, a reused refresh token or
a revoked role takes effect within about a second (`api.auth.STANDING_FOR` after the read
models show it), not when the token runs out; a sign-in the read models have not seen yet
is honoured at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

import api.auth
from api.auth import STANDING_FOR
from projections.reads import ProjectionReads
from projections.sessions import SessionStanding
from runtime.clock import FixedClock
from scripts.worker import Worker
from services.bootstrap import Services
from tests.support.clones import make_admin
from tests.support.http import assert_problem, bearer
from tests.support.projections import catch_up
from tests.support.wallets import sign_in

SESSIONS = "/v1/sessions"
ADMIN_ROUTE = "/v1/admin/moderation/queue"


def refresh(client: TestClient, token: str) -> Any:
    return client.post("/v1/auth/refresh", json={"refresh_token": token})


def log_out(client: TestClient, token: str) -> int:
    response = client.post("/v1/auth/logout", json={"refresh_token": token})
    assert response.status_code == 200, response.text
    position: int = response.json()["position"]
    return position


def projected(services: Services, clock: FixedClock, position: int) -> None:
    """The read models reach `position`, and what this app remembered of them is stale."""
    catch_up(services)
    assert services.projections.position("sessions") >= position
    assert services.projections.position("users") >= position
    clock.advance(seconds=STANDING_FOR.total_seconds())


def head(services: Services) -> int:
    return services.event_log.recorder.max_notification_id() or 0


def test_a_logged_out_access_token_is_refused(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    signed_in = sign_in(client)
    catch_up(services)
    assert client.get(SESSIONS, headers=signed_in.headers).status_code == 200

    projected(services, clock, log_out(client, signed_in.refresh_token))

    assert_problem(client.get(SESSIONS, headers=signed_in.headers), 401, "access-token-revoked")
    assert_problem(client.get("/v1/me", headers=signed_in.headers), 401, "access-token-revoked")


@pytest.fixture
def worker(services: Services) -> Iterator[Worker]:
    """The projections followed live in background threads, as in production."""
    running = Worker(services)
    running.start()
    yield running
    running.stop()


def test_a_logout_takes_effect_within_a_second_of_its_projection(
    client: TestClient, services: Services, clock: FixedClock, worker: Worker
) -> None:
    signed_in = sign_in(client)
    assert client.get(SESSIONS, headers=signed_in.headers).status_code == 200

    position = log_out(client, signed_in.refresh_token)
    deadline = time.monotonic() + 5
    while services.projections.position("sessions") < position:
        assert time.monotonic() < deadline, "the sessions projection did not follow the log"
        time.sleep(0.01)
    clock.advance(seconds=STANDING_FOR.total_seconds())

    assert_problem(client.get(SESSIONS, headers=signed_in.headers), 401, "access-token-revoked")


def test_a_reused_refresh_token_refuses_the_familys_access_tokens(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    signed_in = sign_in(client)
    elsewhere = sign_in(client, signed_in.wallet)  # the same user's other session
    rotated = bearer(refresh(client, signed_in.refresh_token).json()["access_token"])
    catch_up(services)
    assert client.get(SESSIONS, headers=rotated).status_code == 200

    assert_problem(refresh(client, signed_in.refresh_token), 401, "refresh-token-reused")
    projected(services, clock, head(services))

    for family in (signed_in.headers, rotated):
        assert_problem(client.get(SESSIONS, headers=family), 401, "access-token-revoked")
    assert client.get(SESSIONS, headers=elsewhere.headers).status_code == 200


def test_a_revoked_admin_role_loses_admin_routes_with_the_same_token(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    root, member = make_admin(client, services), sign_in(client)
    granted = client.post(
        f"/v1/admin/users/{member.user_id}/roles", json={"role": "admin"}, headers=root.headers
    )
    assert granted.status_code == 200, granted.text
    refreshed = refresh(client, member.refresh_token).json()
    assert refreshed["user"]["roles"] == ["admin"]  # minted with the role
    admin = bearer(refreshed["access_token"])
    projected(services, clock, granted.json()["position"])
    assert client.get(ADMIN_ROUTE, headers=admin).status_code == 200

    revoked = client.delete(f"/v1/admin/users/{member.user_id}/roles/admin", headers=root.headers)
    assert revoked.status_code == 200 and revoked.json()["roles"] == [], revoked.text
    projected(services, clock, revoked.json()["position"])

    assert_problem(client.get(ADMIN_ROUTE, headers=admin), 403, "forbidden")
    assert client.get(SESSIONS, headers=admin).status_code == 200  # still signed in
    assert client.get(ADMIN_ROUTE, headers=root.headers).status_code == 200


def test_a_new_sign_in_is_honoured_before_its_session_is_projected(
    client: TestClient, services: Services
) -> None:
    first = sign_in(client)
    log_out(client, first.refresh_token)
    catch_up(services)

    again = sign_in(client, first.wallet)
    assert services.projections.position("sessions") < again.position  # not seen there yet

    assert client.get(SESSIONS, headers=again.headers).status_code == 200
    assert_problem(client.get(SESSIONS, headers=first.headers), 401, "access-token-revoked")


def test_a_busy_caller_asks_the_read_models_once_a_second(
    client: TestClient, services: Services, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[UUID] = []
    real = api.auth.session_standing

    async def counting(reads: ProjectionReads, session_id: UUID) -> SessionStanding | None:
        asked.append(session_id)
        return await real(reads, session_id)

    monkeypatch.setattr(api.auth, "session_standing", counting)
    signed_in = sign_in(client)
    catch_up(services)

    for _ in range(5):
        assert client.get(SESSIONS, headers=signed_in.headers).status_code == 200
    assert len(asked) == 1
    clock.advance(seconds=STANDING_FOR.total_seconds())
    assert client.get(SESSIONS, headers=signed_in.headers).status_code == 200
    assert len(asked) == 2
