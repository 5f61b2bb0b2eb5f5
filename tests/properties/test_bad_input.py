"""Every route, fed garbage, answers with problem+json and never a 500.

Routes are read from the app's own OpenAPI document, so routes added later are covered
without touching this test.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.tokens import AccessClaims
from projections.paging import encode_cursor
from tests.conftest import AUDITOR_TOKEN, ENGINE_TOKEN
from tests.support.http import PROBLEM

ROUTES = [
    (method.upper(), path, operation)
    for path, item in create_app().openapi()["paths"].items()
    for method, operation in item.items()
]
TOKENS = [None, AUDITOR_TOKEN, ENGINE_TOKEN, "not-a-token", "user", "admin"]

# Cursors that decode but carry the wrong things: they must be refused, not crash.
forged_cursors = st.sampled_from(
    [
        encode_cursor(after)
        for after in (
            {"position": "x"},
            {"position": -1},
            {"position": 2**63},
            {"started_at": "x", "session_id": 5},
            {"started_at": 5},
            {"granted_at": "2026-01-01T00:00:00+00:00", "entitlement_id": "not-a-uuid"},
            {"number": None},
        )
    ]
)
garbage = st.one_of(
    forged_cursors,
    st.text(max_size=40),
    st.sampled_from(
        ["", "null", "-1", "0", "1e309", "NaN", "'; DROP TABLE x;--", "\u0000", "9" * 40]
    ),
)
bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"a": 1}', b'"text"', b"1" * 5000]),
)


def signed_in(client: TestClient, token: str | None) -> str | None:
    """A real access token for a user (or an admin) who exists nowhere else, so garbage
    also reaches the handlers behind user and admin checks."""
    if token not in ("user", "admin"):
        return token
    roles = frozenset({"admin"}) if token == "admin" else frozenset()
    claims = AccessClaims(uuid4(), "0x" + "ab" * 20, roles, uuid4())
    return str(client.app.state.access_tokens.mint(claims, client.app.state.clock()))  # type: ignore[attr-defined]


def assert_clean_answer(response: Any) -> None:
    # 503 is the one deliberate 5xx: a read asked to wait for a position not reached yet.
    behind = response.status_code == 503 and "projection-behind" in response.text
    assert response.status_code < 500 or behind, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["type"].startswith("/problems/")


@pytest.mark.parametrize(
    ("method", "path", "operation"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_garbage_gets_a_problem_never_a_500(
    client: TestClient, method: str, path: str, operation: dict[str, Any], data: st.DataObject
) -> None:
    url = re.sub(r"\{[^}]+\}", lambda _: quote(data.draw(garbage), safe="") or "x", path)
    params = {
        p["name"]: data.draw(garbage) for p in operation.get("parameters", []) if p["in"] == "query"
    }
    token = signed_in(client, data.draw(st.sampled_from(TOKENS)))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["X-Min-Position"] = data.draw(st.sampled_from(["", "abc", "-5", "0"]))
    if not headers["X-Min-Position"]:
        del headers["X-Min-Position"]

    response = client.request(
        method,
        url,
        params=params,
        headers={**headers, "Content-Type": "application/json"},
        content=data.draw(bodies) if "requestBody" in operation else None,
    )

    assert_clean_answer(response)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_unknown_routes_and_methods_are_problems(client: TestClient, method: str) -> None:
    assert_clean_answer(client.request(method, "/v1/no-such-thing"))
    assert_clean_answer(client.request(method, "/v1/health/projections/x"))
    assert client.request("DELETE", "/v1/health").headers["content-type"].startswith(PROBLEM)
