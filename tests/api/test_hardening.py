"""Issue 15: each finding of the security review, performed over HTTP."""

from __future__ import annotations

import json

import orjson
import psycopg
from fastapi.testclient import TestClient

from api.deps import positions_of
from api.problems import MAX_ERRORS
from api.request_id import valid_client_id
from runtime.schema import EVENTS_TABLE
from services.bootstrap import Services
from tests.support.clones import create_clone, full_graph
from tests.support.http import assert_problem
from tests.support.projections import catch_up
from tests.support.wallets import new_wallet, request_nonce, sign, sign_in

BEYOND = 1_000_000_000_000_000

# --- H1: an anonymous caller cannot stall a read ------------------------------------------


def test_an_anonymous_position_beyond_the_head_is_refused_at_once(client: TestClient) -> None:
    by_query = client.get("/v1/me", params={"min_position": BEYOND})
    by_header = client.get("/v1/clones", headers={"X-Min-Position": str(BEYOND)})

    assert_problem(by_query, 409, "position-beyond-head")
    assert_problem(by_header, 409, "position-beyond-head")


def test_a_signed_in_position_beyond_the_head_is_refused_too(client: TestClient) -> None:
    owner = sign_in(client)

    response = client.get("/v1/me", params={"min_position": BEYOND}, headers=owner.headers)

    assert_problem(response, 409, "position-beyond-head")


def test_an_anonymous_reachable_position_does_not_wait_before_its_401(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)  # no catch-up: the users projection is behind
    positions_of(services.reads).waiting = services.settings.read_wait_limit  # any wait: 503

    response = client.get("/v1/me", params={"min_position": owner.position})

    assert_problem(response, 401, "unauthenticated")


def test_a_reachable_position_still_works_for_the_owner(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    catch_up(services)

    response = client.get("/v1/me", params={"min_position": owner.position}, headers=owner.headers)

    assert response.status_code == 200, response.text
    assert response.json()["id"] == owner.user_id


def test_waits_beyond_the_cap_are_refused_at_once(client: TestClient, services: Services) -> None:
    owner = sign_in(client)  # no catch-up: the users projection is behind
    positions_of(services.reads).waiting = services.settings.read_wait_limit

    response = client.get("/v1/me", params={"min_position": owner.position}, headers=owner.headers)

    body = assert_problem(response, 503, "too-many-waits")
    assert response.headers["retry-after"] == "1"
    assert body["status"] == 503


# --- M2: request bodies are limited before anything parses them ---------------------------


def head(client: TestClient) -> int:
    position: int = client.get("/v1/health").json()["head_position"]
    return position


def test_an_oversized_body_is_refused_before_parsing_and_writes_nothing(
    client: TestClient, services: Services
) -> None:
    before = head(client)
    limit = services.settings.max_body_bytes
    body = b'{"address": "' + b"a" * limit + b'"}'

    declared = client.post(
        "/v1/auth/nonce", content=body, headers={"Content-Type": "application/json"}
    )
    streamed = client.post(
        "/v1/auth/nonce",
        content=iter([body[:1000], body[1000:]]),  # chunked: no Content-Length
        headers={"Content-Type": "application/json"},
    )

    assert_problem(declared, 413, "payload-too-large")
    assert_problem(streamed, 413, "payload-too-large")
    assert head(client) == before


def test_a_draft_just_under_its_limit_is_judged_by_its_rules(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    limit = services.settings.max_draft_body_bytes
    assert limit > services.settings.max_body_bytes
    graph = full_graph()
    graph["padding"] = ""
    size = len(json.dumps(graph).encode())
    graph["padding"] = "x" * (limit - size - 16)

    response = client.put(f"/v1/clones/{clone_id}/draft", json=graph, headers=owner.headers)

    assert response.status_code != 413, response.text
    assert response.status_code in (200, 201, 422), response.text


def test_a_draft_over_its_limit_is_refused(client: TestClient, services: Services) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    graph = full_graph()
    graph["padding"] = "x" * services.settings.max_draft_body_bytes

    response = client.put(f"/v1/clones/{clone_id}/draft", json=graph, headers=owner.headers)

    assert_problem(response, 413, "payload-too-large")


def test_a_422_lists_at_most_the_cap_and_counts_the_rest(client: TestClient) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    graph = full_graph()
    graph.update({f"unknown{i}": i for i in range(5000)})  # one fault each

    response = client.put(f"/v1/clones/{clone_id}/draft", json=graph, headers=owner.headers)

    body = assert_problem(response, 422, "graph-malformed")
    assert len(body["errors"]) == MAX_ERRORS
    assert body["errors_omitted"] == 5000 - MAX_ERRORS


# --- L5: the server makes every correlation id --------------------------------------------


def correlation_ids(services: Services) -> set[str]:
    with psycopg.connect(services.url) as conn:
        rows = conn.execute(f"SELECT state FROM {EVENTS_TABLE}").fetchall()
    return {str(orjson.loads(bytes(state)).get("correlation_id")) for (state,) in rows}


def test_a_client_request_id_never_becomes_a_correlation_id(
    client: TestClient, services: Services
) -> None:
    wallet = new_wallet()
    message = request_nonce(client, wallet)["message"]
    response = client.post(
        "/v1/auth/verify",
        json={"message": message, "signature": sign(wallet, message)},
        headers={"X-Request-ID": "mine"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-client-request-id"] == "mine"
    assert response.headers["x-request-id"] != "mine"
    ids = correlation_ids(services)
    assert "mine" not in ids
    assert response.headers["x-request-id"] in ids


def test_a_request_id_with_a_trailing_newline_is_not_taken_as_given() -> None:
    assert valid_client_id("req-RETRO-CLOCK") == "req-RETRO-CLOCK"
    assert valid_client_id("req-RETRO-CLOCK\n") is None
    assert valid_client_id("bad id with spaces") is None
    assert valid_client_id("x" * 129) is None
