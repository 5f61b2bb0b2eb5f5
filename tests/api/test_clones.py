from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from projections.paging import encode_cursor
from scripts.worker import Worker
from services.bootstrap import Services
from tests.support.clones import (
    configure,
    create_clone,
    full_graph,
    make_admin,
    save_draft,
    submit_profile,
)
from tests.support.http import assert_problem
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import sign_in


def publish(client: TestClient, user: Any, clone_id: str) -> Any:
    return client.post(f"/v1/clones/{clone_id}/versions", headers=user.headers)


@pytest.fixture
def worker(services: Services) -> Iterator[Worker]:
    """The projections followed live in background threads, as in production: a read right
    after a command races the runner instead of finding everything caught up."""
    running = Worker(services)
    running.start()
    yield running
    running.stop()


def test_a_clone_just_created_is_never_a_false_404(
    client: TestClient, services: Services, worker: Worker
) -> None:
    owners = [sign_in(client) for _ in range(10)]  # five active clones each, the limit
    behind = 0

    for attempt in range(50):
        owner = owners[attempt % len(owners)]
        created = client.post("/v1/clones", json={"name": f"LIVE-{attempt}"}, headers=owner.headers)
        assert created.status_code == 201, created.text
        clone_id, position = created.json()["clone_id"], created.json()["position"]
        behind += services.projections.position("clones") < position

        response = client.get(f"/v1/clones/{clone_id}", headers=owner.headers)

        assert response.status_code == 200, (attempt, response.text)
        assert response.json()["name"] == f"LIVE-{attempt}"
    assert behind > 0, "the projection kept up every time: this test raced nothing"


def test_create_save_drafts_and_publish(client: TestClient, services: Services) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, full_graph(z={"window": 12}))
    draft = save_draft(client, owner, clone_id, full_graph())

    published = publish(client, owner, clone_id)

    assert published.status_code == 201
    assert published.json()["version_id"] == draft["digest"] and published.json()["number"] == 1
    catch_up(services)
    detail = client.get(f"/v1/clones/{clone_id}", headers=owner.headers).json()
    assert [d["number"] for d in detail["drafts"]] == [2, 1]
    assert detail["draft"]["graph"] == draft["graph"]
    assert [v["version_id"] for v in detail["versions"]] == [draft["digest"]]
    versions = client.get(f"/v1/clones/{clone_id}/versions", headers=owner.headers).json()
    assert versions["items"][0]["graph"] == draft["graph"]


def test_the_version_id_is_the_same_whatever_the_key_order(client: TestClient) -> None:
    owner = sign_in(client)
    graph = full_graph()
    reordered = json.loads(
        json.dumps({"edges": graph["edges"], "nodes": graph["nodes"]}, sort_keys=True)
    )
    first, second = create_clone(client, owner, "A"), create_clone(client, owner, "B")
    save_draft(client, owner, first, graph)
    save_draft(client, owner, second, reordered)

    ids = {publish(client, owner, clone_id).json()["version_id"] for clone_id in (first, second)}

    assert len(ids) == 1


def test_publishing_the_same_graph_twice_creates_one_version(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, full_graph())
    first = publish(client, owner, clone_id)

    save_draft(client, owner, clone_id, full_graph(z={"window": 12}))
    save_draft(client, owner, clone_id, full_graph())
    again = publish(client, owner, clone_id)

    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["version_id"] == first.json()["version_id"]
    catch_up(services)
    listed = client.get(f"/v1/clones/{clone_id}/versions", headers=owner.headers).json()
    assert len(listed["items"]) == 1


def test_a_guardrail_failure_is_a_problem_naming_the_node(client: TestClient) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    graph = full_graph(buy={"asset": "DOGE"})

    response = client.put(f"/v1/clones/{clone_id}/draft", json=graph, headers=owner.headers)

    body = assert_problem(response, 422, "asset-not-allowed")
    assert body["errors"] == [
        {
            "rule": "asset-not-allowed",
            "pointer": "/nodes/6/asset",
            "detail": body["errors"][0]["detail"],
        }
    ]


def test_publishing_checks_the_draft_again_under_todays_rules(client: TestClient) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, full_graph())
    configure(client, clone_assets=["ETH"])

    response = publish(client, owner, clone_id)

    body = assert_problem(response, 422, "asset-not-allowed")
    assert {e["pointer"] for e in body["errors"]} == {"/nodes/0/asset", "/nodes/4/asset"}


def test_publishing_without_a_draft_is_a_conflict(client: TestClient) -> None:
    owner = sign_in(client)

    response = publish(client, owner, create_clone(client, owner))

    assert_problem(response, 409, "clone-has-no-draft")


def test_a_banned_clone_cannot_publish(client: TestClient, services: Services) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, full_graph())
    profile_id = submit_profile(client, owner, clone_id)
    banned = client.post(
        f"/v1/admin/moderation/profiles/{profile_id}/ban",
        json={"reason": "impersonates a fund"},
        headers=admin.headers,
    )

    response = publish(client, owner, clone_id)

    assert banned.status_code == 200 and banned.json()["status"] == "banned"
    assert_problem(response, 409, "clone-banned")
    catch_up(services)
    detail = client.get(f"/v1/clones/{clone_id}", headers=owner.headers).json()
    assert detail["banned"] is True and detail["ban_reason"] == "impersonates a fund"


