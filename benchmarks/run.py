"""`make bench`: appends, rebuild and load figures against their targets, as a table.

Starts an embedded PostgreSQL in a temporary directory (or uses PUMPPARTY_DATABASE_URL),
gives each benchmark a fresh database, prints the table and writes it into
benchmarks/RESULTS.md. These are measurements, not timed tests: nothing fails the build.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import psycopg
from rich.console import Console

from benchmarks.aggregates import SNAPSHOT_INTERVAL
from benchmarks.appends import AppendBenchmark, AppendResult
from benchmarks.harness import Figure, fresh_services, server
from benchmarks.loads import LoadResult, run_loads
from benchmarks.prop_load import prop_load_figures
from benchmarks.rebuild import PROJECTION, RebuildResult, run_rebuild
from benchmarks.report import markdown, print_table, write_results

RESULTS = Path(__file__).with_name("RESULTS.md")
PRODUCT = "product"
APPEND_TARGET = 0.5
REBUILD_TARGET = 10_000
FLAT_FACTOR = 1.5


@dataclass(frozen=True)
class Plan:
    seconds: float = 1.5
    warmup: float = 0.3
    rounds: int = 5
    accounts: int = 8000
    events: int = 100_000
    rebuild_batch: int = 2000
    histories: tuple[int, int] = (10, 10_000)


QUICK = Plan(seconds=0.5, warmup=0.2, rounds=1, accounts=800, events=10_000, histories=(10, 1000))

TEMPLATE = """# Benchmark results

`make bench` writes the block below (the newest run); the notes around it are kept.
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run, small sizes")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    return parser.parse_args()


def main() -> None:
    # On SIGTERM, unwind normally so the embedded server is stopped and its files removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    plan = QUICK if args.quick else Plan()
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped to a file or CI log: keep rows on one line
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    figures: list[Figure] = []
    with server() as (url, where):
        server_version = _server_version(url)
        with _section(console, "(a) appends"):
            figures += append_figures(url, plan)
        with _section(console, "(b) rebuild"):
            figures += rebuild_figures(url, plan)
        with _section(console, "(c) loads"):
            figures += load_figures(url, plan)
        with _section(console, "(d) prop account loads"), fresh_services(url, "prop") as services:
            figures += prop_load_figures(services, histories=plan.histories)
    elapsed = time.perf_counter() - started
    heading = _heading(plan, where, server_version, load_before, elapsed)
    print_table(console, figures, title="Pump Party ledger benchmarks")
    for line in heading[1:]:
        console.print(line.removeprefix("- "), style="dim")
    if not args.no_write and not args.quick:
        write_results(RESULTS, markdown(figures, heading), TEMPLATE)
        console.print(f"written to benchmarks/{RESULTS.name}", style="dim")


# (a) ------------------------------------------------------------------------------------


def append_figures(url: str, plan: Plan) -> list[Figure]:
    with fresh_services(url, "appends") as services:
        bench = AppendBenchmark(
            services,
            {PRODUCT: services.event_log},
            seconds=plan.seconds,
            warmup=plan.warmup,
            rounds=plan.rounds,
        )
        results = [bench.run_create(clients) for clients in (1, 8)]
        results += [bench.run_increment(c, accounts=plan.accounts) for c in (1, 8)]
    figures = []
    for result in results:
        for variant in result.command_rounds:
            figures.append(_append_figure(result, variant, plan))
    return figures


def _append_figure(result: AppendResult, variant: str, plan: Plan) -> Figure:
    what = {"create": "create", "increment": "load+increment"}[result.kind]
    clients = f"{result.clients} client{'s' if result.clients > 1 else ''}"
    ratio, ratios = result.ratio(variant), result.ratios(variant)
    # The target is for appends alone; load+increment adds a read the raw side does not do.
    judged = result.clients == 1 and result.kind == "create"
    return Figure(
        section="(a) append",
        measure=f"{what}, {clients}",
        code=PRODUCT,
        value=ratio,
        unit="x raw",
        detail=(
            f"{result.rate(variant):,.0f} cmd/s; raw {result.raw_rate:,.0f}/s"
            f" ({result.payload_bytes} B); rounds {min(ratios):.2f}-{max(ratios):.2f}x"
        ),
        target=f">= {APPEND_TARGET}x raw" if judged else "",
        passed=(ratio >= APPEND_TARGET) if judged else None,
    )


# (b) ------------------------------------------------------------------------------------


