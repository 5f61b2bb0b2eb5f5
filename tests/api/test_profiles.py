from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.bootstrap import Services
from tests.support.clones import (
    approved_clone,
    configure,
    create_clone,
    make_admin,
    submit_profile,
)
from tests.support.http import assert_problem
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

SPAM = {"reason": "spam", "text": "link farm in the bio"}


def public(client: TestClient, profile_id: str) -> Any:
    return client.get(f"/v1/public/profiles/{profile_id}")


def report(client: TestClient, user: SignedIn, profile_id: str) -> Any:
    return client.post(f"/v1/public/profiles/{profile_id}/reports", json=SPAM, headers=user.headers)


def moderate(client: TestClient, admin: SignedIn, profile_id: str, action: str) -> Any:
    return client.post(
        f"/v1/admin/moderation/profiles/{profile_id}/{action}",
        json={"reason": f"RETRO-CLOCK {action}"},
        headers=admin.headers,
    )


def event_types(services: Services, profile_id: str) -> list[str]:
    with psycopg.connect(services.url) as conn:
        rows = conn.execute(
            "SELECT event_type FROM audit_log WHERE aggregate_id = %s ORDER BY position",
            (profile_id,),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_pending_profile_is_not_public_until_approved(
    client: TestClient, services: Services
) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    profile_id = submit_profile(client, owner, create_clone(client, owner))
    catch_up(services)
    before = public(client, profile_id)

    moderate(client, admin, profile_id, "approve")
    catch_up(services)

    assert_problem(before, 404, "not-found")
    after = public(client, profile_id)
    assert after.status_code == 200 and after.json()["display_name"] == "Retro Clock"


def test_an_edit_returns_the_profile_to_pending(client: TestClient, services: Services) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    clone_id, profile_id = approved_clone(client, owner, admin)

    edited = client.put(
        f"/v1/clones/{clone_id}/profile",
        json={"display_name": "Retro Clock II", "links": ["https://example.com/retro"]},
        headers=owner.headers,
    )
    catch_up(services)

    assert edited.json()["status"] == "pending"
    assert_problem(public(client, profile_id), 404, "not-found")
    own = client.get(f"/v1/clones/{clone_id}/profile", headers=owner.headers).json()
    assert own["status"] == "pending" and own["links"] == ["https://example.com/retro"]


def test_a_rejection_carries_its_reason_to_the_owner(
    client: TestClient, services: Services
) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    clone_id = create_clone(client, owner)
    profile_id = submit_profile(client, owner, clone_id)

    rejected = moderate(client, admin, profile_id, "reject")
    catch_up(services)

    assert rejected.json()["status"] == "rejected"
    own = client.get(f"/v1/clones/{clone_id}/profile", headers=owner.headers).json()
    assert own["status_reason"] == "RETRO-CLOCK reject"


def test_reports_from_enough_distinct_users_hide_the_profile(
    client: TestClient, services: Services
) -> None:
    configure(client, clone_report_threshold=2, clone_report_min_account_age=0)
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)
    first, second = sign_in(client), sign_in(client)

    report(client, first, profile_id)
    report(client, first, profile_id)  # the same reporter again: counted once
    catch_up(services)
    still_public = public(client, profile_id)
    report(client, second, profile_id)
    catch_up(services)

    assert still_public.status_code == 200
    assert_problem(public(client, profile_id), 404, "not-found")
    queue = client.get(
        "/v1/admin/moderation/queue", params={"awaiting": "review"}, headers=admin.headers
    ).json()
    assert [(e["profile_id"], e["open_reports"]) for e in queue["items"]] == [(profile_id, 2)]


def test_a_repeated_report_is_answered_the_same(client: TestClient, services: Services) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)
    reporter = sign_in(client)

    first, again = report(client, reporter, profile_id), report(client, reporter, profile_id)

    assert first.status_code == again.status_code == 201
    assert first.json()["report_id"] == again.json()["report_id"]
    catch_up(services)
    assert event_types(services, profile_id).count("Reported") == 1


def test_admin_restore_shows_the_profile_again(client: TestClient, services: Services) -> None:
    configure(client, clone_report_threshold=1, clone_report_min_account_age=0)
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)
    report(client, sign_in(client), profile_id)

    restored = moderate(client, admin, profile_id, "restore")
    catch_up(services)

    assert restored.json()["status"] == "approved"
    assert public(client, profile_id).status_code == 200
    reports = client.get(
        f"/v1/admin/moderation/profiles/{profile_id}/reports", headers=admin.headers
    ).json()
    assert [r["status"] for r in reports["items"]] == ["restored"]
    assert event_types(services, profile_id) == [
        "Opened",
        "Submitted",
        "Approved",
        "Reported",
        "Hidden",
        "Restored",
    ]


