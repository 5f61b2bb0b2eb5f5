"""Generation through OpenAI-compatible providers on loopback: the server's structured
output becomes the draft, a bad first answer is repaired in one round, a 429 with
Retry-After falls back to the next provider, and usage is recorded exactly as the server
reported it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import HttpUrl, SecretStr

from runtime.settings import ModelProviderSpec, Settings
from services.bootstrap import Services
from tests.engine.servers import ChatServer, completion, error, graph_from_prompt, rate_limited
from tests.support.clones import create_clone
from tests.support.http import assert_problem
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in

PROMPT = "ETH momentum over 12 hours, long only"
KEY = "sk-test-RETRO-CLOCK"


@pytest.fixture
def settings(settings: Settings, primary: ChatServer, secondary: ChatServer) -> Settings:
    """Two providers on loopback, primary first, for both rounds of a generation."""
    route = ["primary", "secondary"]
    return settings.model_copy(
        update={
            "model_providers": [
                ModelProviderSpec(
                    name="primary",
                    base_url=HttpUrl(primary.url),
                    model="gpt-test",
                    api_key=SecretStr(KEY),
                ),
                ModelProviderSpec(
                    name="secondary", base_url=HttpUrl(secondary.url), model="gpt-other"
                ),
            ],
            "model_routes": {"strategy-graph": route, "strategy-graph-repair": route},
            "model_timeout": 2.0,
        }
    )


def good_graph() -> dict[str, Any]:
    """The graph the loopback server answers for PROMPT by default."""
    reply = graph_from_prompt({"messages": [{"role": "user", "content": PROMPT}]})
    content = json.loads(reply.body)["choices"][0]["message"]["content"]
    return json.loads(content)  # type: ignore[no-any-return]


def two_actions() -> dict[str, Any]:
    """A graph that breaks the guardrails: a second action, fed by nothing."""
    graph = copy.deepcopy(good_graph())
    graph["nodes"].append(
        {
            "id": "extra",
            "kind": "action",
            "asset": "ETH",
            "order_type": "market",
            "direction": "long_short",
            "size_fraction": "0.1",
        }
    )
    return graph


def generate(client: TestClient, user: SignedIn, clone_id: str) -> Any:
    return client.post(
        f"/v1/clones/{clone_id}/generate", json={"prompt": PROMPT}, headers=user.headers
    )


def test_structured_output_from_the_server_becomes_the_draft(
    client: TestClient, primary: ChatServer, secondary: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)

    response = generate(client, owner, clone_id)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["provider"], body["model"], body["rounds"]) == (
        "primary",
        "gpt-test-2026-01-01",
        1,
    )
    assert [n["id"] for n in body["graph"]["nodes"]] == sorted(
        n["id"] for n in good_graph()["nodes"]
    )
    sent = primary.requests[0]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["response_format"]["json_schema"]["name"] == "strategy_graph"
    assert PROMPT in sent["messages"][1]["content"]
    assert secondary.requests == []


def test_usage_is_recorded_exactly_as_the_server_reported_it(
    client: TestClient, services: Services, primary: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    primary.reply(
        completion(good_graph(), prompt_tokens=1234, completion_tokens=567, cached_tokens=89)
    )

    body = generate(client, owner, clone_id).json()
    catch_up(services)

    reported = {"prompt_tokens": 1234, "completion_tokens": 567, "cached_tokens": 89}
    assert body["usage"] == {"calls": 1, **reported, "total_tokens": 1801}
    clone = client.get(f"/v1/clones/{clone_id}/usage", headers=owner.headers).json()
    assert clone["by_model"] == [
        {
            "calls": 1,
            "failed_calls": 0,
            **reported,
            "total_tokens": 1801,
            "provider": "primary",
            "model": "gpt-test-2026-01-01",
            "purpose": "strategy-graph",
        }
    ]
    mine = client.get("/v1/me/usage", headers=owner.headers).json()
    assert mine["today"] == {"calls": 1, "failed_calls": 0, **reported, "total_tokens": 1801}


def test_a_bad_first_answer_is_repaired_in_one_round(
    client: TestClient, services: Services, primary: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    primary.reply(completion(two_actions(), prompt_tokens=1000, completion_tokens=300))

    response = generate(client, owner, clone_id)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rounds"] == 2 and [n["id"] for n in body["graph"]["nodes"]].count("extra") == 0
    repair = primary.requests[1]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert '"extra"' in repair[2]["content"]
    assert "extra-action at /nodes/5" in repair[3]["content"]
    assert body["usage"]["calls"] == 2 and body["usage"]["prompt_tokens"] == 1000 + 1200
    catch_up(services)
    artifacts = client.get(f"/v1/clones/{clone_id}/artifacts", headers=owner.headers).json()
    assert [(a["kind"], a["round"]) for a in artifacts["items"]] == [
        ("prompt", 1),
        ("raw-output", 1),
        ("prompt", 2),
        ("raw-output", 2),
        ("graph", None),
    ]


def test_a_graph_still_bad_after_the_repair_is_refused_with_each_violation(
    client: TestClient, services: Services, primary: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    primary.reply(completion(two_actions()), completion(two_actions()))

    response = generate(client, owner, clone_id)

    problem = assert_problem(response, 422, "generated-graph-rejected")
    assert [e["rule"] for e in problem["errors"]] == ["orphan-node", "extra-action"]
    catch_up(services)
    detail = client.get(f"/v1/clones/{clone_id}", headers=owner.headers).json()
    assert detail["draft"] is None
    usage = client.get(f"/v1/clones/{clone_id}/usage", headers=owner.headers).json()
    assert usage["total"]["calls"] == 2  # what the failed rounds cost is still counted


def test_a_429_with_retry_after_falls_back_to_the_next_provider(
    client: TestClient, services: Services, primary: ChatServer, secondary: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    primary.reply(rate_limited("7"))

    response = generate(client, owner, clone_id)

    assert response.status_code == 200, response.text
    assert (response.json()["provider"], response.json()["model"]) == (
        "secondary",
        "gpt-test-2026-01-01",
    )
    assert len(primary.requests) == 1 and len(secondary.requests) == 1
    catch_up(services)
    by_model = client.get(f"/v1/clones/{clone_id}/usage", headers=owner.headers).json()["by_model"]
    assert [(m["provider"], m["calls"], m["failed_calls"]) for m in by_model] == [
        ("primary", 1, 1),
        ("secondary", 1, 0),
    ]


def test_a_rate_limited_provider_rests_for_its_retry_after(
    client: TestClient, primary: ChatServer, secondary: ChatServer
) -> None:
    owner = sign_in(client)
    primary.reply(rate_limited("7"))
    generate(client, owner, create_clone(client, owner))

    generate(client, owner, create_clone(client, owner))

    assert len(primary.requests) == 1 and len(secondary.requests) == 2


def test_no_provider_answering_is_a_503_with_retry_after(
    client: TestClient, services: Services, primary: ChatServer, secondary: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    primary.reply(error(401, "Incorrect API key provided"))
    secondary.reply(rate_limited("45"))

    response = generate(client, owner, clone_id)

    assert_problem(response, 503, "models-unavailable")
    assert response.headers["Retry-After"] == "45"
    assert KEY not in response.text
    catch_up(services)
    usage = client.get(f"/v1/clones/{clone_id}/usage", headers=owner.headers).json()
    assert usage["total"]["failed_calls"] == 2


def test_a_failed_generation_runs_again_under_the_same_key(
    client: TestClient, primary: ChatServer, secondary: ChatServer
) -> None:
    owner = sign_in(client)
    clone_id = create_clone(client, owner)
    primary.reply(error(500, "down"), error(500, "down"))
    secondary.reply(error(500, "down"), error(500, "down"))
    key = {"Idempotency-Key": "RETRO-CLOCK", **owner.headers}
    url = f"/v1/clones/{clone_id}/generate"
    assert_problem(
        client.post(url, json={"prompt": PROMPT}, headers=key), 503, "models-unavailable"
    )
    client.app.state.model_routers = None  # type: ignore[attr-defined]  # a new process

    again = client.post(url, json={"prompt": PROMPT}, headers=key)

    assert again.status_code == 200, again.text
    assert again.json()["usage"]["calls"] == 5 and again.json()["replayed"] is False
