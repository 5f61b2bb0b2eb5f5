"""The arena through HTTP: admission rounds (capacity under concurrency, idempotency, who
may ask), exits by ban, archive, retirement and admins, the controls, and the reads."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from aggregates.arena import membership_id_for
from aggregates.profiles import profile_id_for
from projections.rebuild import rebuild
from runtime.clock import FixedClock
from runtime.leases import lease
from services.arena import ADMISSION_LEASE
from services.bootstrap import Services
from tests.conftest import AUDITOR_TOKEN, ENGINE_TOKEN
from tests.support.arena import SYNC, queued_clone, queued_clones, sync
from tests.support.clones import configure, make_admin
from tests.support.flow import every_table
from tests.support.http import assert_problem, bearer
from tests.support.jobs import run_job
from tests.support.owner import assert_owner_only
from tests.support.projections import catch_up
from tests.support.wallets import sign_in


def admitted_ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return list(response.json()["admitted"])


def member_ids(client: TestClient) -> list[str]:
    response = client.get("/v1/arena/members", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [item["clone_id"] for item in response.json()["items"]]


def arena_events(services: Services, clone_id: UUID) -> list[tuple[str, str | None]]:
    """The membership's events with their correlation id, from the log's audit read model."""
    with psycopg.connect(services.url) as conn:
        rows = conn.execute(
            "SELECT event_type, correlation_id FROM audit_log WHERE aggregate_id = %s"
            " ORDER BY position",
            (membership_id_for(clone_id),),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def test_three_concurrent_syncs_fill_exactly_the_capacity_with_the_earliest(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    clones = queued_clones(services, 20, clock() - timedelta(hours=1))
    configure(client, arena_capacity=7, arena_admission_batch=50)
    catch_up(services)
    barrier = threading.Barrier(3)
    answers: list[Any] = []

    def round_with(key: str) -> None:
        barrier.wait()
        answers.append(sync(client, key))

    threads = [threading.Thread(target=round_with, args=(f"sync-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    admitted = [clone for answer in answers for clone in admitted_ids(answer)]
    assert sorted(admitted) == sorted(str(c) for c in clones[:7])  # no duplicates either
    catch_up(services)
    assert sorted(member_ids(client)) == sorted(str(c) for c in clones[:7])
    queue = client.get("/v1/arena/queue").json()["items"]
    assert [(e["clone_id"], e["position"]) for e in queue[:2]] == [
        (str(clones[7]), 1),
        (str(clones[8]), 2),
    ]


def test_the_batch_size_bounds_one_round(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    clones = queued_clones(services, 5, clock() - timedelta(hours=1))
    configure(client, arena_capacity=10, arena_admission_batch=2)
    catch_up(services)
    assert admitted_ids(sync(client, "a")) == [str(c) for c in clones[:2]]
    catch_up(services)
    assert admitted_ids(sync(client, "b")) == [str(c) for c in clones[2:4]]


def test_the_same_key_answers_the_first_round_again(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    first_clone = queued_clone(services, clock() - timedelta(hours=2))
    skipped = queued_clone(services, clock() - timedelta(hours=1), approved=False)
    catch_up(services)
    first = sync(client, "round-1")
    queued_clone(services, clock())  # queued after the first round
    catch_up(services)
    again = sync(client, "round-1")

    assert first.json() == again.json()
    assert first.json()["admitted"] == [str(first_clone)]
    assert first.json()["skipped"] == [{"clone_id": str(skipped), "reason": "profile-missing"}]


def test_who_may_ask_for_a_round(client: TestClient, services: Services) -> None:
    user, admin = sign_in(client), make_admin(client, services)
    assert_problem(sync(client, "k", bearer(ENGINE_TOKEN)), 403, "forbidden")
    assert_problem(sync(client, "k", bearer(AUDITOR_TOKEN)), 403, "forbidden")
    assert_problem(sync(client, "k", user.headers), 403, "forbidden")
    assert_problem(sync(client, "k", admin.headers), 403, "forbidden")
    assert_problem(sync(client, "k", bearer("not-a-token")), 401, "unauthenticated")
    anonymous = client.post("/v1/arena/admissions/sync", headers={"Idempotency-Key": "k"})
    assert_problem(anonymous, 401, "unauthenticated")
    without_key = client.post("/v1/arena/admissions/sync", headers=SYNC)
    assert_problem(without_key, 422, "invalid-request")
    bad_key = client.post(
        "/v1/arena/admissions/sync", headers={**SYNC, "Idempotency-Key": "white space"}
    )
    assert_problem(bad_key, 422, "invalid-request")


def test_banning_a_member_removes_it_and_frees_its_seat(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    first, second = queued_clones(services, 2, clock() - timedelta(hours=1))
    configure(client, arena_capacity=1)
    catch_up(services)
    assert admitted_ids(sync(client, "a")) == [str(first)]
    catch_up(services)
    assert admitted_ids(sync(client, "b")) == []  # full

    admin = make_admin(client, services)
    profile_id = profile_id_for(first)
    banned = client.post(
        f"/v1/admin/moderation/profiles/{profile_id}/ban",
        json={"reason": "wash trading"},
        headers=admin.headers,
    )
    assert banned.status_code == 200, banned.text
    catch_up(services)

    # The removal is caused by the ban: the same command, so the same correlation.
    (*_, (removed, removed_by)) = arena_events(services, first)
    assert removed == "Removed"
    ban_correlation = banned.headers["X-Request-ID"]
    assert removed_by == ban_correlation
    assert member_ids(client) == []
    assert admitted_ids(sync(client, "c")) == [str(second)]


def test_an_owner_with_a_banned_clone_is_not_in_good_standing(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    owner = sign_in(client)
    owner_id = UUID(owner.user_id)
    queued = queued_clone(services, clock() - timedelta(hours=1), owner_id=owner_id)
    other = queued_clone(services, clock() - timedelta(hours=2), owner_id=owner_id, name="Other")
    catch_up(services)
    client.post(
        f"/v1/admin/moderation/profiles/{profile_id_for(other)}/ban",
        json={"reason": "scam"},
        headers=admin.headers,
    )
    catch_up(services)

    round_ = sync(client, "after-ban").json()
    assert round_["admitted"] == []
    assert round_["skipped"] == [{"clone_id": str(queued), "reason": "owner-not-in-good-standing"}]
    mine = client.get(f"/v1/clones/{queued}/arena", headers=owner.headers).json()
    assert (mine["status"], mine["eligible"], mine["skip_reason"], mine["queue_position"]) == (
        "queued",
        False,
        "owner-not-in-good-standing",
        None,
    )


def test_retiring_and_archiving_leave_the_arena(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    owner = sign_in(client)
    owner_id = UUID(owner.user_id)
    seated = queued_clone(services, clock() - timedelta(hours=2), owner_id=owner_id)
    waiting = queued_clone(services, clock() - timedelta(hours=1), owner_id=owner_id, name="B")
    configure(client, arena_capacity=1)
    catch_up(services)
    assert admitted_ids(sync(client, "a")) == [str(seated)]

    retired = client.post(f"/v1/clones/{seated}/arena/retire", headers=owner.headers)
    assert retired.status_code == 200, retired.text
    assert retired.json()["status"] == "retired"
    again = client.post(f"/v1/clones/{seated}/arena/retire", headers=owner.headers)
    assert_problem(again, 409, "arena-membership-not-active")
    archived = client.post(f"/v1/clones/{waiting}/archive", headers=owner.headers)
    assert archived.status_code in (200, 204), archived.text
    catch_up(services)

    assert member_ids(client) == []
    assert client.get("/v1/arena/queue", headers=owner.headers).json()["items"] == []
    history = client.get(f"/v1/clones/{waiting}/arena", headers=owner.headers).json()
    assert history["status"] == "removed"
    assert [(c["change"], c["reason"]) for c in history["history"]] == [
        ("queued", None),
        ("removed", "clone archived"),
    ]


def test_owner_routes_answer_404_for_someone_elses_clone(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    owner, stranger = sign_in(client), sign_in(client)
    clone_id = queued_clone(services, clock(), owner_id=UUID(owner.user_id))
    catch_up(services)
    mine = assert_owner_only(
        client,
        "GET",
        f"/v1/clones/{clone_id}/arena",
        owner=owner.headers,
        stranger=stranger.headers,
    )
    assert (mine.json()["status"], mine.json()["queue_place"]) == ("queued", 1)
    retired = assert_owner_only(
        client,
        "POST",
        f"/v1/clones/{clone_id}/arena/retire",
        owner=owner.headers,
        stranger=stranger.headers,
    )
    assert retired.json()["status"] == "retired"


def test_admins_suspend_reinstate_and_remove_members(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin, user = make_admin(client, services), sign_in(client)
    first, second = queued_clones(services, 2, clock() - timedelta(hours=1))
    configure(client, arena_capacity=2)
    catch_up(services)
    sync(client, "a")
    members = f"/v1/admin/arena/members/{first}"

    for path in ("suspend", "reinstate", "remove"):
        refused = client.post(f"{members}/{path}", json={"reason": "x"}, headers=user.headers)
        assert_problem(refused, 403, "forbidden")
    suspended = client.post(f"{members}/suspend", json={"reason": "abuse"}, headers=admin.headers)
    assert suspended.json()["status"] == "suspended"
    catch_up(services)
    public = client.get("/v1/arena/members").json()["items"]
    assert {(m["clone_id"], m["status"]) for m in public} == {
        (str(first), "suspended"),
        (str(second), "admitted"),
    }
    assert admitted_ids(sync(client, "b")) == []  # a suspended member keeps its seat

    reinstated = client.post(f"{members}/reinstate", json={"reason": "ok"}, headers=admin.headers)
    assert reinstated.json()["status"] == "admitted"
    blank = client.post(f"{members}/suspend", json={"reason": " "}, headers=admin.headers)
    assert_problem(blank, 422, "invalid-request")
    removed = client.post(f"{members}/remove", json={"reason": "rules"}, headers=admin.headers)
    assert removed.json()["status"] == "removed"
    assert_problem(
        client.post(f"{members}/remove", json={"reason": "rules"}, headers=admin.headers),
        409,
        "arena-membership-not-active",
    )
    catch_up(services)
    filtered = client.get(
        "/v1/admin/arena/members", params={"status": "removed"}, headers=admin.headers
    ).json()["items"]
    assert [m["clone_id"] for m in filtered] == [str(first)]
    unknown = client.post(
        "/v1/admin/arena/members/00000000-0000-0000-0000-000000000000/suspend",
        json={"reason": "x"},
        headers=admin.headers,
    )
    assert_problem(unknown, 404, "not-found")


def test_capacity_and_pause_are_admin_events_with_reasons(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin, user = make_admin(client, services), sign_in(client)
    clones = queued_clones(services, 3, clock() - timedelta(hours=1))
    catch_up(services)

    assert_problem(
        client.put(
            "/v1/admin/arena/capacity", json={"capacity": 1, "reason": "x"}, headers=user.headers
        ),
        403,
        "forbidden",
    )
    for body in (
        {"capacity": -1, "reason": "x"},
        {"capacity": 1},
        {"capacity": False, "reason": "x"},
    ):
        bad = client.put("/v1/admin/arena/capacity", json=body, headers=admin.headers)
        assert_problem(bad, 422, "invalid-request")
    changed = client.put(
        "/v1/admin/arena/capacity", json={"capacity": 1, "reason": "pilot"}, headers=admin.headers
    )
    assert changed.json()["capacity"] == 1
    paused = client.post("/v1/admin/arena/pause", json={"reason": "audit"}, headers=admin.headers)
    assert paused.json()["paused"] is True
    catch_up(services)

    while_paused = sync(client, "paused").json()
    assert (while_paused["paused"], while_paused["admitted"]) == (True, [])
    client.post("/v1/admin/arena/resume", json={"reason": "done"}, headers=admin.headers)
    catch_up(services)
    assert admitted_ids(sync(client, "resumed")) == [str(clones[0])]
    catch_up(services)

    state = client.get("/v1/admin/arena", headers=admin.headers).json()
    assert (state["capacity"], state["capacity_set_by_admin"], state["paused"]) == (1, True, False)
    assert (state["seats_taken"], state["queue_depth"], state["eligible"]) == (1, 2, 2)
    assert state["last_round"]["admitted"] == [str(clones[0])]
    assert_problem(client.get("/v1/admin/arena", headers=user.headers), 403, "forbidden")


def test_the_public_queue_hides_skipped_entries_except_from_their_owner(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    owner, admin = sign_in(client), make_admin(client, services)
    eligible = queued_clone(services, clock() - timedelta(hours=3))
    mine = queued_clone(
        services, clock() - timedelta(hours=2), owner_id=UUID(owner.user_id), approved=False
    )
    later = queued_clone(services, clock() - timedelta(hours=1))
    catch_up(services)

    anonymous = client.get("/v1/arena/queue").json()["items"]
    assert [(e["clone_id"], e["position"]) for e in anonymous] == [
        (str(eligible), 1),
        (str(later), 2),
    ]
    as_owner = client.get("/v1/arena/queue", headers=owner.headers).json()["items"]
    assert [(e["clone_id"], e["place"], e["skip_reason"]) for e in as_owner] == [
        (str(eligible), 1, None),
        (str(mine), 2, "profile-missing"),
        (str(later), 3, None),
    ]
    everything = client.get("/v1/admin/arena/queue", headers=admin.headers).json()["items"]
    assert len(everything) == 3
    first_page = client.get("/v1/arena/queue", params={"limit": 1}).json()
    second_page = client.get(
        "/v1/arena/queue", params={"limit": 1, "cursor": first_page["next_cursor"]}
    ).json()
    assert [e["clone_id"] for e in second_page["items"]] == [str(later)]
    assert second_page["next_cursor"] is None
    assert_problem(client.get("/v1/arena/queue", params={"cursor": "!!"}), 422, "invalid-cursor")


def test_the_admission_job_admits_on_its_cadence_and_writes_nothing_when_idle(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    catch_up(services)
    head = services.event_log.recorder.max_notification_id()
    idle = run_job(services, "arena_admissions", clock)
    assert (idle.round_id, idle.admitted, str(idle)) == (None, [], "admitted 0; 64 seats free")
    assert services.event_log.recorder.max_notification_id() == head

    clones = queued_clones(services, 2, clock() - timedelta(hours=1))
    queued_clone(services, clock(), approved=False)
    catch_up(services)
    round_ = run_job(services, "arena_admissions", clock)
    assert round_.admitted == clones
    assert str(round_) == "admitted 2, skipped 1 (profile-missing); 62 seats free"
    catch_up(services)
    assert sorted(member_ids(client)) == sorted(str(c) for c in clones)

    with lease(services.url, ADMISSION_LEASE):  # another process's round is under way
        assert run_job(services, "arena_admissions", clock) is None


def test_rebuilding_the_arena_yields_identical_rows(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    clones = queued_clones(services, 4, clock() - timedelta(hours=1))
    configure(client, arena_capacity=3)
    catch_up(services)
    sync(client, "a")
    client.post(
        f"/v1/admin/arena/members/{clones[0]}/suspend", json={"reason": "x"}, headers=admin.headers
    )
    client.post(
        f"/v1/admin/arena/members/{clones[1]}/remove", json={"reason": "y"}, headers=admin.headers
    )
    client.put(
        "/v1/admin/arena/capacity", json={"capacity": 5, "reason": "z"}, headers=admin.headers
    )
    catch_up(services)
    before = every_table(services)

    rebuild(services.projections, "arena")

    assert every_table(services) == before
    assert before["arena_membership_history"][0] == 4 + 3 + 1 + 1  # queued, admitted, two exits


@pytest.mark.parametrize(
    "path",
    ["/v1/arena/members?limit=0", "/v1/arena/queue?limit=1000", "/v1/arena/members?cursor=%"],
)
def test_bad_list_parameters_are_problems(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_metrics_report_the_queue_members_and_capacity(
    client: TestClient, services: Services, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    queued_clones(services, 3, clock() - timedelta(hours=2))
    queued_clone(services, clock() - timedelta(hours=1), approved=False)
    configure(client, arena_capacity=2)
    catch_up(services)
    sync(client, "a")
    catch_up(services)

    text = client.get("/metrics", headers=admin.headers).text
    gauges = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("pumpparty_arena_")
    }
    assert gauges == {
        "pumpparty_arena_queue_depth": 2.0,
        "pumpparty_arena_queue_eligible": 1.0,
        "pumpparty_arena_members": 2.0,
        "pumpparty_arena_capacity": 2.0,
    }
