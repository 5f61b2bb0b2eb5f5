"""A backtest job's report kept as an artifact of the clone, beside a generation's prompt
and graph and the cadence driver's decision records.

The job queue keeps a job's result in its own table, outside the log; this aggregate (one
per job, its id derived from the job's) puts the report into the log once, with the SHA-256
of its content, so the artifact store (a read model) lists it per clone and a rebuild
refills it. A job's report is the same wherever and however often it is computed (its
inputs are pinned), so recording it a second time is refused by the id alone.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from aggregates.base import DomainAggregate, derive_id
from aggregates.generations import json_artifact


def report_record_id(job_id: UUID) -> UUID:
    return derive_id("BacktestReportRecord", str(job_id))


class BacktestReportRecord(DomainAggregate):
    class Recorded(DomainAggregate.Created):
        job_id: UUID
        clone_id: UUID
        owner_id: UUID
        version_id: str
        artifacts: list[dict[str, str]]

    @event(Recorded)
    def __init__(
        self,
        id: UUID,
        job_id: UUID,
        clone_id: UUID,
        owner_id: UUID,
        version_id: str,
        artifacts: list[dict[str, str]],
    ) -> None:
        self.job_id = job_id
        self.clone_id = clone_id
        self.owner_id = owner_id
        self.version_id = version_id
        self.sha256 = artifacts[0]["sha256"]

    @classmethod
    def of(
        cls,
        job_id: UUID,
        clone_id: UUID,
        owner_id: UUID,
        version_id: str,
        report: dict[str, Any],
    ) -> BacktestReportRecord:
        artifact = json_artifact("backtest-report", report)
        return cls(
            id=report_record_id(job_id),
            job_id=job_id,
            clone_id=clone_id,
            owner_id=owner_id,
            version_id=version_id,
            artifacts=[artifact.as_record()],
        )