def test_a_retried_create_returns_the_first_clone(client: TestClient) -> None:
    owner = sign_in(client)
    headers = {**owner.headers, "Idempotency-Key": "RETRO-CLOCK-1"}

    first = client.post("/v1/clones", json={"name": "A"}, headers=headers)
    again = client.post("/v1/clones", json={"name": "A"}, headers=headers)
    other_body = client.post("/v1/clones", json={"name": "B"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert first.json()["clone_id"] == again.json()["clone_id"]
    assert_problem(other_body, 409, "idempotency-key-reused")


def test_idempotency_keys_belong_to_their_user(client: TestClient) -> None:
    alice, bob = sign_in(client), sign_in(client)
    key = {"Idempotency-Key": "RETRO-CLOCK-SHARED"}

    first = client.post("/v1/clones", json={"name": "A"}, headers={**alice.headers, **key})
    second = client.post("/v1/clones", json={"name": "A"}, headers={**bob.headers, **key})

    assert second.status_code == 201
    assert first.json()["clone_id"] != second.json()["clone_id"]


def test_active_clones_are_limited_and_archived_ones_do_not_count(client: TestClient) -> None:
    configure(client, clone_active_limit=2)
    owner = sign_in(client)
    first = create_clone(client, owner, "A")
    create_clone(client, owner, "B")

    refused = client.post("/v1/clones", json={"name": "C"}, headers=owner.headers)
    client.post(f"/v1/clones/{first}/archive", headers=owner.headers)
    allowed = client.post("/v1/clones", json={"name": "C"}, headers=owner.headers)

    assert_problem(refused, 409, "clone-limit-reached")
    assert allowed.status_code == 201


def test_an_archived_clone_takes_no_drafts(client: TestClient) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    client.post(f"/v1/clones/{clone_id}/archive", headers=owner.headers)

    response = client.put(f"/v1/clones/{clone_id}/draft", json=full_graph(), headers=owner.headers)

    assert_problem(response, 409, "clone-archived")


def test_rename_and_list_my_clones(client: TestClient, services: Services) -> None:
    owner, other = sign_in(client), sign_in(client)
    first = create_clone(client, owner, "A")
    second = create_clone(client, owner, "B")
    create_clone(client, other, "NOT-MINE")

    client.patch(f"/v1/clones/{first}", json={"name": "A2"}, headers=owner.headers)
    client.post(f"/v1/clones/{second}/archive", headers=owner.headers)
    catch_up(services)

    page = client.get("/v1/clones", params={"limit": 1}, headers=owner.headers).json()
    rest = client.get(
        "/v1/clones", params={"cursor": page["next_cursor"]}, headers=owner.headers
    ).json()
    active = client.get("/v1/clones", params={"status": "active"}, headers=owner.headers).json()
    assert [c["name"] for c in page["items"] + rest["items"]] == ["A2", "B"]
    assert rest["next_cursor"] is None
    assert [c["clone_id"] for c in active["items"]] == [first]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"description": "mine"}),
        ("PUT", "/draft", "graph"),
        ("POST", "/versions", None),
        ("GET", "/versions", None),
        ("PUT", "/profile", {"display_name": "Retro Clock"}),
        ("GET", "/profile", None),
        ("POST", "/archive", None),
    ],
)
def test_every_clone_route_is_owner_only(
    client: TestClient, services: Services, method: str, suffix: str, body: Any
) -> None:
    owner, stranger = sign_in(client), sign_in(client)
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, full_graph())
    submit_profile(client, owner, clone_id)
    catch_up(services)

    assert_owner_only(
        client,
        method,
        f"/v1/clones/{clone_id}{suffix}",
        owner=owner.headers,
        stranger=stranger.headers,
        json=full_graph() if body == "graph" else body,
    )


def test_a_forged_cursor_is_a_problem(client: TestClient) -> None:
    owner = sign_in(client)

    forged = encode_cursor({"position": "0; DROP TABLE clones"})

    response = client.get("/v1/clones", params={"cursor": forged}, headers=owner.headers)

    assert_problem(response, 422, "invalid-cursor")


def test_another_users_cursor_shows_none_of_their_clones(
    client: TestClient, services: Services
) -> None:
    owner, other = sign_in(client), sign_in(client)
    owners = {create_clone(client, owner, name) for name in ("A", "B", "C")}
    mine = create_clone(client, other, "MINE")
    catch_up(services)
    cursor = client.get("/v1/clones", params={"limit": 1}, headers=owner.headers).json()[
        "next_cursor"
    ]
    # The owner's cursor replayed, and one that names the owner outright.
    forged = encode_cursor({"position": 0, "owner_id": owner.user_id, "user_id": owner.user_id})

    replayed = [
        client.get("/v1/clones", params={"cursor": c}, headers=other.headers).json()
        for c in (cursor, forged)
    ]

    seen = {clone["clone_id"] for page in replayed for clone in page["items"]}
    assert cursor is not None and not seen & owners
    assert {c["clone_id"] for c in replayed[1]["items"]} == {mine}
