"""`make bench`: appends, rebuild, load, HTTP and ticket figures against their targets, as a table.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import psycopg
from rich.console import Console

from benchmarks.aggregates import SNAPSHOT_INTERVAL
from benchmarks.appends import AppendBenchmark, AppendResult
from benchmarks.cadence import QUICK_CADENCE, CadencePlan, cadence_figures
from benchmarks.engine import QUICK_ENGINE, EnginePlan, engine_figures
from benchmarks.harness import Figure, fresh_services, server
from benchmarks.loads import LoadResult, run_loads
from benchmarks.over_http import Compared, HttpPlan, HttpResult, percentile_ms, run_http
from benchmarks.prop_load import prop_load_figures
from benchmarks.rebuild import PROJECTION, RebuildResult, run_rebuild
from benchmarks.report import markdown, print_table, write_results
from benchmarks.tickets import QUICK_TICKETS, TicketPlan, ticket_figures

RESULTS = Path(__file__).with_name("RESULTS.md")
PRODUCT = "product"
APPEND_TARGET = 0.5
REBUILD_TARGET = 10_000
FLAT_FACTOR = 1.5
COMMAND_TARGETS = {1: 0.3, 32: 0.5}  # HTTP commands, x raw INSERT+COMMIT (1 writer)
READ_TARGET = 0.5  # HTTP reads, x the bare route
READ_P99_MS = 20.0  # at 4 connections
LAG_P99_MS = 250.0
SECTIONS = ("a", "b", "c", "d", "e", "f", "g", "h")


@dataclass(frozen=True)
class Plan:
    seconds: float = 1.5
    warmup: float = 0.3
    rounds: int = 5
    accounts: int = 8000
    events: int = 100_000
    rebuild_batch: int = 2000
    histories: tuple[int, int] = (10, 10_000)
    http: HttpPlan = field(default_factory=HttpPlan)
    tickets: TicketPlan = field(default_factory=TicketPlan)
    engine: EnginePlan = field(default_factory=EnginePlan)
    cadence: CadencePlan = field(default_factory=CadencePlan)


QUICK = Plan(
    seconds=0.5,
    warmup=0.2,
    rounds=1,
    accounts=800,
    events=10_000,
    histories=(10, 1000),
    http=HttpPlan(seconds=0.5, warmup=0.2, rounds=1, users=8, clones_per_user=2),
    tickets=QUICK_TICKETS,
    engine=QUICK_ENGINE,
    cadence=QUICK_CADENCE,
)

TEMPLATE = """# Benchmark results

