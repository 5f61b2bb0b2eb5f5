"""(e) The service over HTTP, as a client gets it: `pumpparty api` (uvicorn on loopback) in
one process and `pumpparty worker` (every projection runner and job) in another, against
raw INSERT+COMMIT and a bare ASGI route on the same server, in the same run.

- commands: `POST /v1/economy/audition-quotes` (one event each) by signed-in users, at 1
  and 32 connections, against raw INSERT+COMMIT of the same bytes by 1 writer;
- reads: `GET /v1/clones` (an owner's list) and `GET /v1/clones/{id}` (a clone's detail)
  at 4 and 32 connections, against `benchmarks.bare` (Starlette, an async psycopg pool,
  orjson) running the same SELECTs, served by uvicorn the same way;
- projection lag during the 32-connection command rounds: from a command's response until
  every projection has read past its position, sampled every 2 ms;
- to split the commands' gap, the same command called in this process (no HTTP) by one
  thread, in the same rounds, with the worker running.

The load generator is an asyncio client in this process: one keep-alive HTTP/1.1
connection per simulated client, each sending a request and reading its answer in turn
(closed loop). It is much lighter than a general client (httpx spends ~0.3 ms of CPU per
request, which on 2 cores would be taken from the server), and both sides of every ratio
pay the same client. Rounds alternate baseline and product, as in (a).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
from eth_account import Account
from eth_account.messages import encode_defunct
from psycopg.sql import SQL, Composed, Identifier, Literal

from aggregates.base import CommandContext
from api.routers.clones import EXAMPLE_GRAPH
from benchmarks.appends import Operation, create_raw_table, raw_insert
from benchmarks.harness import fresh_database, run_clients
from projections.registry import PROJECTIONS
from runtime.clock import system_clock
from runtime.database import database_urls
from runtime.schema import EVENTS_TABLE, LOG_NAME
from runtime.settings import Settings
from services import economy
from services.bootstrap import Services, open_services

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
LAG_SAMPLE_SECONDS = 0.002
LAG_WATCH = "bench-lag-watch"
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class HttpPlan:
    seconds: float = 1.0
    warmup: float = 0.3
    rounds: int = 3
    users: int = 32
    clones_per_user: int = 5
    command_connections: tuple[int, ...] = (1, 32)
    read_connections: tuple[int, ...] = (4, 32)


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One round of one kind of request at one number of connections."""

    completed: int
    seconds: float
    latencies: list[float]
    answered: int = 0
    """Every answer, the warm-up's included (what the CPU meter's interval covers)."""

    @property
    def rate(self) -> float:
        return self.completed / self.seconds


@dataclass
class Compared:
    """The product against its baseline, round by round."""

    what: str
    connections: int
    product: list[Load] = field(default_factory=list)
    baseline: list[Load] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [p.rate / b.rate for p, b in zip(self.product, self.baseline, strict=True) if b.rate]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios())

    @property
    def rate(self) -> float:
        return statistics.median(load.rate for load in self.product)

    @property
    def baseline_rate(self) -> float:
        return statistics.median(load.rate for load in self.baseline)

    def percentile_ms(self, q: float, *, baseline: bool = False) -> float:
        loads = self.baseline if baseline else self.product
        return percentile_ms([sample for load in loads for sample in load.latencies], q)


@dataclass(frozen=True)
class HttpResult:
    commands: list[Compared]
    direct: Compared
    """The same command called in-process by one thread (no HTTP), against the same raw."""
    reads: list[Compared]
    lags: list[float]
    """Seconds from a command's response until every projection had read past it."""
    payload_bytes: int
    cpu: dict[int, dict[str, float]] = field(default_factory=dict)
    """CPU milliseconds per command over HTTP, by connections, for each process."""


