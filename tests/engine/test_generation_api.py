"""Generation over HTTP with the offline provider: the route answers the draft with the
provider, model and tokens; usage and artifacts are read back per clone and per user;
every route is owner-only; bad input is problem+json, never a 500."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aggregates.strategy_graph import check_graph
from api.routers.clones import graph_rules
from services.bootstrap import Services
from tests.support.clones import configure, create_clone
from tests.support.http import assert_problem
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

PROMPT = "Buy bitcoin when the 20-period SMA of hourly returns is positive"


def generate(
    client: TestClient, user: SignedIn, clone_id: str, prompt: str = PROMPT, **headers: str
) -> Any:
    return client.post(
        f"/v1/clones/{clone_id}/generate",
        json={"prompt": prompt},
        headers={**user.headers, **headers},
    )


def test_a_prompt_is_answered_with_the_draft_the_model_and_its_tokens(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)

    response = generate(client, owner, clone_id)

    assert response.status_code == 200, response.text
    body = response.json()
    check_graph(body["graph"], graph_rules(services.settings))
    assert (body["clone_id"], body["number"]) == (clone_id, 1)
    assert (body["provider"], body["model"]) == ("offline", "pumpparty-offline-1")
    assert body["usage"]["calls"] == 1 and body["usage"]["total_tokens"] > 0
    catch_up(services)
    draft = client.get(f"/v1/clones/{clone_id}", headers=owner.headers).json()["draft"]
    assert (draft["digest"], draft["graph"]) == (body["digest"], body["graph"])


def test_the_same_prompt_twice_is_the_same_graph_and_the_same_tokens(client: TestClient) -> None:
    owner = sign_in(client)
    first = generate(client, owner, create_clone(client, owner)).json()

    second = generate(client, owner, create_clone(client, owner)).json()

    assert (second["graph"], second["digest"], second["usage"]) == (
        first["graph"],
        first["digest"],
        first["usage"],
    )


def test_the_same_idempotency_key_answers_the_first_generation(client: TestClient) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    first = generate(client, owner, clone_id, **{"Idempotency-Key": "RETRO-CLOCK"}).json()

    again = generate(client, owner, clone_id, **{"Idempotency-Key": "RETRO-CLOCK"}).json()
    other = generate(client, owner, clone_id, "SOL ema", **{"Idempotency-Key": "RETRO-CLOCK"})

    assert again["generation_id"] == first["generation_id"] and again["replayed"] is True
    assert_problem(other, 409, "idempotency-key-reused")


def test_usage_is_read_back_per_clone_and_per_user(client: TestClient, services: Services) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    usage = generate(client, owner, clone_id).json()["usage"]
    catch_up(services)

    clone = client.get(f"/v1/clones/{clone_id}/usage", headers=owner.headers).json()
    mine = client.get("/v1/me/usage", headers=owner.headers).json()

    expected = {
        k: usage[k] for k in ("calls", "prompt_tokens", "completion_tokens", "total_tokens")
    }
    assert {k: clone["total"][k] for k in expected} == expected
    assert clone["by_model"][0] | expected == clone["by_model"][0]
    assert (clone["by_model"][0]["provider"], clone["by_model"][0]["purpose"]) == (
        "offline",
        "strategy-graph",
    )
    assert {k: mine["today"][k] for k in expected} == expected
    assert mine["budget"] == {
        "day": "2026-11-25",
        "daily_token_budget": 200_000,
        "used_tokens": usage["total_tokens"],
        "remaining_tokens": 200_000 - usage["total_tokens"],
        "resets_at": "2026-11-26T00:00:00Z",
    }
    assert [c["clone_id"] for c in mine["by_clone"]] == [clone_id]


def test_artifacts_are_listed_per_clone_by_their_sha256(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    body = generate(client, owner, clone_id).json()
    catch_up(services)

    listed = client.get(f"/v1/clones/{clone_id}/artifacts", headers=owner.headers).json()

    kinds = {item["kind"]: item for item in listed["items"]}
    assert list(kinds) == ["prompt", "raw-output", "graph"]
    assert kinds["graph"]["sha256"] == body["digest"]  # the graph is stored under its version id
    for item in listed["items"]:
        content = client.get(
            f"/v1/clones/{clone_id}/artifacts/{item['sha256']}", headers=owner.headers
        )
        assert content.status_code == 200
        assert hashlib.sha256(content.content).hexdigest() == item["sha256"]
        assert len(content.content) == item["size_bytes"]
        assert content.headers["content-type"].startswith(item["media_type"])


def test_an_artifact_is_stored_once_however_often_it_is_made(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    generate(client, owner, clone_id)
    generate(client, owner, clone_id)
    catch_up(services)

    items = client.get(f"/v1/clones/{clone_id}/artifacts", headers=owner.headers).json()["items"]

    assert len(items) == 6 and len({item["sha256"] for item in items}) == 3


def test_artifacts_page_with_a_cursor(client: TestClient, services: Services) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    generate(client, owner, clone_id)
    catch_up(services)
    url = f"/v1/clones/{clone_id}/artifacts"

    first = client.get(url, params={"limit": 2}, headers=owner.headers).json()
    rest = client.get(url, params={"cursor": first["next_cursor"]}, headers=owner.headers).json()

    assert [i["kind"] for i in first["items"] + rest["items"]] == ["prompt", "raw-output", "graph"]
    assert rest["next_cursor"] is None


def test_generation_beyond_the_daily_budget_is_429_until_the_next_utc_day(
    client: TestClient,
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    configure(client, generation_daily_token_budget=100)
    generate(client, owner, clone_id)

    refused = generate(client, owner, clone_id)

    assert_problem(refused, 429, "token-budget-exhausted")
    assert refused.headers["Retry-After"] == str(12 * 3600)  # the clock reads 12:00 UTC


def test_the_generation_routes_are_owner_only(client: TestClient, services: Services) -> None:
    owner, stranger = sign_in(client), sign_in(client)
    clone_id = create_clone(client, owner)

    assert_owner_only(
        client,
        "POST",
        f"/v1/clones/{clone_id}/generate",
        owner=owner.headers,
        stranger=stranger.headers,
        json={"prompt": PROMPT},
    )
    catch_up(services)
    artifacts = assert_owner_only(
        client,
        "GET",
        f"/v1/clones/{clone_id}/artifacts",
        owner=owner.headers,
        stranger=stranger.headers,
    ).json()["items"]
    for url in (
        f"/v1/clones/{clone_id}/usage",
        f"/v1/clones/{clone_id}/artifacts/{artifacts[0]['sha256']}",
    ):
        assert_owner_only(client, "GET", url, owner=owner.headers, stranger=stranger.headers)
    assert_problem(client.get("/v1/me/usage"), 401, "unauthenticated")


def test_a_stranger_learns_nothing_of_an_artifact_by_its_hash(
    client: TestClient, services: Services
) -> None:
    owner, stranger = sign_in(client), sign_in(client)
    body = generate(client, owner, create_clone(client, owner)).json()
    own_clone = create_clone(client, stranger)
    catch_up(services)

    response = client.get(
        f"/v1/clones/{own_clone}/artifacts/{body['digest']}", headers=stranger.headers
    )

    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": "x" * 4001},
        {"prompt": "nul\u0000byte"},
        {"prompt": "reversed \u202e text"},
        {"prompt": 42},
        {"prompt": "BTC", "extra": True},
        [],
    ],
    ids=["missing", "empty", "blank", "too-long", "nul", "bidi", "number", "extra", "list"],
)
def test_a_bad_prompt_is_a_problem_never_a_500(client: TestClient, body: Any) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)

    response = client.post(f"/v1/clones/{clone_id}/generate", json=body, headers=owner.headers)

    assert_problem(response, 422, "invalid-request")


def test_bad_ids_are_problems_never_a_500(client: TestClient) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)

    assert_problem(generate(client, owner, "not-a-uuid"), 422, "invalid-request")
    assert_problem(
        generate(client, owner, "00000000-0000-0000-0000-000000000000"), 404, "not-found"
    )
    assert_problem(
        client.get(f"/v1/clones/{clone_id}/artifacts/XYZ", headers=owner.headers),
        422,
        "invalid-request",
    )
    assert_problem(
        client.get(
            f"/v1/clones/{clone_id}/artifacts", params={"cursor": "@@"}, headers=owner.headers
        ),
        422,
        "invalid-cursor",
    )


def test_an_archived_clone_takes_no_generation(client: TestClient) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    client.post(f"/v1/clones/{clone_id}/archive", headers=owner.headers)

    assert_problem(generate(client, owner, clone_id), 409, "clone-archived")
