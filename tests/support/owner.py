"""Owner routes: the owner gets it, another user gets 404, an anonymous caller 401.

Every later owner route is checked with `assert_owner_only`.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.support.http import assert_problem


def assert_owner_only(
    client: TestClient,
    method: str,
    url: str,
    *,
    owner: dict[str, str],
    stranger: dict[str, str],
    **request: Any,
) -> Any:
    assert_problem(client.request(method, url, **request), 401, "unauthenticated")
    assert_problem(client.request(method, url, headers=stranger, **request), 404, "not-found")
    response = client.request(method, url, headers=owner, **request)
    assert response.status_code < 300, response.text
    return response