def rebuild_figures(url: str, plan: Plan) -> list[Figure]:
    with fresh_services(url, "rebuild") as services:
        results: dict[str, RebuildResult] = {
            PRODUCT: run_rebuild(services, events=plan.events, batch_size=plan.rebuild_batch)
        }
    figures = []
    for result in results.values():
        figures.append(
            Figure(
                section="(b) rebuild",
                measure=f"{PROJECTION}, {result.events:,} events",
                code=PRODUCT,
                value=result.rate,
                unit="events/s",
                detail=f"{result.seconds:.1f} s",
                target=f">= {REBUILD_TARGET:,} events/s",
                passed=result.rate >= REBUILD_TARGET,
            )
        )
    return figures


# (c) ------------------------------------------------------------------------------------


def load_figures(url: str, plan: Plan) -> list[Figure]:
    short, long = plan.histories
    worst_short, worst_long = SNAPSHOT_INTERVAL * 2 - 1, long + SNAPSHOT_INTERVAL - 1
    with fresh_services(url, "loads") as services:
        results = run_loads(
            services.event_log,
            plain=[short, long],
            snapshotted=[short, long, worst_short, worst_long],
        )
    by_key = {(r.history, r.snapshots): r for r in results}
    figures = []
    for result in results:
        target, passed = "", None
        if result.snapshots and result.history in (long, worst_long):
            base = by_key[(short if result.history == long else worst_short, True)]
            limit = base.median_ms * FLAT_FACTOR
            target = f"flat: <= {FLAT_FACTOR}x {base.history:,}-event load"
            passed = result.median_ms <= limit
        figures.append(
            Figure(
                section="(c) load",
                measure=result.label,
                value=result.median_ms,
                unit="ms",
                detail=_load_detail(result),
                target=target,
                passed=passed,
            )
        )
    return figures


def _load_detail(result: LoadResult) -> str:
    replay = f"{result.replayed:,} events"
    if result.snapshots and result.history >= SNAPSHOT_INTERVAL:
        replay = f"snapshot + {replay}"
    return f"{replay}; median of {result.loads}"


# ----------------------------------------------------------------------------------------


@contextmanager
def _section(console: Console, name: str) -> Iterator[None]:
    started = time.perf_counter()
    with console.status(f"running {name} ..."):
        yield
    console.print(f"{name}: done in {time.perf_counter() - started:.0f} s", style="dim")


def _server_version(url: str) -> str:
    settings = []
    with psycopg.connect(url) as conn:
        for name in ("server_version", "fsync", "synchronous_commit"):
            row = conn.execute(f"SHOW {name}").fetchone()
            settings.append(str(row[0]) if row else "?")
    return "{} (fsync {}, synchronous_commit {})".format(*settings)


def _heading(
    plan: Plan, where: str, server_version: str, load_before: float, elapsed: float
) -> list[str]:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    packages = ", ".join(f"{name} {version(name)}" for name in ("eventsourcing", "psycopg"))
    return [
        f"## Run of {today}",
        "",
        f"- Server: {where}, PostgreSQL {server_version}.",
        f"- Client: Python {platform.python_version()}, {packages};"
        f" {os.cpu_count()} CPUs; load average {load_before:.2f} at start,"
        f" {os.getloadavg()[0]:.2f} at end; run took {elapsed:.0f} s.",
        "- (a) `Ledger.execute`, one event per command: *create* opens a new aggregate (no"
        " read); *load+increment* loads one with a short history and appends one event."
        " Each client is a thread (command path: the ledger's pool; raw: its own connection)."
        " Raw = psycopg INSERT+COMMIT of the same topic and state bytes (size in brackets)"
        " into a plain table shaped like the events table. Rounds alternate raw and command"
        f" path ({plan.rounds} rounds of {plan.seconds:g} s after {plan.warmup:g} s warm-up);"
        " the figure is the median of the rounds' ratios, rates are medians too.",
        f"- (b) `projections.rebuild.rebuild` of `{PROJECTION}` over {plan.events:,} events"
        f" ({plan.events // 100:,} aggregates x 100 events), batches of {plan.rebuild_batch:,},"
        " into a fresh generation.",
        f"- (c) `Ledger.repository.get` of one aggregate; snapshot interval {SNAPSHOT_INTERVAL};"
        " 199 and 10,099 events are the worst case (99 events after the last snapshot).",
        "- (d) `PropAccount` load with 10 and 10,000 fills (snapshots every 100 events).",
    ]


if __name__ == "__main__":
    main()
