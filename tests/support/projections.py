from __future__ import annotations

from projections.runner import ProjectionRunner
from services.bootstrap import Services


def catch_up(services: Services) -> None:
    """Bring every projection to the head of the log, as the worker would: one reader."""
    ProjectionRunner(services.projections, None, services.url).catch_up()
