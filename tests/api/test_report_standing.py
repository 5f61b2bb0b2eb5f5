"""Security review (issue 15), L4: a handful of fresh wallets cannot hide a public profile.

Only reporters in good standing (first signed in at least
`PUMPPARTY_CLONE_REPORT_MIN_ACCOUNT_AGE` ago, or moderators and admins) count towards the
threshold; everyone else's report is recorded for the moderators, and hides nothing."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi.testclient import TestClient

from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.support.clones import approved_clone, configure, make_admin
from tests.support.http import assert_problem
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

DAY = 24 * 3600
SPAM = {"reason": "spam", "text": "hide this"}


def report(client: TestClient, user: SignedIn, profile_id: str) -> Any:
    response = client.post(
        f"/v1/public/profiles/{profile_id}/reports", json=SPAM, headers=user.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def reported_events(services: Services, profile_id: str) -> list[bool]:
    """Whether each recorded report counted, in log order."""
    with psycopg.connect(services.url) as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8') FROM pumpparty_events"
            " WHERE originator_id = %s AND topic LIKE %s ORDER BY notification_id",
            (profile_id, "%PublicProfile.Reported"),
        ).fetchall()
    return ['"counts":true' in row[0] for row in rows]


def test_fresh_wallets_cannot_hide_a_profile(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    configure(client, clone_report_threshold=3, clone_report_min_account_age=7 * DAY)
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)

    for _ in range(5):  # free wallets, made for the purpose
        report(client, sign_in(client), profile_id)
    catch_up(services)

    assert client.get(f"/v1/public/profiles/{profile_id}").status_code == 200
    assert reported_events(services, profile_id) == [False] * 5
    # Recorded for the moderators all the same.
    reports = client.get(
        f"/v1/admin/moderation/profiles/{profile_id}/reports", headers=admin.headers
    ).json()
    assert len(reports["items"]) == 5


def test_reporters_in_good_standing_still_hide_a_profile(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    configure(client, clone_report_threshold=2, clone_report_min_account_age=7 * DAY)
    established = [sign_in(client), sign_in(client)]
    clock.advance(days=8)
    # Tokens minted eight days ago have expired: the same wallets sign in again.
    established = [sign_in(client, user.wallet) for user in established]
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)

    report(client, established[0], profile_id)
    report(client, sign_in(client), profile_id)  # fresh: recorded, not counted
    catch_up(services)
    still_public = client.get(f"/v1/public/profiles/{profile_id}")
    report(client, established[1], profile_id)
    catch_up(services)

    assert still_public.status_code == 200
    assert_problem(client.get(f"/v1/public/profiles/{profile_id}"), 404, "not-found")
    assert reported_events(services, profile_id) == [True, False, True]


def test_a_moderators_report_counts_however_new_the_wallet(
    client: TestClient, services: Services
) -> None:
    configure(client, clone_report_threshold=1, clone_report_min_account_age=7 * DAY)
    admin, owner = make_admin(client, services), sign_in(client)
    _, profile_id = approved_clone(client, owner, admin)
    moderator = sign_in(client)
    granted = client.post(
        f"/v1/admin/users/{moderator.user_id}/roles",
        json={"role": "moderator"},
        headers=admin.headers,
    )
    assert granted.status_code in (200, 201), granted.text

    report(client, moderator, profile_id)
    catch_up(services)

    assert_problem(client.get(f"/v1/public/profiles/{profile_id}"), 404, "not-found")
