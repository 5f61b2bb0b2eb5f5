from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services
from tests.support.auditions import grant_entitlement, publish_clone, short_rules, submit
from tests.support.clones import make_admin, submit_profile
from tests.support.http import assert_problem
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return short_rules(settings)


@pytest.fixture
def owner(client: TestClient) -> SignedIn:
    return sign_in(client)


@pytest.fixture
def version(client: TestClient, owner: SignedIn) -> tuple[str, str]:
    return publish_clone(client, owner)


def entitle(services: Services, clock: FixedClock, user: SignedIn, count: int = 1) -> list[str]:
    granted = [str(grant_entitlement(services, UUID(user.user_id), clock())) for _ in range(count)]
    catch_up(services)
    return granted


def audition(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> dict[str, Any]:
    entitle(services, clock, owner)
    response = submit(client, owner, *version)
    assert response.status_code == 201, response.text
    catch_up(services)
    body: dict[str, Any] = response.json()
    return body


def failed(client: TestClient, services: Services, admin: SignedIn, audition_id: str) -> None:
    """Judged now by an admin: with no trades it fails."""
    response = client.post(f"/v1/admin/auditions/{audition_id}/evaluate", headers=admin.headers)
    assert response.status_code == 200 and response.json()["status"] == "failed", response.text
    catch_up(services)


# --- submitting ----------------------------------------------------------------------------


def test_submitting_consumes_an_entitlement_and_opens_a_prop_account(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    (entitlement_id,) = entitle(services, clock, owner)

    response = submit(client, owner, *version)

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["attempt"], body["entitlement_id"]) == (
        "running",
        1,
        entitlement_id,
    )
    assert body["due_at"] == "2026-11-27T12:00:00Z"
    catch_up(services)
    entitlements = client.get("/v1/entitlements", headers=owner.headers).json()["items"]
    assert [(e["status"], e["consumed_by"]) for e in entitlements] == [
        ("consumed", body["audition_id"])
    ]
    account = client.get(f"/v1/prop/accounts/{body['prop_account_id']}", headers=owner.headers)
    assert (account.json()["purpose"], account.json()["starting_equity"]) == ("audition", "10000")


def test_without_an_entitlement_the_answer_is_payment_required(
    client: TestClient, owner: SignedIn, version: Any
) -> None:
    response = submit(client, owner, *version)

    assert_problem(response, 402, "entitlement-required")


def test_an_unpublished_version_is_refused(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    entitle(services, clock, owner)

    response = submit(client, owner, version[0], "ab" * 32)

    assert_problem(response, 422, "clone-version-not-published")


def test_a_banned_clone_cannot_audition(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    entitle(services, clock, owner)
    admin, profile_id = make_admin(client, services), submit_profile(client, owner, version[0])
    banned = client.post(
        f"/v1/admin/moderation/profiles/{profile_id}/ban",
        json={"reason": "impersonates a fund"},
        headers=admin.headers,
    )

    response = submit(client, owner, *version)

    assert banned.status_code == 200, banned.text
    assert_problem(response, 409, "clone-banned")


@pytest.mark.parametrize(
    "body",
    [
        {"clone_id": "not-a-uuid", "version_hash": "ab" * 32},
        {"clone_id": str(uuid4()), "version_hash": "zz" * 32},
        {"clone_id": str(uuid4()), "version_hash": "ab" * 33},
        {"clone_id": str(uuid4())},
    ],
)
def test_a_malformed_submission_is_invalid(
    client: TestClient, owner: SignedIn, body: dict[str, Any]
) -> None:
    response = client.post("/v1/auditions", json=body, headers=owner.headers)

    assert_problem(response, 422, "invalid-request")


def test_a_repeated_idempotency_key_answers_with_the_first_audition(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    entitle(services, clock, owner, count=2)
    first = submit(client, owner, *version, **{"Idempotency-Key": "RETRO-CLOCK"}).json()

    again = submit(client, owner, *version, **{"Idempotency-Key": "RETRO-CLOCK"}).json()

    assert {**again, "position": 0} == {**first, "position": 0}
    catch_up(services)
    statuses = [
        e["status"] for e in client.get("/v1/entitlements", headers=owner.headers).json()["items"]
    ]
    assert sorted(statuses) == ["available", "consumed"]


# --- reading and retrying ------------------------------------------------------------------


def test_every_audition_route_is_owner_only(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    stranger, admin = sign_in(client), make_admin(client, services)
    entitle(services, clock, owner)
    submitted = assert_owner_only(
        client,
        "POST",
        "/v1/auditions",
        owner=owner.headers,
        stranger=stranger.headers,
        json={"clone_id": version[0], "version_hash": version[1]},
    ).json()
    audition_id = submitted["audition_id"]
    catch_up(services)

    assert_owner_only(
        client,
        "GET",
        f"/v1/auditions/{audition_id}",
        owner=owner.headers,
        stranger=stranger.headers,
    )
    failed(client, services, admin, audition_id)
    retried = assert_owner_only(
        client,
        "POST",
        f"/v1/auditions/{audition_id}/retry",
        owner=owner.headers,
        stranger=stranger.headers,
    )

    assert (retried.status_code, retried.json()["attempt"]) == (201, 2)


def test_the_list_is_mine_oldest_first_and_paginated(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    entitle(services, clock, owner, count=2)
    first = submit(client, owner, *version).json()["audition_id"]
    second = submit(client, owner, *version).json()["audition_id"]
    catch_up(services)

    page = client.get("/v1/auditions", params={"limit": 1}, headers=owner.headers).json()
    rest = client.get(
        "/v1/auditions", params={"cursor": page["next_cursor"]}, headers=owner.headers
    ).json()
    strangers = client.get("/v1/auditions", headers=sign_in(client).headers).json()

    assert [i["audition_id"] for i in page["items"]] == [first]
    assert ([i["audition_id"] for i in rest["items"]], rest["next_cursor"]) == ([second], None)
    assert strangers["items"] == []
    assert_problem(client.get("/v1/auditions"), 401, "unauthenticated")


def test_the_detail_shows_rules_attempts_due_time_and_the_prop_account(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    submitted = audition(client, services, clock, owner, version)

    detail = client.get(f"/v1/auditions/{submitted['audition_id']}", headers=owner.headers).json()

    assert (detail["status"], detail["current_attempt"], detail["due_at"]) == (
        "running",
        1,
        "2026-11-27T12:00:00Z",
    )
    assert detail["rules"]["profit_target"] == "0.05"
    assert detail["rules"]["min_active_days"] == 2
    assert [(a["number"], a["status"], a["free"]) for a in detail["attempts"]] == [
        (1, "running", False)
    ]
    assert detail["prop_account"]["account_id"] == submitted["prop_account_id"]
    assert (detail["prop_account"]["status"], detail["prop_account"]["equity"]) == (
        "open",
        "10000",
    )


def test_a_judged_attempt_shows_its_metrics_and_failed_rules(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    audition_id = audition(client, services, clock, owner, version)["audition_id"]
    failed(client, services, make_admin(client, services), audition_id)

    detail = client.get(f"/v1/auditions/{audition_id}", headers=owner.headers).json()

    (attempt,) = detail["attempts"]
    assert (detail["status"], attempt["ended_by"]) == ("failed", "admin")
    assert attempt["failed_rules"] == ["profit-target", "min-trades", "min-active-days"]
    assert attempt["metrics"] == {
        "equity": "10000",
        "total_return": "0",
        "max_drawdown": "0",
        "worst_daily_loss": "0",
        "trades": 0,
        "active_days": 0,
        "breach": None,
    }
    # The verdict closed the account in the same transaction: nothing touches it again.
    assert detail["prop_account"]["status"] == "closed"
    assert detail["prop_account"]["equity"] == attempt["metrics"]["equity"]


def test_retrying_a_running_audition_is_a_conflict(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    audition_id = audition(client, services, clock, owner, version)["audition_id"]

    response = client.post(f"/v1/auditions/{audition_id}/retry", headers=owner.headers)

    assert_problem(response, 409, "audition-not-retryable")


def test_a_repeated_retry_key_answers_with_the_same_attempt(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    audition_id = audition(client, services, clock, owner, version)["audition_id"]
    failed(client, services, make_admin(client, services), audition_id)
    headers = {**owner.headers, "Idempotency-Key": "RETRO-CLOCK"}
    first = client.post(f"/v1/auditions/{audition_id}/retry", headers=headers).json()

    again = client.post(f"/v1/auditions/{audition_id}/retry", headers=headers).json()

    assert {**again, "position": 0} == {**first, "position": 0}
    assert (first["attempt"], first["entitlement_id"]) == (2, None)


# --- admin ---------------------------------------------------------------------------------


def test_admins_void_once_and_the_entitlement_comes_back(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    submitted = audition(client, services, clock, owner, version)
    admin = make_admin(client, services)
    url = f"/v1/admin/auditions/{submitted['audition_id']}/void"
    voided = client.post(url, json={"reason": "data outage"}, headers=admin.headers)

    again = client.post(url, json={"reason": "data outage"}, headers=admin.headers)

    assert voided.status_code == 200, voided.text
    assert voided.json()["restored_entitlement_id"] == submitted["entitlement_id"]
    assert_problem(again, 409, "audition-already-voided")
    catch_up(services)
    entitlements = client.get("/v1/entitlements", headers=owner.headers).json()["items"]
    assert [e["status"] for e in entitlements] == ["available"]
    detail = client.get(f"/v1/auditions/{submitted['audition_id']}", headers=owner.headers).json()
    assert (detail["status"], detail["void_reason"]) == ("voided", "data outage")
    assert detail["prop_account"]["status"] == "closed"


@pytest.mark.parametrize("reason", ["", "   ", "data\x00outage"])
def test_voiding_needs_a_plain_reason(
    client: TestClient,
    services: Services,
    clock: FixedClock,
    owner: SignedIn,
    version: Any,
    reason: str,
) -> None:
    audition_id = audition(client, services, clock, owner, version)["audition_id"]
    admin = make_admin(client, services)

    response = client.post(
        f"/v1/admin/auditions/{audition_id}/void", json={"reason": reason}, headers=admin.headers
    )

    assert_problem(response, 422, "invalid-request")


def test_admins_list_every_audition_with_filters(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    other = sign_in(client)
    mine = audition(client, services, clock, owner, version)["audition_id"]
    theirs = audition(client, services, clock, other, publish_clone(client, other))["audition_id"]
    admin = make_admin(client, services)
    failed(client, services, admin, theirs)

    def listed(**params: str) -> list[str]:
        response = client.get("/v1/admin/auditions", params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        return [item["audition_id"] for item in response.json()["items"]]

    assert listed() == [mine, theirs]
    assert listed(status="failed") == [theirs]
    assert listed(owner_id=owner.user_id) == [mine]
    assert listed(clone_id=version[0]) == [mine]


def test_the_queue_shows_due_soon_and_overdue_auditions(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    audition_id = audition(client, services, clock, owner, version)["audition_id"]
    admin = make_admin(client, services)
    not_yet = client.get("/v1/admin/auditions/queue", params={"within": 60}, headers=admin.headers)
    soon = client.get(
        "/v1/admin/auditions/queue", params={"within": 2 * 86400}, headers=admin.headers
    )
    clock.advance(days=2)
    admin = make_admin(client, services)  # two days on, the first access token has expired

    overdue = client.get("/v1/admin/auditions/queue", headers=admin.headers).json()["items"]

    assert not_yet.json()["items"] == []
    assert [(i["audition_id"], i["overdue"]) for i in soon.json()["items"]] == [
        (audition_id, False)
    ]
    assert [(i["audition_id"], i["overdue"]) for i in overdue] == [(audition_id, True)]


def test_the_queue_is_paginated_soonest_first(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    first = audition(client, services, clock, owner, version)["audition_id"]
    clock.advance(minutes=1)
    second = audition(client, services, clock, owner, version)["audition_id"]
    admin = make_admin(client, services)
    url, within = "/v1/admin/auditions/queue", 3 * 86400

    page = client.get(url, params={"within": within, "limit": 1}, headers=admin.headers).json()
    rest = client.get(
        url, params={"within": within, "cursor": page["next_cursor"]}, headers=admin.headers
    ).json()

    assert [i["audition_id"] for i in page["items"]] == [first]
    assert ([i["audition_id"] for i in rest["items"]], rest["next_cursor"]) == ([second], None)


def test_admin_routes_need_the_admin_role(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    audition_id = audition(client, services, clock, owner, version)["audition_id"]

    for method, url, body in [
        ("GET", "/v1/admin/auditions", None),
        ("GET", "/v1/admin/auditions/queue", None),
        ("GET", f"/v1/admin/auditions/{audition_id}", None),
        ("POST", f"/v1/admin/auditions/{audition_id}/void", {"reason": "x"}),
        ("POST", f"/v1/admin/auditions/{audition_id}/evaluate", None),
    ]:
        assert_problem(
            client.request(method, url, json=body, headers=owner.headers), 403, "forbidden"
        )


def test_admins_read_any_audition_and_unknown_ones_are_not_found(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    audition_id = audition(client, services, clock, owner, version)["audition_id"]
    admin = make_admin(client, services)

    found = client.get(f"/v1/admin/auditions/{audition_id}", headers=admin.headers)
    missing = client.get(f"/v1/admin/auditions/{uuid4()}", headers=admin.headers)
    evaluate_missing = client.post(f"/v1/admin/auditions/{uuid4()}/evaluate", headers=admin.headers)

    assert found.status_code == 200 and found.json()["owner_id"] == owner.user_id
    assert_problem(missing, 404, "not-found")
    assert_problem(evaluate_missing, 404, "not-found")


def test_another_users_cursor_shows_none_of_their_auditions(
    client: TestClient, services: Services, clock: FixedClock, owner: SignedIn, version: Any
) -> None:
    from projections.paging import encode_cursor

    entitle(services, clock, owner, count=3)
    owners = {submit(client, owner, *version).json()["audition_id"] for _ in range(3)}
    other = sign_in(client)
    catch_up(services)
    cursor = client.get("/v1/auditions", params={"limit": 1}, headers=owner.headers).json()[
        "next_cursor"
    ]
    # The owner's cursor replayed, and one that names the owner outright.
    forged = encode_cursor({"position": 0, "owner_id": owner.user_id, "user_id": owner.user_id})

    replayed = [
        client.get("/v1/auditions", params={"cursor": c}, headers=other.headers).json()
        for c in (cursor, forged)
    ]

    assert cursor is not None and len(owners) == 3
    assert [page["items"] for page in replayed] == [[], []]
