"""What each console panel shows, read through the projections' query functions and the
services (no SQL here): the same sources as `/v1/health/*` and `/metrics`.

Each panel is a function from the console's collaborators to a small dict the panel's
template renders; the live stream compares those dicts between looks to know which panels
to tell the page to fetch again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from api.console.signals import SignalWatch
from api.routers.health import LATE_AFTER_INTERVALS
from ingest.health import health_report
from ingest.ingestion import watched
from projections import arena, reconciliation, state
from projections import races as race_reads
from runtime.clock import Clock
from services import dead_letters
from services.backups import backup_checks
from services.bootstrap import Services

LATEST_RACES = 8
"""Races listed at a glance (the most recently changed)."""

DEAD_LETTERS_SHOWN = 100


@dataclass(frozen=True)
class Console:
    """What a panel reads from: the app's services, its clock, its request histogram."""

    services: Services
    clock: Clock
    signals: SignalWatch


Loader = Callable[[Console], Awaitable[dict[str, Any]]]


async def projections_panel(console: Console) -> dict[str, Any]:
    projections = console.services.projections
    statuses = await run_in_threadpool(projections.statuses)
    rebuilds = await run_in_threadpool(projections.rebuilds)
    rows = [
        {
            "name": s.name,
            "generation": s.generation,
            "position": s.position,
            "head": s.head,
            "lag": s.lag,
            "status": s.status,
            "stalled_position": s.stalled_position,
            "stalled_topic": s.stalled_topic,
            "stalled_error": s.stalled_error,
            "stalled_since": s.stalled_since,
            "rebuild_position": rebuilds.get(s.name),
        }
        for s in statuses
    ]
    return {
        "projections": rows,
        "head": statuses[0].head if statuses else 0,
        "stalled": [r for r in rows if r["status"] == "stalled"],
    }


async def workers_panel(console: Console) -> dict[str, Any]:
    now = console.clock()
    workers = []
    for beat in await state.worker_heartbeats(console.services.reads):
        age = max((now - beat.beat_at).total_seconds(), 0.0)
        workers.append(
            {
                "job": beat.job,
                "process": beat.process,
                "beat_at": beat.beat_at,
                "age_seconds": age,
                "interval_seconds": beat.interval_seconds,
                "status": "late" if age > LATE_AFTER_INTERVALS * beat.interval_seconds else "alive",
                "last_error": beat.last_error,
                "last_outcome": beat.last_outcome,
            }
        )
    return {"workers": workers}


async def dead_letters_panel(console: Console) -> dict[str, Any]:
    letters = await run_in_threadpool(
        lambda: dead_letters.list_dead_letters(console.services, limit=DEAD_LETTERS_SHOWN)
    )
    return {"letters": letters}


async def reconciliation_panel(console: Console) -> dict[str, Any]:
    settings = console.services.settings
    stale_after = reconciliation.stale_after(settings)
    result = await reconciliation.latest_check(console.services.reads)
    if result is None:
        return {"status": "unknown", "result": None, "stale_after": stale_after}
    age = result.age_seconds or 0.0
    status = "stale" if age > stale_after else "ok" if result.ok else "failing"
    return {"status": status, "result": result, "stale_after": stale_after}


async def backups_panel(console: Console) -> dict[str, Any]:
    checks = await run_in_threadpool(backup_checks, console.services.event_log)
    if checks is None:
        return {"status": "unknown", "checks": None}
    status = "ok" if checks.last_ok else "failing"
    return {
        "status": status,
        "checks": {
            "last_verified_at": checks.last_verified_at,
            "last_verified_file": checks.last_verified_file,
            "last_verified_head": checks.last_verified_head,
            "last_failed_at": checks.last_failed_at,
            "last_failure": checks.last_failure,
            "consecutive_failures": checks.consecutive_failures,
            "verified_count": checks.verified_count,
            "failed_count": checks.failed_count,
        },
    }


async def ingestion_panel(console: Console) -> dict[str, Any]:
    settings = console.services.settings
    report = await health_report(console.services.reads, watched(settings), console.clock())
    return {"mode": settings.ingest_mode, "report": report}


async def arena_panel(console: Console) -> dict[str, Any]:
    reads = console.services.reads
    gauges = await run_in_threadpool(arena.gauges, console.services.datastore)
    capacity = (
        gauges.capacity if gauges.capacity is not None else console.services.settings.arena_capacity
    )
    return {
        "gauges": gauges,
        "capacity": capacity,
        "controls": await arena.controls(reads),
        "latest_round": await arena.latest_round(reads),
        "race_counts": await race_reads.race_counts(reads),
        "races": await race_reads.latest_races(reads, LATEST_RACES),
    }


async def overview_panel(console: Console) -> dict[str, Any]:
    shown = {name: await PANELS[name][1](console) for name in SUMMARIZED}
    return {"signals": console.signals.look(), **summarize(shown)}


SUMMARIZED = ("projections", "workers", "dead-letters", "reconciliation", "backups", "ingestion")


def summarize(shown: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each area's state in a word or a number, for the overview."""
    projections = shown["projections"]["projections"]
    workers = shown["workers"]["workers"]
    return {
        "head": shown["projections"]["head"],
        "stalled": len(shown["projections"]["stalled"]),
        "max_lag": max((r["lag"] for r in projections), default=0),
        "late_workers": sum(w["status"] == "late" for w in workers),
        "failing_workers": sum(w["last_error"] is not None for w in workers),
        "dead_letters": sum(letter.state == "dead" for letter in shown["dead-letters"]["letters"]),
        "reconciliation": shown["reconciliation"]["status"],
        "backups": shown["backups"]["status"],
        "ingestion": _worst(h.status for h in shown["ingestion"]["report"]),
    }


def _worst(statuses: Any) -> str:
    seen = set(statuses)
    for status in ("failing", "stale"):
        if status in seen:
            return status
    return "ok" if seen else "off"


PANELS: dict[str, tuple[str, Loader]] = {
    "overview": ("Overview", overview_panel),
    "projections": ("Projections", projections_panel),
    "workers": ("Workers and jobs", workers_panel),
    "dead-letters": ("Dead letters", dead_letters_panel),
    "reconciliation": ("Reconciliation", reconciliation_panel),
    "backups": ("Backups", backups_panel),
    "ingestion": ("Ingestion", ingestion_panel),
    "arena": ("Arena and races", arena_panel),
}
"""Each panel's name in URLs and events, its title, and what it shows."""

MOVING = frozenset({"age_seconds", "staleness_seconds", "signals"})
"""What changes with the clock alone: left out when looking for changes (the page also
refreshes every panel on the stream's periodic `tick`)."""


def _marks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _marks(v) for k, v in value.items() if k not in MOVING}
    if isinstance(value, list | tuple):
        return [_marks(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _marks({k: getattr(value, k) for k in value.__dataclass_fields__})
    return value


async def fingerprints(console: Console) -> dict[str, str]:
    """What each panel shows now, less what moves with the clock, as text to compare
    between looks. Of the overview's golden signals only the errors count (a full look
    would use up a rate reading)."""
    shown = {name: await load(console) for name, (_t, load) in PANELS.items() if name != "overview"}
    marks = {name: repr(_marks(panel)) for name, panel in shown.items()}
    marks["overview"] = repr((console.signals.errors_seen(), _marks(summarize(shown))))
    return marks