`make bench` writes the block below (the newest run); the notes around it are kept.
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run, small sizes")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only this section (repeatable); writes nothing",
    )
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
    only = set(args.only or SECTIONS)
    with server() as (url, where):
        server_version = _server_version(url)
        if "a" in only:
            with _section(console, "(a) appends"):
                figures += append_figures(url, plan)
        if "b" in only:
            with _section(console, "(b) rebuild"):
                figures += rebuild_figures(url, plan)
        if "c" in only:
            with _section(console, "(c) loads"):
                figures += load_figures(url, plan)
        if "d" in only:
            with _section(console, "(d) prop account loads"), fresh_services(url, "prop") as s:
                figures += prop_load_figures(s, histories=plan.histories)
        if "e" in only:
            with _section(console, "(e) http"):
                figures += http_figures(url, plan.http)
        if "f" in only:
            with _section(console, "(f) tickets"), fresh_services(url, "tickets") as s:
                figures += ticket_figures(s, plan.tickets)
        if "g" in only:
            with _section(console, "(g) executor"):
                figures += engine_figures(plan.engine)
        if "h" in only:
            with _section(console, "(h) cadence"), fresh_services(url, "cadence") as s:
                figures += cadence_figures(s, plan.cadence)
    elapsed = time.perf_counter() - started
    heading = _heading(plan, where, server_version, load_before, elapsed)
    print_table(console, figures, title="Pump Party ledger benchmarks")
    for line in heading[1:]:
        if line.startswith("- (") and line[3] not in only:
            continue  # the notes of sections not run
        console.print(line.removeprefix("- "), style="dim")
    if not args.no_write and not args.quick and not args.only:
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
    judged = result.clients == 1 and result.kind == "create" and variant == PRODUCT
    return Figure(
        section="(a) append",
        measure=f"{what}, {clients}" + ("" if variant == PRODUCT else f", {variant}"),
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


# (e) ------------------------------------------------------------------------------------


def http_figures(url: str, plan: HttpPlan) -> list[Figure]:
    result = run_http(url, plan)
    figures = [_command_figure(c, result) for c in result.commands]
    direct = result.direct
    figures.append(
        Figure(
            section="(e) http",
            measure="the same command in-process (no HTTP), 1 thread",
            value=direct.ratio,
            unit="x raw",
            detail=(
                f"{direct.rate:,.0f} cmd/s beside the worker; raw 1 writer"
                f" {direct.baseline_rate:,.0f}/s; rounds {min(direct.ratios()):.2f}-"
                f"{max(direct.ratios()):.2f}x"
            ),
        )
    )
    for compared in result.reads:
        figures.append(_read_figure(compared))
        if compared.connections == min(plan.read_connections):
            p99 = compared.percentile_ms(0.99)
            figures.append(
                Figure(
                    section="(e) http",
                    measure=f"{_READS[compared.what]} p99, {compared.connections} connections",
                    value=p99,
                    unit="ms",
                    detail=f"bare route p99 {compared.percentile_ms(0.99, baseline=True):.1f} ms",
                    target=f"<= {READ_P99_MS:g} ms",
                    passed=p99 <= READ_P99_MS,
                )
            )
    for connections, spent in result.cpu.items():
        figures.append(
            Figure(
                section="(e) http",
                measure=f"CPU per command over HTTP, {_connections(connections)}",
                value=sum(spent.values()),
                unit="ms",
                detail=", ".join(f"{party} {ms:.2f} ms" for party, ms in spent.items())
                + " (PostgreSQL: every server process, the lag sampler's left out)",
            )
        )
    writers = max(plan.command_connections)
    for q, target in ((0.5, None), (0.99, LAG_P99_MS)):
        lag = percentile_ms(result.lags, q)
        figures.append(
            Figure(
                section="(e) http",
                measure=f"projection lag p{q * 100:g}, {writers} connections writing",
                value=lag,
                unit="ms",
                detail=f"{len(result.lags):,} commands; every projection past the command",
                target=f"<= {target:g} ms" if target else "",
                passed=(lag <= target) if target else None,
            )
        )
    return figures


_READS = {"list": "GET /v1/clones (list)", "detail": "GET /v1/clones/{id} (detail)"}


def _connections(n: int) -> str:
    return f"{n} connection{'s' if n > 1 else ''}"


def _latency(compared: Compared, *, baseline: bool = False) -> str:
    p50 = compared.percentile_ms(0.5, baseline=baseline)
    p99 = compared.percentile_ms(0.99, baseline=baseline)
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def _command_figure(compared: Compared, result: HttpResult) -> Figure:
    target = COMMAND_TARGETS.get(compared.connections)
    ratios = compared.ratios()
    return Figure(
        section="(e) http",
        measure=f"POST audition-quotes (command), {_connections(compared.connections)}",
        value=compared.ratio,
        unit="x raw",
        detail=(
            f"{compared.rate:,.0f} cmd/s, {_latency(compared)}; raw 1 writer"
            f" {compared.baseline_rate:,.0f}/s ({result.payload_bytes} B);"
            f" rounds {min(ratios):.2f}-{max(ratios):.2f}x"
        ),
        target=f">= {target}x raw" if target else "",
        passed=(compared.ratio >= target) if target else None,
    )


def _read_figure(compared: Compared) -> Figure:
    ratios = compared.ratios()
    return Figure(
        section="(e) http",
        measure=f"{_READS[compared.what]}, {_connections(compared.connections)}",
        value=compared.ratio,
        unit="x bare",
        detail=(
            f"{compared.rate:,.0f} req/s, {_latency(compared)}; bare"
            f" {compared.baseline_rate:,.0f} req/s, {_latency(compared, baseline=True)};"
            f" rounds {min(ratios):.2f}-{max(ratios):.2f}x"
        ),
        target=f">= {READ_TARGET}x bare",
        passed=compared.ratio >= READ_TARGET,
    )


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
        "- (a) `EventLog.execute`, one event per command: *create* opens a new aggregate (no"
        " read); *load+increment* loads one with a short history and appends one event."
        " Each client is a thread (command path: the event log's pool; raw: its own connection)."
        " Raw = psycopg INSERT+COMMIT of the same topic and state bytes (size in brackets)"
        " into a plain table shaped like the events table. Rounds alternate raw and command"
        f" path ({plan.rounds} rounds of {plan.seconds:g} s after {plan.warmup:g} s warm-up);"
        " the figure is the median of the rounds' ratios, rates are medians too.",
        f"- (b) `projections.rebuild.rebuild` of `{PROJECTION}` over {plan.events:,} events"
        f" ({plan.events // 100:,} aggregates x 100 events), batches of {plan.rebuild_batch:,},"
        " into a fresh generation.",
        f"- (c) `EventLog.repository.get` of one aggregate; snapshot interval {SNAPSHOT_INTERVAL};"
        " 199 and 10,099 events are the worst case (99 events after the last snapshot).",
        "- (d) `PropAccount` load with 10 and 10,000 fills (snapshots every 100 events).",
        "- (e) Over HTTP, as a client gets it: `pumpparty api` (uvicorn on loopback, one"
        " process) beside `pumpparty worker` (every projection and job), on a fresh database"
        f" with {plan.http.users} signed-in users, {plan.http.clones_per_user} clones each"
        " (with a saved draft). Commands: `POST /v1/economy/audition-quotes` (one event each)"
        " against raw INSERT+COMMIT of the same bytes by 1 writer. Reads: an owner's list and"
        " a clone's detail against `benchmarks/bare.py` (Starlette + async psycopg pool +"
        " orjson, the same SELECTs, no auth) under uvicorn. Closed-loop keep-alive clients"
        f" (asyncio, in the bench process); {plan.http.rounds} rounds of {plan.http.seconds:g} s"
        f" after {plan.http.warmup:g} s warm-up, alternating baseline and product; latencies"
        " over all rounds. Lag: response to every projection past the command's position,"
        " sampled every 2 ms, during the 32-connection command rounds. CPU per command: the"
        " API's, the worker's and every PostgreSQL process's CPU time (from /proc) over the"
        " command rounds, divided by the commands answered (the lag sampler left out).",
        f"- (f) {plan.tickets.tickets:,} ticket purchases (`services.races.buy_ticket`, in"
        f" process) on one open race from {plan.tickets.clients} client threads released"
        " together, each client its own pre-funded user, against the same number of"
        " single-event commands on disjoint aggregates by the same clients (load+increment,"
        " one aggregate per command: judged; create: shown), and against the same purchases"
        f" spread over {plan.tickets.clients} races (a race per client: is the one race a hot"
        " spot?); rate = commands over release to last done;"
        f" {plan.tickets.rounds} rounds rotating the order, new buyers and races each round,"
        " medians. Then every race is checked in the `races` and `ledger` read models."
        f" Settlement: `aggregates.parimutuel.settle` over {plan.tickets.settle_tickets:,}"
        f" synthetic stakes, `time.process_time`, median of {plan.tickets.settle_rounds}.",
        f"- (g) `aggregates.backtests.backtest` of a 12-node graph (2 candle channels, 5"
        " transforms, the offline model, 2 signals, a risk rule with a stop, an action) over"
        f" {plan.engine.candles:,} seeded random-walk 5-minute candles for each of"
        f" {plan.engine.assets} assets, one process, wall clock; median of"
        f" {plan.engine.rounds} rounds. `decide_latest`: one asset's latest lookback bars.",
        f"- (h) The cadence driver's round (`services.cadence.CadenceDriver`, as the worker's"
        f" `engine_cadence` job runs it) over {plan.cadence.accounts} prop accounts on"
        f" {plan.cadence.clones_per_asset * 3} published clones (the 12-node graph,"
        " `cadence: 1m`, BTC/ETH/SOL), one new closed 1-minute bar and mark per asset before"
        " each round: decide, submit the prop action when the target moved, record the"
        " decision, each account under its advisory lock; a projection runner follows the"
        f" log in a thread; median of {plan.cadence.rounds} rounds, wall clock.",
    ]


if __name__ == "__main__":
    main()
