"""Run one round of a scheduled job, exactly as the worker builds it, on a test's clock."""

from __future__ import annotations

from typing import Any

from runtime.clock import Clock
from services.bootstrap import Services
from services.schedule import scheduled_jobs


def run_job(services: Services, name: str, clock: Clock) -> Any:
    """One round of the job `name`, its collaborators the worker's, its clock `clock`."""
    job, _seconds = scheduled_jobs(services, clock=clock)[name]
    return job()