def percentile_ms(samples: Sequence[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- the load generator ----------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")


class Connection:
    """One keep-alive HTTP/1.1 connection; answers must carry Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        at = head.lower().find(b"\r\ncontent-length:")
        if at < 0:
            raise HttpError(status, b"no Content-Length in " + head)
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def request(method: str, path: str, port: int, token: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {HOST}:{port}"]
    if token:
        lines.append(f"authorization: Bearer {token}")
    if method != "GET":
        lines.append("content-length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


Record = Callable[[float, bytes], None]


async def load(
    port: int,
    streams: Sequence[Iterator[bytes]],
    expect: int,
    *,
    seconds: float,
    warmup: float,
    record: Record | None = None,
) -> Load:
    """Each stream on its own connection, request after request; what completes in the
    window after `warmup` is counted (and handed to `record` with its completion time)."""
    connections = await asyncio.gather(*(Connection.open(port) for _ in streams))
    start = time.perf_counter() + warmup
    end = start + seconds
    latencies: list[float] = []
    answered = 0

    async def client(connection: Connection, stream: Iterator[bytes]) -> None:
        nonlocal answered
        while (sent := time.perf_counter()) < end:
            status, body = await connection.send(next(stream))
            done = time.perf_counter()
            answered += 1
            if status != expect:
                raise HttpError(status, body)
            if start <= sent and done < end:
                latencies.append(done - sent)
                if record is not None:
                    record(done, body)

    try:
        await asyncio.gather(*(client(c, s) for c, s in zip(connections, streams, strict=True)))
    finally:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
    return Load(len(latencies), seconds, latencies, answered)


# --- the servers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Stack:
    """The service's processes and the bare baseline, on one fresh database."""

    owner_url: str
    service_url: str
    api_port: int
    bare_port: int
    data_dir: Path
    logs: list[Path]
    api_pid: int
    worker_pid: int


def service_env(owner_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPPARTY_")}
    return env | {
        "PUMPPARTY_DATABASE_URL": owner_url,
        "PUMPPARTY_DATA_DIR": str(data_dir),
        "PUMPPARTY_INGEST_MODE": "off",
        "PUMPPARTY_AUTH_RATE_LIMIT": "100000/minute",  # every wallet signs in from loopback
    }


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_for(
    what: str, ready: Callable[[], bool], child: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{what} exited ({child.returncode}):\n{tail(log)}")
        try:
            if ready():
                return
        except (httpx.HTTPError, psycopg.Error):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start in {START_TIMEOUT:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def runners_beating(url: str, pid: int) -> bool:
    """The worker's runner holds every projection's lease (it beats for each)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM worker_heartbeats WHERE job LIKE %s AND process LIKE %s",
            ("projection:%", f"%:{pid}"),
        ).fetchone()
    return bool(row and row[0] >= len(PROJECTIONS))


@contextmanager
def stack(url: str) -> Iterator[Stack]:
    """A fresh migrated database; the worker, then the API, then the bare app, started."""
    with ExitStack() as stack_:
        owner_url = stack_.enter_context(fresh_database(url, "http"))
        data_dir = Path(stack_.enter_context(tempfile.TemporaryDirectory(prefix="bench-http-")))
        settings = Settings(database_url=owner_url, data_dir=data_dir)
        open_services(settings).close()  # migrate once, before any process starts
        service_url = database_urls(settings).service
        env = service_env(owner_url, data_dir)
        logs = [data_dir / name for name in ("worker.log", "api.log", "bare.log")]
        api_port, bare_port = free_port(), free_port()

        worker = stack_.enter_context(process(["-m", "scripts.cli", "worker"], env, logs[0]))
        wait_for(
            "pumpparty worker", lambda: runners_beating(service_url, worker.pid), worker, logs[0]
        )
        api = stack_.enter_context(
            process(["-m", "scripts.cli", "api", "--port", str(api_port)], env, logs[1])
        )
        health = f"http://{HOST}:{api_port}/v1/health"
        wait_for("pumpparty api", lambda: http_ok(health), api, logs[1])
        bare_env = env | {"BENCH_BARE_DATABASE_URL": service_url}
        bare_args = ["-m", "uvicorn", "benchmarks.bare:app", "--host", HOST]
        bare_args += ["--port", str(bare_port), "--no-access-log", "--log-level", "warning"]
        bare = stack_.enter_context(process(bare_args, bare_env, logs[2]))
        probe = f"http://{HOST}:{bare_port}/bare/clones?owner=00000000-0000-0000-0000-000000000000"
        wait_for("bare app", lambda: http_ok(probe), bare, logs[2])
        yield Stack(
            owner_url, service_url, api_port, bare_port, data_dir, logs, api.pid, worker.pid
        )


# --- data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    user_id: str
    address: str
    token: str
    clones: list[str]


def sign_in(client: httpx.Client) -> tuple[str, str, str]:
    wallet = Account.create()
    nonce = client.post("/v1/auth/nonce", json={"address": wallet.address})
    nonce.raise_for_status()
    message = nonce.json()["message"]
    signature = wallet.sign_message(encode_defunct(text=message)).signature.hex()
    signature = signature if signature.startswith("0x") else "0x" + signature
    verified = client.post("/v1/auth/verify", json={"message": message, "signature": signature})
    verified.raise_for_status()
    body = verified.json()
    return body["user"]["id"], body["user"]["address"], body["access_token"]


def populate(port: int, plan: HttpPlan) -> list[User]:
    """Users signed in through the API, each with clones that have a saved draft; returns
    once the read models hold all of it."""
    users = []
    position = 0
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30) as client:
        for _ in range(plan.users):
            user_id, address, token = sign_in(client)
            auth = {"Authorization": f"Bearer {token}"}
            clones = []
            for n in range(plan.clones_per_user):
                made = client.post("/v1/clones", json={"name": f"bench {n}"}, headers=auth)
                made.raise_for_status()
                clone_id = made.json()["clone_id"]
                saved = client.put(f"/v1/clones/{clone_id}/draft", json=EXAMPLE_GRAPH, headers=auth)
                saved.raise_for_status()
                position = max(position, saved.json()["position"])
                clones.append(clone_id)
            users.append(User(user_id, address, token, clones))
        last = users[-1]
        for _ in range(30):  # the worker catches up (each wait is bounded by the API)
            caught_up = client.get(
                f"/v1/clones/{last.clones[-1]}",
                params={"min_position": position},
                headers={"Authorization": f"Bearer {last.token}"},
            )
            if caught_up.status_code == 200:
                break
        caught_up.raise_for_status()
    return users


def stored_payload(url: str, position: int) -> tuple[str, bytes]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            SQL("SELECT topic, state FROM {} WHERE notification_id = %s").format(
                Identifier(EVENTS_TABLE)
            ),
            (position,),
        ).fetchone()
    assert row is not None
    return str(row[0]), bytes(row[1])


async def same_answers(servers: Stack, user: User) -> None:
    """The bare routes answer what the API does (the same rows), or the ratio means nothing."""
    answers = []
    for port, path in (
        (servers.api_port, f"/v1/clones/{user.clones[0]}"),
        (servers.bare_port, f"/bare/clones/{user.clones[0]}?owner={user.user_id}"),
        (servers.api_port, "/v1/clones"),
        (servers.bare_port, f"/bare/clones?owner={user.user_id}"),
    ):
        connection = await Connection.open(port)
        status, body = await connection.send(request("GET", path, port, user.token))
        await connection.close()
        if status != 200:
            raise HttpError(status, body)
        answers.append(orjson.loads(body))
    api_detail, bare_detail, api_list, bare_list = answers
    assert api_detail["clone_id"] == bare_detail["clone_id"]
    assert api_detail["draft"]["graph"] == bare_detail["draft_graph"]
    assert [c["clone_id"] for c in api_list["items"]] == [c["clone_id"] for c in bare_list["items"]]


# --- projection lag --------------------------------------------------------------------


class LagWatch:
    """How far the slowest projection has read, sampled on its own thread and connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        with psycopg.connect(url) as conn:
            generations = conn.execute("SELECT name, generation FROM projection_state").fetchall()
        self.query = self._slowest(generations)
        self.times: list[float] = []
        self.positions: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _slowest(generations: list[tuple[str, int]]) -> Composed:
        reads = [
            SQL(
                "coalesce((SELECT max(notification_id) FROM {} WHERE application_name = {}), 0)"
            ).format(Identifier(f"{name}__g{generation}_tracking"), Literal(LOG_NAME))
            for name, generation in generations
        ]
        return SQL("SELECT least({})").format(SQL(", ").join(reads))

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name=LAG_WATCH) as conn:
            while not self._stop.is_set():
                row = conn.execute(self.query, prepare=True).fetchone()
                self.times.append(time.perf_counter())
                self.positions.append(int(row[0]) if row else 0)
                self._stop.wait(LAG_SAMPLE_SECONDS)

    def __enter__(self) -> LagWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def caught_up(self, position: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.positions and self.positions[-1] >= position):
            if time.monotonic() > deadline:
                raise RuntimeError(f"projections did not reach position {position}")
            time.sleep(0.01)

    def lags(self, commits: Sequence[tuple[float, int]]) -> list[float]:
        """For each (response time, position): until a sample taken after the response
        showed every projection past the position."""
        lags = []
        for answered, position in commits:
            first = bisect.bisect_left(self.times, answered)
            reached = bisect.bisect_left(self.positions, position, lo=first)
            if reached < len(self.times):
                lags.append(self.times[reached] - answered)
        return lags


class CpuMeter:
    """CPU time of the API, the worker and every PostgreSQL process (backends and the
    server's own, as `pg_stat_activity` lists them), from Linux's /proc: where a command's
    cost goes, whichever process pays it."""

    CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

    def __init__(self, servers: Stack) -> None:
        self.servers = servers
        self.spent: dict[str, float] = {}
        self.commands = 0

    def reading(self) -> dict[str, dict[int, float]]:
        with psycopg.connect(self.servers.owner_url, autocommit=True) as conn:
            # The lag sampler's queries (one every 2 ms) and this reading are the bench's.
            server_pids = [
                int(pid)
                for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                    " AND application_name IS DISTINCT FROM %s",
                    (LAG_WATCH,),
                )
            ]
        return {
            "api": self._seconds([self.servers.api_pid]),
            "worker": self._seconds([self.servers.worker_pid]),
            "PostgreSQL": self._seconds(server_pids),
        }

    def add(self, before: dict[str, dict[int, float]], load: Load) -> None:
        after = self.reading()
        for party, seconds in after.items():
            # A process that started during the load counts from zero.
            used = sum(spent - before[party].get(pid, 0.0) for pid, spent in seconds.items())
            self.spent[party] = self.spent.get(party, 0.0) + used
        self.commands += load.answered

    def per_command_ms(self) -> dict[str, float]:
        return {party: 1000 * spent / max(self.commands, 1) for party, spent in self.spent.items()}

    @classmethod
    def _seconds(cls, pids: Sequence[int]) -> dict[int, float]:
        spent = {}
        for pid in pids:
            try:
                fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue  # it ended
            spent[pid] = (int(fields_[11]) + int(fields_[12])) / cls.CLOCK_TICKS
        return spent


# --- the run ---------------------------------------------------------------------------


def direct_quotes(services: Services, user: User) -> Callable[[int], Operation]:
    """The command the HTTP route runs, called in this process: what HTTP adds is the rest."""
    settings = services.settings

    def make(_: int) -> Operation:
        def operation() -> None:
            request_id = uuid.uuid4().hex
            economy.quote_audition(
                services.event_log,
                CommandContext(
                    actor=f"user:{user.user_id}",
                    occurred_at=system_clock(),
                    correlation_id=request_id,
                    causation_id=f"request:{request_id}",
                ),
                quote_id=uuid.uuid4(),
                user_id=uuid.UUID(user.user_id),
                payer=user.address,
                fee=settings.audition_fee,
                token_contract=settings.usdc_contract,
                chain_id=settings.chain_id,
                treasury_address=settings.treasury_address,
                valid_for=timedelta(seconds=settings.quote_ttl),
            )

        return operation, lambda: None

    return make


def run_http(url: str, plan: HttpPlan) -> HttpResult:
    with stack(url) as servers:
        users = populate(servers.api_port, plan)
        settings = Settings(database_url=servers.owner_url, data_dir=servers.data_dir)
        services = open_services(settings, run_migrations=False)
        try:
            return asyncio.run(_measure(servers, users, plan, direct_quotes(services, users[0])))
        finally:
            services.close()


async def _measure(
    servers: Stack, users: list[User], plan: HttpPlan, direct: Callable[[int], Operation]
) -> HttpResult:
    api, bare = servers.api_port, servers.bare_port
    seconds, warmup = plan.seconds, plan.warmup

    # Commands: the raw side inserts the bytes the command path stored for a quote.
    quote = request("POST", "/v1/economy/audition-quotes", api, users[0].token)
    first = await Connection.open(api)
    status, body = await first.send(quote)
    await first.close()
    if status != 201:
        raise HttpError(status, body)
    topic, state = stored_payload(servers.owner_url, orjson.loads(body)["position"])
    create_raw_table(servers.owner_url)

    def quotes(connections: int) -> list[Iterator[bytes]]:
        return [
            itertools.repeat(
                request("POST", "/v1/economy/audition-quotes", api, users[i % len(users)].token)
            )
            for i in range(connections)
        ]

    commands = [Compared("command", n) for n in plan.command_connections]
    meters = {n: CpuMeter(servers) for n in plan.command_connections}
    in_process = Compared("command in-process", 1)
    commits: list[tuple[float, int]] = []
    lags: list[float] = []
    for _ in range(plan.rounds):
        raw = run_clients(
            1,
            lambda _: raw_insert(servers.owner_url, topic, state, new_ids=True),
            seconds=seconds,
            warmup=warmup,
        )
        in_process.baseline.append(Load(raw.operations, raw.seconds, []))
        done = run_clients(1, direct, seconds=seconds, warmup=warmup)
        in_process.product.append(Load(done.operations, done.seconds, []))
        for compared in commands:
            compared.baseline.append(Load(raw.operations, raw.seconds, []))
            meter = meters[compared.connections]
            if compared.connections == max(plan.command_connections):
                commits.clear()
                with LagWatch(servers.service_url) as watch:
                    before = meter.reading()
                    compared.product.append(
                        await load(
                            api,
                            quotes(compared.connections),
                            201,
                            record=lambda done, body: commits.append(
                                (done, orjson.loads(body)["position"])
                            ),
                            seconds=seconds,
                            warmup=warmup,
                        )
                    )
                    meter.add(before, compared.product[-1])
                    watch.caught_up(max(position for _, position in commits))
                lags += watch.lags(commits)
            else:
                before = meter.reading()
                compared.product.append(
                    await load(
                        api, quotes(compared.connections), 201, seconds=seconds, warmup=warmup
                    )
                )
                meter.add(before, compared.product[-1])

    # Reads: an owner's list and a clone's detail, the bare route first in each round.
    await same_answers(servers, users[0])

    def lists(port: int, connections: int, product: bool) -> list[Iterator[bytes]]:
        streams: list[Iterator[bytes]] = []
        for i in range(connections):
            user = users[i % len(users)]
            path = "/v1/clones" if product else f"/bare/clones?owner={user.user_id}"
            streams.append(itertools.repeat(request("GET", path, port, user.token)))
        return streams

    def details(port: int, connections: int, product: bool) -> list[Iterator[bytes]]:
        streams: list[Iterator[bytes]] = []
        for i in range(connections):
            user = users[i % len(users)]
            paths = [
                f"/v1/clones/{c}" if product else f"/bare/clones/{c}?owner={user.user_id}"
                for c in user.clones
            ]
            streams.append(itertools.cycle([request("GET", p, port, user.token) for p in paths]))
        return streams

    kinds: list[tuple[str, Callable[[int, int, bool], list[Iterator[bytes]]]]] = [
        ("list", lists),
        ("detail", details),
    ]
    reads = [Compared(what, n) for what, _ in kinds for n in plan.read_connections]
    streams_of = dict(kinds)
    for _ in range(plan.rounds):
        for compared in reads:
            make = streams_of[compared.what]
            n = compared.connections
            compared.baseline.append(
                await load(bare, make(bare, n, False), 200, seconds=seconds, warmup=warmup)
            )
            compared.product.append(
                await load(api, make(api, n, True), 200, seconds=seconds, warmup=warmup)
            )
    cpu = {n: meter.per_command_ms() for n, meter in meters.items()}
    return HttpResult(commands, in_process, reads, lags, len(state), cpu)