def test_keep_hidden_leaves_it_hidden_until_the_owner_edits(
    client: TestClient, services: Services
) -> None:
    configure(client, clone_report_threshold=1, clone_report_min_account_age=0)
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)
    report(client, sign_in(client), profile_id)

    kept = moderate(client, admin, profile_id, "keep-hidden")
    catch_up(services)

    assert kept.json()["status"] == "kept_hidden"
    assert_problem(public(client, profile_id), 404, "not-found")


def test_a_profile_under_review_cannot_be_edited(client: TestClient, services: Services) -> None:
    configure(client, clone_report_threshold=1, clone_report_min_account_age=0)
    admin, owner = make_admin(client, services), sign_in(client)
    clone_id, profile_id = approved_clone(client, owner, admin)
    report(client, sign_in(client), profile_id)

    response = client.put(
        f"/v1/clones/{clone_id}/profile", json={"display_name": "Innocent"}, headers=owner.headers
    )

    assert_problem(response, 409, "profile-not-editable")


def test_hidden_and_unknown_profiles_cannot_be_reported(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    pending = submit_profile(client, owner, create_clone(client, owner))

    hidden = report(client, sign_in(client), pending)
    unknown = report(client, sign_in(client), "00000000-0000-0000-0000-000000000000")

    assert_problem(hidden, 404, "not-found")
    assert_problem(unknown, 404, "not-found")


def test_owners_cannot_report_themselves(client: TestClient, services: Services) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)

    assert_problem(report(client, owner, profile_id), 422, "own-profile-report")


def test_reporting_needs_a_signed_in_user_and_a_listed_reason(
    client: TestClient, services: Services
) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)
    url = f"/v1/public/profiles/{profile_id}/reports"

    anonymous = client.post(url, json=SPAM)
    unlisted = client.post(url, json={"reason": "vibes"}, headers=sign_in(client).headers)

    assert_problem(anonymous, 401, "unauthenticated")
    assert_problem(unlisted, 422, "invalid-request")


def test_decisions_on_the_wrong_state_are_conflicts(client: TestClient, services: Services) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    profile_id = submit_profile(client, owner, create_clone(client, owner))

    assert_problem(moderate(client, admin, profile_id, "restore"), 409, "profile-not-under-review")
    moderate(client, admin, profile_id, "approve")
    assert_problem(moderate(client, admin, profile_id, "reject"), 409, "profile-not-pending")


def test_a_repeated_decision_changes_nothing(client: TestClient, services: Services) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    profile_id = submit_profile(client, owner, create_clone(client, owner))

    first, again = (moderate(client, admin, profile_id, "approve") for _ in range(2))

    assert first.status_code == again.status_code == 200
    catch_up(services)
    assert event_types(services, profile_id).count("Approved") == 1


def test_the_queue_lists_submissions_awaiting_approval(
    client: TestClient, services: Services
) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    first = submit_profile(client, owner, create_clone(client, owner, "A"), "First")
    second = submit_profile(client, owner, create_clone(client, owner, "B"), "Second")
    catch_up(services)

    page = client.get(
        "/v1/admin/moderation/queue", params={"limit": 1}, headers=admin.headers
    ).json()
    rest = client.get(
        "/v1/admin/moderation/queue", params={"cursor": page["next_cursor"]}, headers=admin.headers
    ).json()

    assert [e["profile_id"] for e in page["items"] + rest["items"]] == [first, second]
    assert {e["awaiting"] for e in page["items"] + rest["items"]} == {"approval"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/moderation/queue"),
        ("GET", "/v1/admin/moderation/profiles/{id}/reports"),
        ("POST", "/v1/admin/moderation/profiles/{id}/approve"),
        ("POST", "/v1/admin/moderation/profiles/{id}/reject"),
        ("POST", "/v1/admin/moderation/profiles/{id}/restore"),
        ("POST", "/v1/admin/moderation/profiles/{id}/keep-hidden"),
        ("POST", "/v1/admin/moderation/profiles/{id}/ban"),
    ],
)
def test_moderation_needs_the_admin_role(client: TestClient, method: str, path: str) -> None:
    owner = sign_in(client)
    profile_id = submit_profile(client, owner, create_clone(client, owner))

    response = client.request(
        method,
        path.format(id=profile_id),
        json={"reason": "because"} if method == "POST" else None,
        headers=owner.headers,
    )

    assert_problem(response, 403, "forbidden")


def test_archiving_the_clone_withdraws_its_profile(client: TestClient, services: Services) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    clone_id, profile_id = approved_clone(client, owner, admin)

    client.post(f"/v1/clones/{clone_id}/archive", headers=owner.headers)
    catch_up(services)

    assert_problem(public(client, profile_id), 404, "not-found")
