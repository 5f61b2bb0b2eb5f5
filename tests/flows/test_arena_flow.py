"""From audition to arena, through HTTP: two wallets pay and pass their auditions; the
verdicts queue both clones; the one with an approved public profile is admitted by an
admission round, the other is skipped with its reason until its profile is approved, and
the next round admits it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.support.arena import sync
from tests.support.auditions import act, record_mark
from tests.support.clones import make_admin, submit_profile
from tests.support.evm_node import EvmNodeServer
from tests.support.flow import submit_audition, to_due_time
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.wallets import SignedIn, sign_in


def trade_both_up(
    client: TestClient, services: Services, clock: FixedClock, accounts: list[str]
) -> None:
    """Each account buys 40 BTC at 100 today and sells at 115 tomorrow: about +6%."""
    record_mark(services, clock(), "100")
    for account in accounts:
        act(client, account, 1, size="40")
    clock.advance(days=1)
    record_mark(services, clock(), "115")
    for account in accounts:
        act(client, account, 2, side="sell", size="40")


def clone_of(client: TestClient, user: SignedIn, audition: dict[str, Any]) -> str:
    response = client.get(f"/v1/auditions/{audition['audition_id']}", headers=user.headers)
    assert response.json()["status"] == "passed", response.text
    clone_id: str = response.json()["clone_id"]
    return clone_id


def arena_of(client: TestClient, user: SignedIn, clone_id: str) -> Any:
    response = client.get(f"/v1/clones/{clone_id}/arena", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_passed_clones_are_queued_and_admitted_once_their_profile_is_approved(
    client: TestClient, services: Services, node: EvmNodeServer, clock: FixedClock
) -> None:
    # Two wallets pay on-chain and submit a published clone each; both trade well.
    first, first_audition = submit_audition(client, services, node, "0x" + "a1" * 32)
    second, second_audition = submit_audition(client, services, node, "0x" + "b2" * 32)
    accounts = [first_audition["prop_account_id"], second_audition["prop_account_id"]]
    trade_both_up(client, services, clock, accounts)

    # At the due time the evaluator passes both; each verdict queues its clone.
    to_due_time(clock, second_audition)
    catch_up(services)
    assert run_job(services, "audition_evaluator", clock) == 2
    catch_up(services)
    first, second = sign_in(client, first.wallet), sign_in(client, second.wallet)
    first_clone = clone_of(client, first, first_audition)
    second_clone = clone_of(client, second, second_audition)
    assert arena_of(client, first, first_clone)["status"] == "queued"

    # Only the first clone's public profile is approved.
    admin = make_admin(client, services)
    profile_id = submit_profile(client, first, first_clone, "First Clone")
    client.post(
        f"/v1/admin/moderation/profiles/{profile_id}/approve", json={}, headers=admin.headers
    )
    catch_up(services)
    public_queue = client.get("/v1/arena/queue").json()["items"]
    assert [(e["clone_id"], e["position"]) for e in public_queue] == [(first_clone, 1)]
    skipped = arena_of(client, second, second_clone)
    assert (skipped["eligible"], skipped["skip_reason"]) == (False, "profile-missing")

    # An admission round admits the first and says why it skipped the second.
    round_ = sync(client, "round-1").json()
    assert round_["admitted"] == [first_clone]
    assert round_["skipped"] == [{"clone_id": second_clone, "reason": "profile-missing"}]
    catch_up(services)
    members = client.get("/v1/arena/members").json()["items"]
    assert [(m["clone_id"], m["display_name"], m["status"]) for m in members] == [
        (first_clone, "First Clone", "admitted")
    ]
    admitted = arena_of(client, first, first_clone)
    assert [change["change"] for change in admitted["history"]] == ["queued", "admitted"]
    assert admitted["history"][0]["audition_id"] == first_audition["audition_id"]
    assert admitted["history"][0]["actor"] == "worker:audition_evaluator"

    # Once the second clone's profile is approved, the next round admits it.
    profile_id = submit_profile(client, second, second_clone, "Second Clone")
    client.post(
        f"/v1/admin/moderation/profiles/{profile_id}/approve", json={}, headers=admin.headers
    )
    catch_up(services)
    assert sync(client, "round-2").json()["admitted"] == [second_clone]
    catch_up(services)
    members = client.get("/v1/arena/members").json()["items"]
    assert [m["clone_id"] for m in members] == [first_clone, second_clone]
