"""`/v1/admin/dead-letters` over HTTP: listed by kind and page, shown, replayed and
discarded by an admin (events with the admin and the reason), refused to anyone else,
bad input answered with problem+json; the `pumpparty_dead_letters{kind}` gauge."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aggregates.dead_letters import DeadLetter, dead_letter_id
from projections.paging import encode_cursor
from runtime.clock import FixedClock
from services.bootstrap import Services
from services.dead_letters import ScheduledRounds
from services.job_queue import JobQueue, QueuePolicy
from tests.support.clones import make_admin
from tests.support.http import assert_problem
from tests.support.wallets import SignedIn, sign_in

URL = "/v1/admin/dead-letters"
POLICY = QueuePolicy(lease=timedelta(seconds=30), max_attempts=2, backoff_base=5.0, backoff_max=5.0)


def broken() -> None:
    raise RuntimeError("the price feed is down")


def dead_rounds(services: Services, clock: FixedClock, *jobs: str) -> ScheduledRounds:
    """Each job's round fails until it is dead (two attempts, five seconds apart)."""
    rounds = ScheduledRounds(JobQueue(services.datastore, clock, POLICY, jitter=lambda: 1.0))
    for job in jobs:
        for _ in range(POLICY.max_attempts):
            rounds.run(job, broken)
            clock.advance(seconds=POLICY.backoff_max)
    return rounds


def letters(client: TestClient, admin: SignedIn, **params: Any) -> dict[str, Any]:
    response = client.get(URL, params=params, headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def gauge(client: TestClient, admin: SignedIn) -> dict[str, float]:
    response = client.get("/metrics", headers=admin.headers)
    assert response.status_code == 200, response.text
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name == "pumpparty_dead_letters"
        for sample in family.samples
    }


def test_an_admin_lists_shows_replays_and_discards_dead_letters(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    rounds = dead_rounds(services, clock, "prices", "digest", "arena")

    every = letters(client, admin)
    first_page = letters(client, admin, limit=2)
    second_page = letters(client, admin, limit=2, cursor=first_page["next_cursor"])
    only = letters(client, admin, kind="scheduled.digest")
    [digest] = only["items"]
    shown = client.get(f"{URL}/{digest['id']}", headers=admin.headers)
    counted = gauge(client, admin)

    assert [item["kind"] for item in every["items"]] == [
        "scheduled.arena",
        "scheduled.digest",
        "scheduled.prices",
    ]
    assert every["next_cursor"] is None
    assert [i["id"] for i in first_page["items"] + second_page["items"]] == [
        i["id"] for i in every["items"]
    ]
    assert second_page["next_cursor"] is None
    assert shown.status_code == 200 and shown.json() == digest
    assert (digest["state"], digest["attempts"], digest["subject"]) == ("dead", 2, "digest")
    assert digest["error"] == "RuntimeError: the price feed is down"
    assert digest["first_failed_at"] < digest["last_failed_at"]
    assert counted == {"scheduled.arena": 1, "scheduled.digest": 1, "scheduled.prices": 1}

    replayed = client.post(
        f"{URL}/{digest['id']}/replay", json={"reason": "feed back"}, headers=admin.headers
    )
    again = client.post(
        f"{URL}/{digest['id']}/replay", json={"reason": "twice"}, headers=admin.headers
    )
    arena = every["items"][0]["id"]
    discarded = client.post(
        f"{URL}/{arena}/discard", json={"reason": "arena job retired"}, headers=admin.headers
    )
    no_replay = client.post(f"{URL}/{arena}/replay", json={"reason": "oops"}, headers=admin.headers)
    ran = rounds.run("digest", lambda: "digest recorded")

    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["state"] == "replayed"
    assert_problem(again, 409, "job-not-dead")
    assert discarded.status_code == 200 and discarded.json()["state"] == "discarded"
    assert_problem(no_replay, 409, "dead-letter-discarded")
    assert ran.error is None
    assert [i["kind"] for i in letters(client, admin)["items"]] == ["scheduled.prices"]
    closed = letters(client, admin, include_closed="true")["items"]
    assert {i["kind"]: i["state"] for i in closed} == {
        "scheduled.arena": "discarded",
        "scheduled.digest": "replayed",
        "scheduled.prices": "dead",
    }
    assert gauge(client, admin) == {"scheduled.prices": 1}
    letter = services.event_log.read(DeadLetter, dead_letter_id(UUID(arena)))
    assert letter is not None and letter.discarded and letter.last_reason == "arena job retired"


def test_a_discard_needs_a_reason_and_bad_input_is_a_problem(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    dead_rounds(services, clock, "prices")
    [letter] = letters(client, admin)["items"]
    discard = f"{URL}/{letter['id']}/discard"

    assert_problem(client.post(discard, json={}, headers=admin.headers), 422, "invalid-request")
    assert_problem(
        client.post(discard, json={"reason": "   "}, headers=admin.headers), 422, "invalid-request"
    )
    assert_problem(
        client.post(discard, json={"reason": "ok", "force": True}, headers=admin.headers),
        422,
        "invalid-request",
    )
    assert_problem(
        client.get(f"{URL}/not-a-letter", headers=admin.headers), 404, "dead-letter-not-found"
    )
    assert_problem(
        client.get(f"{URL}/projection.audit_log", headers=admin.headers),
        404,
        "dead-letter-not-found",
    )
    assert_problem(
        client.post(f"{URL}/{UUID(int=7)}/discard", json={"reason": "x"}, headers=admin.headers),
        404,
        "job-not-found",
    )
    assert_problem(
        client.get(URL, params={"cursor": "bm90LWEtY3Vyc29y"}, headers=admin.headers),
        422,
        "invalid-cursor",
    )
    assert_problem(
        client.get(URL, params={"kind": "no spaces"}, headers=admin.headers),
        422,
        "invalid-request",
    )
    assert letters(client, admin)["items"] == [letter], "nothing changed"


def test_only_admins_see_or_decide_about_dead_letters(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    dead_rounds(services, clock, "prices")
    admin = make_admin(client, services)
    [letter] = letters(client, admin)["items"]
    user = sign_in(client)

    for method, path, body in (
        ("GET", URL, None),
        ("GET", f"{URL}/{letter['id']}", None),
        ("POST", f"{URL}/{letter['id']}/replay", {"reason": "mine now"}),
        ("POST", f"{URL}/{letter['id']}/discard", {"reason": "mine now"}),
    ):
        refused = client.request(method, path, json=body, headers=user.headers)
        anonymous = client.request(method, path, json=body)
        assert_problem(refused, 403, "forbidden")
        assert anonymous.status_code == 401, anonymous.text

    assert letters(client, admin)["items"] == [letter]


def test_a_cursor_this_service_did_not_give_out_is_refused(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    dead_rounds(services, clock, "prices")

    for after in (
        {"at": "2026-11-25T12:00:00", "id": "x"},  # no time zone
        {"at": "2026-11-25T12:00:00+00:00", "id": 7},
        {"at": "yesterday", "id": "x"},
        {"id": "x"},
    ):
        refused = client.get(URL, params={"cursor": encode_cursor(after)}, headers=admin.headers)
        assert_problem(refused, 422, "invalid-cursor")
