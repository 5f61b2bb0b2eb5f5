from __future__ import annotations

import threading
import time
from uuid import UUID, uuid4

from fastapi.testclient import TestClient

from aggregates.base import CommandContext
from projections.runner import ProjectionRunner
from services.bootstrap import Services
from tests.conftest import AUDITOR_TOKEN, ENGINE_TOKEN
from tests.support.counter import Counter, new_counter
from tests.support.http import assert_problem, bearer

AUDITOR = bearer(AUDITOR_TOKEN)


def counter_with_history(services: Services, context: CommandContext, increments: int) -> UUID:
    counter_id: UUID = services.event_log.execute(
        context, lambda unit: unit.add(new_counter("RETRO-CLOCK")).id
    ).result
    for _ in range(increments):
        services.event_log.execute(
            context, lambda unit: unit.get(Counter, counter_id).increment(by=2)
        )
    return counter_id


def project(services: Services) -> None:
    ProjectionRunner(services.projections, "audit_log", services.url).catch_up()


def test_audit_needs_a_token(client: TestClient) -> None:
    assert_problem(client.get("/v1/audit/events"), 401, "unauthenticated")
    assert_problem(client.get("/v1/audit/events", headers=bearer("wrong")), 401, "unauthenticated")


def test_audit_needs_the_audit_scope(client: TestClient) -> None:
    assert_problem(client.get("/v1/audit/events", headers=bearer(ENGINE_TOKEN)), 403, "forbidden")


def test_audit_events_filter_by_aggregate(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    wanted = counter_with_history(services, context, 2)
    counter_with_history(services, context, 1)
    project(services)

    items = client.get(
        "/v1/audit/events", params={"aggregate_id": str(wanted)}, headers=AUDITOR
    ).json()["items"]

    assert [(i["event_type"], i["version"]) for i in items] == [
        ("Opened", 1),
        ("Incremented", 2),
        ("Incremented", 3),
    ]
    assert {i["actor"] for i in items} == {"user:tester"}


def test_audit_events_page_with_a_cursor(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    counter_with_history(services, context, 4)
    project(services)

    first = client.get("/v1/audit/events", params={"limit": 3}, headers=AUDITOR).json()
    second = client.get(
        "/v1/audit/events", params={"limit": 3, "cursor": first["next_cursor"]}, headers=AUDITOR
    ).json()

    assert [i["position"] for i in first["items"]] == [1, 2, 3]
    assert [i["position"] for i in second["items"]] == [4, 5]
    assert second["next_cursor"] is None


def test_a_forged_cursor_is_a_clear_error(client: TestClient) -> None:
    response = client.get("/v1/audit/events", params={"cursor": "%%%not-ours"}, headers=AUDITOR)

    assert_problem(response, 422, "invalid-cursor")


def test_read_waits_for_the_asked_position(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    written = services.event_log.execute(context, lambda unit: unit.add(new_counter("RETRO-CLOCK")))
    runner = threading.Thread(target=lambda: (time.sleep(0.1), project(services)))
    runner.start()

    response = client.get(
        "/v1/audit/events", params={"min_position": written.position}, headers=AUDITOR
    )
    runner.join()

    assert response.status_code == 200
    assert [i["position"] for i in response.json()["items"]] == [written.position]


def test_read_past_the_wait_is_503_with_retry_after(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    written = services.event_log.execute(context, lambda unit: unit.add(new_counter("RETRO-CLOCK")))

    response = client.get(
        "/v1/audit/events", headers={**AUDITOR, "X-Min-Position": str(written.position)}
    )

    assert_problem(response, 503, "projection-behind")
    assert response.headers["retry-after"] == "1"


def test_aggregate_history_replays_the_log(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    counter_id = counter_with_history(services, context, 2)

    events = client.get(f"/v1/audit/aggregates/{counter_id}/events", headers=AUDITOR).json()

    assert [e["event_type"] for e in events] == ["Opened", "Incremented", "Incremented"]
    assert events[1]["data"] == {"by": 2}
    assert events[0]["correlation_id"] == "req-RETRO-CLOCK"


def test_state_as_of_a_version(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    counter_id = counter_with_history(services, context, 3)

    state = client.get(
        f"/v1/audit/aggregates/{counter_id}/state", params={"version": 2}, headers=AUDITOR
    ).json()

    assert state["version"] == 2
    assert state["state"]["count"] == 2


def test_state_of_an_unknown_aggregate_is_404(client: TestClient) -> None:
    response = client.get(f"/v1/audit/aggregates/{uuid4()}/state", headers=AUDITOR)

    assert_problem(response, 404, "not-found")


def test_state_at_a_naive_time_is_refused(client: TestClient) -> None:
    response = client.get(
        f"/v1/audit/aggregates/{uuid4()}/state",
        params={"at": "2026-01-01T00:00:00"},
        headers=AUDITOR,
    )

    assert_problem(response, 422, "invalid-request")


def test_digest_is_the_chain_head(
    client: TestClient, services: Services, context: CommandContext
) -> None:
    counter_with_history(services, context, 1)

    digest = client.get("/v1/audit/digest", headers=AUDITOR).json()

    assert digest["position"] == 2
    assert digest["digest"] == f"2:{digest['hash']}" and len(digest["hash"]) == 64
