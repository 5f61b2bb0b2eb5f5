"""A backtest's report is an artifact of its clone (issue 19, item 6), beside the
generation's prompt and graph: content-addressed by SHA-256, listed per clone with its job,
owner-only, the same bytes whether the in-process worker or a remote one computed it, and
recorded once per job however often its completion is retried."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from fastapi.testclient import TestClient

from aggregates.backtest_reports import BacktestReportRecord, report_record_id
from aggregates.strategy_executor import frame_from_json
from runtime.clock import FixedClock
from services.backtests import BACKTEST_JOB, run_backtest
from services.bootstrap import Services
from tests.backtests.conftest import BACKTEST_TOKEN, Published
from tests.support.http import bearer
from tests.support.jobs import run_job
from tests.support.projections import catch_up

WORKER = bearer(BACKTEST_TOKEN)


def reports_listed(client: TestClient, published: Published) -> list[dict[str, Any]]:
    listed = client.get(
        f"/v1/clones/{published.clone_id}/artifacts?limit=100", headers=published.owner.headers
    )
    assert listed.status_code == 200, listed.text
    return [item for item in listed.json()["items"] if item["kind"] == "backtest-report"]


def content_of(client: TestClient, published: Published, sha256: str) -> bytes:
    read = client.get(
        f"/v1/clones/{published.clone_id}/artifacts/{sha256}", headers=published.owner.headers
    )
    assert read.status_code == 200, read.text
    return read.content


def test_the_in_process_workers_report_is_an_artifact_of_the_clone(
    client: TestClient, services: Services, published: Published, clock: FixedClock
) -> None:
    url = published.url("/backtests")
    job_id = client.post(url, json={"bars": 300}, headers=published.owner.headers).json()["job_id"]
    assert run_job(services, BACKTEST_JOB, clock) == "1 succeeded"
    catch_up(services)

    report = client.get(f"{url}/{job_id}", headers=published.owner.headers).json()["report"]
    (listed,) = reports_listed(client, published)
    assert listed["job_id"] == job_id and listed["generation_id"] is None
    content = content_of(client, published, listed["sha256"])
    assert hashlib.sha256(content).hexdigest() == listed["sha256"]
    assert orjson.loads(content) == report
    # A stranger learns nothing of it.
    stranger = client.get(
        f"/v1/clones/{published.clone_id}/artifacts/{listed['sha256']}",
        headers=published.stranger.headers,
    )
    assert stranger.status_code == 404


def test_a_remote_workers_report_is_the_same_artifact_and_recorded_once(
    client: TestClient, services: Services, published: Published, clock: FixedClock
) -> None:
    url = published.url("/backtests")
    remote_job = client.post(url, json={"bars": 200}, headers=published.owner.headers).json()
    lease = client.post("/v1/engine/jobs/lease", json={"worker": "w1"}, headers=WORKER).json()
    token = {"lease_token": lease["lease_token"]}
    inputs = client.post(f"/v1/engine/jobs/{lease['job_id']}/inputs", json=token, headers=WORKER)
    report = run_backtest(lease["payload"], frame_from_json(orjson.loads(inputs.content)))
    result = {**token, "result": report.model_dump(mode="json")}
    for _ in range(2):  # a completion retried with the same token answers the same
        done = client.post(
            f"/v1/engine/jobs/{lease['job_id']}/complete", json=result, headers=WORKER
        )
        assert done.status_code == 200, done.text
    record = services.event_log.read(BacktestReportRecord, report_record_id(remote_job["job_id"]))
    assert record is not None and record.version == 1

    # The same terms in process: another job, the same report, so the same content.
    local_job = client.post(
        url,
        json={"bars": 200, "end": remote_job["terms"]["end"]},
        headers=published.owner.headers,
    ).json()
    assert run_job(services, BACKTEST_JOB, clock) == "1 succeeded"
    catch_up(services)
    listed = reports_listed(client, published)
    assert [item["job_id"] for item in listed] == [remote_job["job_id"], local_job["job_id"]]
    assert listed[0]["sha256"] == listed[1]["sha256"] == record.sha256
    assert orjson.loads(content_of(client, published, record.sha256)) == report.model_dump(
        mode="json"
    )
