"""Dry runs and backtests over HTTP: owner-safe routes, the in-process worker and a remote
worker leasing over HTTP with a `backtest:lease` token, operators' replays, and bad input
answered with problem+json, never a 500."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from aggregates.dead_letters import DeadLetter, dead_letter_id
from aggregates.strategy_executor import frame_from_json
from runtime.clock import FixedClock
from services.backtests import BACKTEST_JOB, run_backtest
from services.bootstrap import Services
from tests.backtests.conftest import (
    BACKTEST_TOKEN,
    TREND_GRAPH,
    TREND_LOOKBACK,
    Published,
    publish_graph,
    store_candles,
    waves,
)
from tests.conftest import ENGINE_TOKEN
from tests.support.clones import configure, make_admin
from tests.support.http import PROBLEM, assert_problem, bearer
from tests.support.jobs import run_job
from tests.support.owner import assert_owner_only

WORKER = bearer(BACKTEST_TOKEN)


def test_a_dry_run_answers_the_decision_at_each_closed_bar(
    client: TestClient, published: Published, clock: FixedClock
) -> None:
    response = assert_owner_only(
        client,
        "POST",
        published.url("/dry-run"),
        owner=published.owner.headers,
        stranger=published.stranger.headers,
        json={"bars": 60},
    )

    body = response.json()
    assert (body["asset"], body["interval"], body["lookback"]) == ("BTC", "5m", TREND_LOOKBACK)
    assert body["undetermined_bars"] == 0  # the bars before the 60 filled every window
    assert body["leverage"] == 1 and len(body["data_hash"]) == 64
    decisions = body["decisions"]
    assert len(decisions) == 60
    last = decisions[-1]
    # The candle still forming at `now` (its close is 5x the last) is never read.
    assert last["close_time"].startswith("2026-11-25T11:59:59.999")
    assert set(last["nodes"]) == {"ret", "trend", "sig", "risk", "act"}
    assert {d["target_exposure"] for d in decisions} <= {"0.5", "0", "-0.5"}
    assert len({d["target_exposure"] for d in decisions}) > 1, "the strategy never moved"
    orders = [d for d in decisions if d["order"] != "0"]
    assert orders, "no decision ordered anything"
    for before, after in pairwise(decisions):  # an order fills at the next bar's open
        moved = Decimal(after["position"]) - Decimal(before["position"])
        assert abs(moved - Decimal(before["order"])) <= Decimal("1e-7")


def test_a_dry_run_refuses_bad_input_with_problems(
    client: TestClient, services: Services, published: Published
) -> None:
    owner = published.owner.headers
    url = published.url("/dry-run")
    assert_problem(client.post(url, json={"bars": 0}, headers=owner), 422, "invalid-request")
    assert_problem(client.post(url, json={"bars": 501}, headers=owner), 422, "too-many-bars")
    assert_problem(client.post(url, json={"nope": 1}, headers=owner), 422, "invalid-request")
    assert_problem(client.post(url, content=b"{", headers=owner), 422, "invalid-request")
    bad_hash = f"/v1/clones/{published.clone_id}/versions/xyz/dry-run"
    assert_problem(client.post(bad_hash, json={}, headers=owner), 422, "invalid-request")
    unknown = f"/v1/clones/{published.clone_id}/versions/{'0' * 64}/dry-run"
    assert_problem(client.post(unknown, json={}, headers=owner), 404, "not-found")
    hourly = client.post(url, json={"interval": "1h"}, headers=owner)
    assert_problem(hourly, 409, "market-data-missing")  # only 5-minute candles are stored
    configure(client, clone_assets=["ETH"])  # today's guardrails no longer pass the version
    body = assert_problem(client.post(url, json={}, headers=owner), 422, "asset-not-allowed")
    assert body["errors"][0]["pointer"].endswith("/asset")


def test_a_backtest_is_queued_run_by_the_worker_and_reported(
    client: TestClient, services: Services, published: Published, clock: FixedClock
) -> None:
    url = published.url("/backtests")
    queued = assert_owner_only(
        client,
        "POST",
        url,
        owner=published.owner.headers,
        stranger=published.stranger.headers,
        json={"bars": 300},
    )
    assert queued.status_code == 202
    job = queued.json()
    assert (job["state"], job["terms"]["bars"], job["terms"]["rule_set"]) == (
        "queued",
        300,
        "audition@1",
    )
    assert job["report"] is None

    assert run_job(services, BACKTEST_JOB, clock) == "1 succeeded"

    done = assert_owner_only(
        client,
        "GET",
        f"{url}/{job['job_id']}",
        owner=published.owner.headers,
        stranger=published.stranger.headers,
    ).json()
    assert done["state"] == "succeeded" and done["attempts"] == 1
    report = done["report"]
    assert report["graph_hash"] == published.version_id
    assert len(report["data_hash"]) == 64
    assert (report["bars"], report["warmup_bars"]) == (300, TREND_LOOKBACK - 1)
    assert report["periods_per_year"] == 365 * 24 * 12  # 5-minute bars
    assert "8,760" in report["annualisation"] and report["risk_free_rate"] == "0"
    assert report["trades"] >= 1 and Decimal(report["fees_paid"]) > 0
    assert Decimal(report["slippage_paid"]) > 0 and report["funding_paid"] == "0"
    assert report["last_bar_at"].startswith("2026-11-25T11:59:59.999")
    for field in ("total_return", "max_drawdown", "exposure", "final_equity"):
        Decimal(report[field])
    # The same terms again give the same report: the window's end was pinned when queued.
    again = client.post(
        url, json={"bars": 300, "end": job["terms"]["end"]}, headers=published.owner.headers
    )
    assert run_job(services, BACKTEST_JOB, clock) == "1 succeeded"
    second = client.get(f"{url}/{again.json()['job_id']}", headers=published.owner.headers)
    assert second.json()["report"] == report
    # Another clone's URL, or a made-up job, is 404.
    assert_problem(
        client.get(f"{url}/{'1' * 8}-0000-0000-0000-{'0' * 12}", headers=published.owner.headers),
        404,
        "not-found",
    )


def test_an_idempotency_key_returns_the_first_backtest(
    client: TestClient, published: Published
) -> None:
    headers = {**published.owner.headers, "Idempotency-Key": "bt-RETRO-CLOCK"}
    url = published.url("/backtests")

    first = client.post(url, json={"bars": 100}, headers=headers)
    repeat = client.post(url, json={"bars": 100}, headers=headers)
    other = client.post(url, json={"bars": 200}, headers=headers)

    assert first.status_code == repeat.status_code == 202
    assert first.json()["job_id"] == repeat.json()["job_id"]
    assert_problem(other, 409, "idempotency-key-reused")


def test_a_backtest_refuses_bad_input_with_problems(
    client: TestClient, published: Published
) -> None:
    owner = published.owner.headers
    url = published.url("/backtests")
    assert_problem(client.post(url, json={"bars": 1}, headers=owner), 422, "invalid-request")
    too_many = client.post(url, json={"bars": 20_001}, headers=owner)
    assert_problem(too_many, 422, "too-many-bars")
    naive = {"end": "2026-11-25T11:00:00"}  # a time without its zone is refused
    for body in ({"starting_equity": "-1"}, {"rule_set": "NOPE!"}, {"end": "yesterday"}, naive):
        assert_problem(client.post(url, json=body, headers=owner), 422, "invalid-request")
    unknown = client.post(url, json={"rule_set": "league@1"}, headers=owner)
    assert_problem(unknown, 422, "unknown-rule-set")
    long_ago = client.post(url, json={"end": "2020-01-01T00:00:00Z"}, headers=owner)
    assert_problem(long_ago, 409, "market-data-missing")


def test_a_remote_worker_leases_runs_and_completes_a_backtest_over_http(
    client: TestClient, services: Services, published: Published
) -> None:
    assert_problem(
        client.post("/v1/engine/jobs/lease", json={"worker": "w1"}), 401, "unauthenticated"
    )
    wrong = client.post(
        "/v1/engine/jobs/lease", json={"worker": "w1"}, headers=bearer(ENGINE_TOKEN)
    )
    assert_problem(wrong, 403, "forbidden")
    assert (
        client.post("/v1/engine/jobs/lease", json={"worker": "w1"}, headers=WORKER).status_code
        == 204
    )
    url = published.url("/backtests")
    job_id = client.post(url, json={"bars": 200}, headers=published.owner.headers).json()["job_id"]

    leased = client.post("/v1/engine/jobs/lease", json={"worker": "w1"}, headers=WORKER)

    assert leased.status_code == 200, leased.text
    lease = leased.json()
    assert lease["job_id"] == job_id and lease["attempt"] == 1 and lease["heartbeat_seconds"] == 20
    token = {"lease_token": lease["lease_token"]}
    beat = client.post(
        f"/v1/engine/jobs/{job_id}/heartbeat",
        json={**token, "progress": {"bars": 50}},
        headers=WORKER,
    )
    assert beat.status_code == 200 and beat.json()["state"] == "leased"
    inputs = client.post(f"/v1/engine/jobs/{job_id}/inputs", json=token, headers=WORKER)
    assert inputs.status_code == 200
    # The worker computes the report on its own machine, from the job and its inputs.
    frame = frame_from_json(orjson.loads(inputs.content))
    report = run_backtest(lease["payload"], frame).model_dump(mode="json")
    forged = {"lease_token": "00000000-0000-0000-0000-000000000000"}
    stale = client.post(
        f"/v1/engine/jobs/{job_id}/complete", json={**forged, "result": report}, headers=WORKER
    )
    assert_problem(stale, 409, "lease-stale")
    junk = client.post(
        f"/v1/engine/jobs/{job_id}/complete", json={**token, "result": {"x": 1}}, headers=WORKER
    )
    assert_problem(junk, 422, "job-result-invalid")

    done = client.post(
        f"/v1/engine/jobs/{job_id}/complete", json={**token, "result": report}, headers=WORKER
    )

    assert done.status_code == 200 and done.json()["state"] == "succeeded"
    read = client.get(f"{url}/{job_id}", headers=published.owner.headers).json()
    assert read["report"] == report and read["report"]["data_hash"] == frame.digest()
    # In-process, the same job gives the same report.
    again = client.post(
        url, json={"bars": 200, "end": read["terms"]["end"]}, headers=published.owner.headers
    )
    assert run_job(services, BACKTEST_JOB, services.clock) == "1 succeeded"
    local = client.get(f"{url}/{again.json()['job_id']}", headers=published.owner.headers)
    assert local.json()["report"] == report


def test_a_remote_worker_that_dies_loses_the_job_to_the_in_process_worker(
    client: TestClient, services: Services, published: Published, clock: FixedClock
) -> None:
    url = published.url("/backtests")
    job_id = client.post(url, json={"bars": 100}, headers=published.owner.headers).json()["job_id"]
    lease = client.post("/v1/engine/jobs/lease", json={"worker": "doomed"}, headers=WORKER).json()

    clock.advance(seconds=services.settings.job_lease_seconds + 1)
    assert run_job(services, BACKTEST_JOB, clock) == "1 succeeded"

    done = client.get(f"{url}/{job_id}", headers=published.owner.headers).json()
    late = client.post(
        f"/v1/engine/jobs/{job_id}/complete",
        json={"lease_token": lease["lease_token"], "result": done["report"]},
        headers=WORKER,
    )
    assert_problem(late, 409, "lease-stale")
    beat = client.post(
        f"/v1/engine/jobs/{job_id}/heartbeat",
        json={"lease_token": lease["lease_token"]},
        headers=WORKER,
    )
    assert_problem(beat, 409, "lease-stale")
    assert (done["state"], done["attempts"]) == ("succeeded", 2)
    assert "doomed" in done["last_error"]


def test_an_admin_replays_a_dead_backtest_with_a_reason(
    client: TestClient, services: Services, published: Published, clock: FixedClock
) -> None:
    url = published.url("/backtests")
    job_id = client.post(url, json={"bars": 100}, headers=published.owner.headers).json()["job_id"]
    lease = client.post("/v1/engine/jobs/lease", json={"worker": "w"}, headers=WORKER).json()
    failed = client.post(
        f"/v1/engine/jobs/{job_id}/fail",
        json={"lease_token": lease["lease_token"], "error": "out of memory", "retry": False},
        headers=WORKER,
    )
    assert failed.json()["state"] == "dead"
    assert (
        client.get(f"{url}/{job_id}", headers=published.owner.headers).json()["last_error"]
        == "out of memory"
    )
    admin = make_admin(client, services)
    replay = f"/v1/admin/jobs/{job_id}/replay"
    assert_problem(
        client.post(replay, json={"reason": "x"}, headers=published.owner.headers), 403, "forbidden"
    )
    assert_problem(client.post(replay, json={}, headers=admin.headers), 422, "invalid-request")

    replayed = client.post(replay, json={"reason": "memory raised"}, headers=admin.headers)

    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["job"]["state"] == "queued" and replayed.json()["position"] > 0
    letter = services.event_log.read(DeadLetter, dead_letter_id(replayed.json()["job"]["job_id"]))
    assert letter is not None and letter.last_reason == "memory raised"
    assert_problem(
        client.post(replay, json={"reason": "twice"}, headers=admin.headers), 409, "job-not-dead"
    )
    assert run_job(services, BACKTEST_JOB, clock) == "1 succeeded"
    shown = client.get(f"/v1/admin/jobs/{job_id}", headers=admin.headers).json()
    assert (shown["state"], shown["replays"]) == ("succeeded", 1)
    missing = f"/v1/admin/jobs/{'2' * 8}-0000-0000-0000-{'0' * 12}"
    assert_problem(client.get(missing, headers=admin.headers), 404, "job-not-found")


GARBAGE: list[Any] = [None, [], "x", 1, {"bars": "many"}, {"bars": 10**30}, {"interval": "2h"}]


@pytest.mark.parametrize("body", GARBAGE)
def test_garbage_never_gets_a_500(client: TestClient, published: Published, body: Any) -> None:
    owner, job = published.owner.headers, "3" * 8 + "-0000-0000-0000-" + "0" * 12
    requests = [
        ("POST", published.url("/dry-run"), owner),
        ("POST", published.url("/backtests"), owner),
        ("POST", "/v1/engine/jobs/lease", WORKER),
        ("POST", f"/v1/engine/jobs/{job}/complete", WORKER),
        ("POST", f"/v1/engine/jobs/{job}/fail", WORKER),
        ("POST", f"/v1/engine/jobs/{job}/inputs", WORKER),
        ("POST", f"/v1/admin/jobs/{job}/replay", owner),
    ]
    for method, url, headers in requests:
        response = client.request(method, url, json=body, headers=headers)
        assert 400 <= response.status_code < 500, (url, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)


def test_a_version_of_another_graph_trades_its_own_asset(
    client: TestClient, services: Services, clock: FixedClock, market: list[float]
) -> None:
    store_candles(services, clock(), waves(200)[::-1], asset="ETH")
    graph: dict[str, Any] = orjson.loads(orjson.dumps(TREND_GRAPH).replace(b"BTC", b"ETH"))
    eth = publish_graph(client, services, graph)

    body = client.post(eth.url("/dry-run"), json={"bars": 10}, headers=eth.owner.headers).json()

    assert body["asset"] == "ETH" and len(body["decisions"]) == 10
