"""Security review (issue 15), L6: hidden and direction-changing characters in text that
others see (a name that reads backwards to a moderator, a look-alike with a zero-width
joiner) are refused in every user-visible field, with the usual 422, and write nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from services.bootstrap import Services
from tests.support.clones import approved_clone, create_clone, make_admin, submit_profile
from tests.support.http import assert_problem
from tests.support.wallets import sign_in

HIDDEN = [
    pytest.param("\u202e", id="right-to-left-override"),
    pytest.param("\u202a", id="left-to-right-embedding"),
    pytest.param("\u2067", id="right-to-left-isolate"),
    pytest.param("\u200f", id="right-to-left-mark"),
    pytest.param("\u061c", id="arabic-letter-mark"),
    pytest.param("\u200b", id="zero-width-space"),
    pytest.param("\u200d", id="zero-width-joiner"),
    pytest.param("\u2060", id="word-joiner"),
    pytest.param("\ufeff", id="zero-width-no-break-space"),
    pytest.param("\x1b", id="c0-escape"),
    pytest.param("\x9b", id="c1-control-sequence-introducer"),
    pytest.param("\x85", id="c1-next-line"),
]


def log_length(services: Services) -> int:
    with psycopg.connect(services.url) as conn:
        row = conn.execute("SELECT count(*) FROM pumpparty_events").fetchone()
    assert row is not None
    return int(row[0])


def spoof(char: str) -> str:
    return f"Retro{char}Clock"


@pytest.mark.parametrize("char", HIDDEN)
def test_hidden_characters_are_refused_in_every_visible_field(
    client: TestClient, services: Services, char: str
) -> None:
    admin, owner = make_admin(client, services), sign_in(client)
    clone_id, profile_id = approved_clone(client, owner, admin)
    reporter = sign_in(client)
    profile = {"display_name": "Retro Clock", "bio": "Trades the hourly drift."}
    attempts: dict[str, Any] = {
        "clone name": lambda: client.post(
            "/v1/clones", json={"name": spoof(char)}, headers=owner.headers
        ),
        "clone description": lambda: client.post(
            "/v1/clones",
            json={"name": "Fine", "description": spoof(char)},
            headers=owner.headers,
        ),
        "display name": lambda: client.put(
            f"/v1/clones/{clone_id}/profile",
            json={**profile, "display_name": spoof(char)},
            headers=owner.headers,
        ),
        "bio": lambda: client.put(
            f"/v1/clones/{clone_id}/profile",
            json={**profile, "bio": spoof(char)},
            headers=owner.headers,
        ),
        "link": lambda: client.put(
            f"/v1/clones/{clone_id}/profile",
            json={**profile, "links": [f"https://example.com/{spoof(char)}"]},
            headers=owner.headers,
        ),
        "report text": lambda: client.post(
            f"/v1/public/profiles/{profile_id}/reports",
            json={"reason": "spam", "text": spoof(char)},
            headers=reporter.headers,
        ),
        "moderation reason": lambda: client.post(
            f"/v1/admin/moderation/profiles/{profile_id}/reject",
            json={"reason": spoof(char)},
            headers=admin.headers,
        ),
    }
    before = log_length(services)

    refused = {field: attempt() for field, attempt in attempts.items()}

    for field, response in refused.items():
        assert response.status_code == 422, (field, response.text)
        assert_problem(response, 422, "invalid-request")
    assert log_length(services) == before


def test_ordinary_text_in_any_script_is_still_accepted(
    client: TestClient, services: Services
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner, name="Ретро Часы 時計 ساعة")

    profile_id = submit_profile(client, owner, clone_id)

    assert clone_id and profile_id
    described = client.post(
        "/v1/clones",
        json={"name": "Tabs", "description": "line one\n\tline two — ünïcödé"},
        headers=owner.headers,
    )
    assert described.status_code == 201, described.text
