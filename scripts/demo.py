"""`pumpparty demo`: the whole platform, offline, in one command (issue 21).

By default the demo starts its own platform: the devchain (a real EVM on loopback with a
demo USDC, `scripts/devchain`) and the service (API and worker, in this process) on a fresh
data directory, with short durations (`demo_settings`). Then it tells the story as a client
would, over HTTP: demo creators sign in with SIWE, generate a clone from a prompt (the
offline provider), publish it, dry-run and backtest it, pay the audition fee on the
devchain and submit; the engine trades the auditions on replayed market data and the
evaluator judges them; the passers' profiles are approved, an admission round admits them,
an admin schedules a race; demo spectators deposit and buy tickets; the race runs, finishes,
becomes official and settles; two admins approve the payout; a winner withdraws and the
custody step pays it on the devchain. It ends with `audit verify` and the reconciliation
monitors, run as the operator runs them.

Admin rights: the demo's two admins are the devchain's deterministic demo wallets 2 and 3
(`DEMO_ADMINS`; 0 is the treasury, whose key custody pays withdrawals with); the service the
demo starts names them in `admin_addresses`, and its service tokens (arena sync, custody)
get secrets made for that start. A service started otherwise knows neither, so `--url`
does not take just any service: `pumpparty demo --serve` starts the platform alone and
writes its environment (chain, admins, tokens, data directory or database) to a file only
its user may read, and
`pumpparty demo --url URL` run with that environment tells the story against it, reaching
the devchain over its JSON-RPC and the log for the final checks as any operator command
does. Run it as often as you like: each run signs in fresh demo wallets and uses fresh ids.

Everything it writes is demo data and says so: clones, profiles and the race are named
"Demo ...", wallets are fresh demo keys (or the devchain's demo wallets), and each run
uses fresh ids, so a second run against the same service tells the story again.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from uuid import uuid4

import httpx
import orjson
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from pydantic import HttpUrl, SecretStr
from rich.console import Console
from rich.table import Table

from projections.audit_chain import verify
from projections.reconciliation import Reconciliation, reconcile_and_record
from runtime.private_files import write_private
from runtime.settings import ServiceTokenSpec, Settings
from services.bootstrap import Services, open_services

USDC = 1_000_000
DEMO_ADMINS = (2, 3)
"""The devchain demo wallets the demo's service names as admins (0 treasury, 1 custodian)."""

PROMPTS = (
    "Demo: long only bitcoin momentum over 3 bars, aggressive",
    "Demo: bitcoin momentum over 3 bars",
    "Demo: short only bitcoin change over 3 bars, aggressive",
    "Demo: short only bitcoin change over 3 bars",
)
"""What the demo creators ask the offline provider for. On the replayed bitcoin path the
first two go long (half and a quarter of equity), the last two short: whichever way the
market moves during the auditions, two clones of different sizes profit, pass, and race."""
RETRY_ROUNDS = 3
"""Free retries of failed auditions, at most, while fewer than two clones have passed."""
SPECTATOR_DEPOSITS = (40 * USDC, 25 * USDC, 60 * USDC)


class DemoChain(Protocol):
    """What the story needs of the devchain (`scripts.devchain.DevChain`)."""

    url: str
    chain_id: int
    usdc_address: str

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str: ...
    def stop(self) -> None: ...
    def demo_wallet(self, index: int) -> LocalAccount: ...
    def fund(self, address: str, usdc_minor: int, eth_wei: int = 10**18) -> None: ...
    def transfer_usdc(self, sender: LocalAccount, to: str, amount_minor: int) -> str: ...
    def mine(self, blocks: int = 1) -> int: ...
    def usdc_balance(self, address: str) -> int: ...
    def settings_env(self) -> dict[str, str]: ...


class DemoFailedError(Exception):
    """A step of the story did not end as it should; the message says which and why."""


# --- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """The machine clients the story acts as: the arena's admission sync and custody."""

    arena_sync: str
    custody: str

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(arena_sync=secrets.token_urlsafe(24), custody=secrets.token_urlsafe(24))

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        def secret(scope: str) -> str:
            for spec in settings.service_tokens:
                if scope in spec.scopes:
                    return spec.secrets[0].get_secret_value()
            raise DemoFailedError(f"the service has no token with the scope {scope!r}")

        return cls(arena_sync=secret("arena:sync"), custody=secret("payout:execute"))

    def tokens(self) -> list[ServiceTokenSpec]:
        return [
            ServiceTokenSpec(
                name="demo-arena-sync", scopes=["arena:sync"], secrets=[SecretStr(self.arena_sync)]
            ),
            ServiceTokenSpec(
                name="demo-custody", scopes=["payout:execute"], secrets=[SecretStr(self.custody)]
            ),
        ]


SHORT_DURATIONS: dict[str, Any] = {
    # Auditions of a few seconds, judged every second; any profit passes.
    "audition_duration": 12,
    "audition_profit_target": Decimal("0.000001"),
    "audition_min_trades": 1,
    "audition_min_active_days": 1,
    "audition_free_retries": RETRY_ROUNDS,
    "audition_evaluate_interval": 1.0,
    # The engine and the replayed market: a round and a mark every second.
    "engine_cadence_interval": 1.0,
    "ingest_mode": "replay",
    "ingest_hyperliquid_interval": 1.0,
    "ingest_channels_interval": 2.0,
    "prop_mark_interval": 1.0,
    "backtest_poll_interval": 0.5,
    # The chain: one confirmation, polled every second.
    "min_confirmations": 1,
    "deposit_poll_interval": 1.0,
    # Races of seconds; payouts always need two admins.
    "race_calendar_interval": 1.0,
    "race_objection_seconds": 2,
    "payout_dual_approval_minor": 0,
    "reconciliation_interval": 5.0,
    "digest_interval": 5.0,
    # Many demo wallets sign in from one address.
    "auth_rate_limit": "1000/minute",
    "rate_limit_storage": "memory",
}


def demo_settings(
    chain: DemoChain, data_dir: Path, credentials: Credentials, database_url: str | None
) -> Settings:
    """The service's settings for a demo: the devchain, demo admins and tokens, seconds."""
    env = chain.settings_env()
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        evm_rpc_url=HttpUrl(env["PUMPPARTY_EVM_RPC_URL"]),
        chain_id=int(env["PUMPPARTY_CHAIN_ID"]),
        usdc_contract=env["PUMPPARTY_USDC_CONTRACT"],
        treasury_address=env["PUMPPARTY_TREASURY_ADDRESS"],
        admin_addresses=[chain.demo_wallet(i).address for i in DEMO_ADMINS],
        service_tokens=credentials.tokens(),
        **SHORT_DURATIONS,
    )


# --- the platform ------------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Platform:
    """A running service (and the devchain it pays on) the story talks to."""

    url: str
    chain: DemoChain
    credentials: Credentials
    settings: Settings
    services: Services


class ServiceThread:
    """`pumpparty serve` in this process: the API on a loopback port, the worker beside it."""

    def __init__(self, services: Services, host: str = "127.0.0.1") -> None:
        import uvicorn

        from api.app import create_app
        from scripts.worker import Worker

        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        app = create_app(services.settings, services=services)
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.worker = Worker(services, idle_wait=0.2)
        self.thread = threading.Thread(target=self.server.run, name="demo-api", daemon=True)

    def start(self) -> None:
        self.worker.start()
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise DemoFailedError("the demo service did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.worker.stop()


@contextlib.contextmanager
def started_platform(
    *,
    data_dir: Path | None = None,
    database_url: str | None = None,
    chain: DemoChain | None = None,
) -> Iterator[Platform]:
    """The devchain (unless `chain`, not yet started) and the service on a fresh data
    directory (a temporary one unless `data_dir`), on the embedded PostgreSQL unless
    `database_url`; stopped on exit."""
    if chain is None:
        from scripts.devchain import DevChain

        chain = DevChain()
    chain.start()
    try:
        with contextlib.ExitStack() as stack:
            if data_dir is None:
                data_dir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="pumpparty-demo-"))
                )
            credentials = Credentials.fresh()
            settings = demo_settings(chain, data_dir, credentials, database_url)
            services = open_services(settings, run_migrations=True)
            stack.callback(services.close)
            service = ServiceThread(services)
            service.start()
            stack.callback(service.stop)
            yield Platform(service.url, chain, credentials, settings, services)
    finally:
        chain.stop()


def remote_devchain(url: str, chain_id: int) -> DemoChain:
    """The devchain another process serves (`pumpparty demo --serve`), reached over its
    JSON-RPC: the devchain's own signed transactions (the demo wallets' and its
    deployer's keys come from its public demo mnemonic), sent over HTTP."""
    from scripts.devchain.chain import USDC_ADDRESS, DevChain

    class RemoteDevChain(DevChain):
        def __init__(self) -> None:  # no node of its own: the chain is at `url`
            self.url = url
            self.chain_id = chain_id
            self.usdc_address = USDC_ADDRESS
            self.block_interval = None
            self.http = httpx.Client(timeout=30)
            self.sending = threading.Lock()

        def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
            return self.url

        def stop(self) -> None:
            self.http.close()

        def rpc(self, method: str, params: list[Any]) -> Any:
            call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            answer = self.http.post(self.url, json=call).json()
            if "error" in answer:
                raise DemoFailedError(f"the devchain refused {method}: {answer['error']}")
            return answer["result"]

        def _send(
            self, sender: LocalAccount, to: str, data: bytes, gas: int, *, value: int = 0
        ) -> str:
            with self.sending:  # one nonce per transaction of ours
                raw = self._signed(sender, to, data, gas, value=value)
                return str(self.rpc("eth_sendRawTransaction", ["0x" + raw.hex()]))

    return RemoteDevChain()


# --- a client ----------------------------------------------------------------------------


def sign(wallet: LocalAccount, message: str) -> str:
    signature = wallet.sign_message(encode_defunct(text=message)).signature.hex()
    return signature if signature.startswith("0x") else "0x" + signature


@dataclass
class Person:
    """A demo wallet signed in with SIWE: its user id and bearer token."""

    role: str
    wallet: LocalAccount
    user_id: str
    token: str

    @property
    def address(self) -> str:
        return str(self.wallet.address)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """The service over HTTP, as any client reaches it; a refusal is a `DemoFailedError`."""

    def __init__(self, url: str, run: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.run = run

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        expect: tuple[int, ...] = (200, 201, 202),
        json: Any = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
    ) -> Any:
        sent = dict(headers or {})
        if key is not None:
            sent["Idempotency-Key"] = f"demo-{self.run}-{key}"
        response = self.http.request(method, path, json=json, headers=sent)
        if response.status_code not in expect:
            raise DemoFailedError(f"{method} {path}: {response.status_code} {response.text[:400]}")
        return response.json()

    def sign_in(self, role: str, wallet: LocalAccount) -> Person:
        nonce = self.call("POST", "/v1/auth/nonce", json={"address": wallet.address})
        message = nonce["message"]
        body = self.call(
            "POST", "/v1/auth/verify", json={"message": message, "signature": sign(wallet, message)}
        )
        return Person(role, wallet, body["user"]["id"], body["access_token"])


def wait_for(
    what: str, probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 90
) -> Any:
    """Ask `probe` until `done` says yes (the worker moves things on its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise DemoFailedError(f"gave up waiting for {what}: last seen {str(value)[:400]}")
        time.sleep(0.25)


# --- the story ---------------------------------------------------------------------------


@dataclass
class Creator:
    person: Person
    prompt: str
    clone_id: str = ""
    version_id: str = ""
    audition_id: str = ""
    status: str = ""
    total_return: str = ""
    backtest: str = ""


@dataclass
class Outcome:
    """What the story ended with: what the test checks and the tables show."""

    run: str
    creators: list[Creator] = field(default_factory=list)
    race: dict[str, Any] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    winner: str = ""
    withdrawn_minor: int = 0
    chain_before_minor: int = 0
    chain_after_minor: int = 0
    withdrawal: dict[str, Any] = field(default_factory=dict)
    audit: str = ""
    audit_ok: bool = False
    reconciliation: Reconciliation | None = None
    seconds: float = 0.0


class Story:
    """The chapters, each a small function over the API and the chain, told as it goes."""

    def __init__(self, platform: Platform, console: Console) -> None:
        self.platform = platform
        self.chain = platform.chain
        self.console = console
        self.outcome = Outcome(run=uuid4().hex[:8])
        self.api = Api(platform.url, self.outcome.run)
        self.started = time.monotonic()

    def wait(self, what: str, probe: Callable[[], Any], done: Callable[[Any], bool]) -> Any:
        """`wait_for`, with a spinner saying what for."""
        with self.console.status(f"waiting for {what}…"):
            return wait_for(what, probe, done)

    def say(self, text: str) -> None:
        seconds = time.monotonic() - self.started
        self.console.print(f"[dim]{seconds:6.1f}s[/dim]  {text}", highlight=False)

    def pay_treasury(self, person: Person, amount_minor: int) -> str:
        """Fund a demo wallet on the devchain and pay the treasury from it."""
        treasury = self.platform.settings.treasury_address
        self.chain.fund(person.address, amount_minor)
        return self.chain.transfer_usdc(person.wallet, treasury, amount_minor)

    # chapter 1
    def sign_in_admins(self) -> list[Person]:
        admins = [self.api.sign_in("admin", self.chain.demo_wallet(i)) for i in DEMO_ADMINS]
        self.say(f"two demo admins signed in with SIWE: {', '.join(a.address for a in admins)}")
        return admins

    # chapter 2
    def make_clone(self, creator: Creator, n: int) -> None:
        person = creator.person
        clone = self.api.call(
            "POST",
            "/v1/clones",
            json={"name": f"Demo clone {n} ({self.outcome.run})", "description": "demo data"},
            headers=person.headers,
            key=f"clone-{n}",
        )
        creator.clone_id = clone["clone_id"]
        self.api.call(
            "POST",
            f"/v1/clones/{creator.clone_id}/generate",
            json={"prompt": creator.prompt},
            headers=person.headers,
        )
        published = self.api.call(
            "POST", f"/v1/clones/{creator.clone_id}/versions", headers=person.headers
        )
        creator.version_id = published["version_id"]
        version = f"/v1/clones/{creator.clone_id}/versions/{creator.version_id}"
        dry = self.api.call("POST", f"{version}/dry-run", json={"bars": 24}, headers=person.headers)
        job = self.api.call("POST", f"{version}/backtests", json={}, headers=person.headers)
        done = self.wait(
            "the backtest",
            lambda: self.api.call(
                "GET", f"{version}/backtests/{job['job_id']}", headers=person.headers
            ),
            lambda body: body["state"] in ("succeeded", "failed", "dead"),
        )
        report = done.get("report") or {}
        creator.backtest = str(report.get("total_return", done["state"]))
        self.say(
            f"{person.role} generated [bold]Demo clone {n}[/bold] from “{creator.prompt}”,"
            f" published it, dry-ran {len(dry['decisions'])} bars on {dry['asset']} and"
            f" backtested it ({done['state']}, return {creator.backtest})"
        )

    # chapter 3
    def audition(self, creator: Creator) -> None:
        person = creator.person
        quote = self.api.call("POST", "/v1/economy/audition-quotes", headers=person.headers)
        tx = self.pay_treasury(person, int(quote["amount_minor"]))
        purchase = self.api.call(
            "POST",
            "/v1/economy/audition-purchases",
            json={"quote_id": quote["quote_id"], "tx_hash": tx},
            headers=person.headers,
            key=f"purchase-{creator.clone_id}",
        )
        self.wait(
            "the audition entitlement",
            lambda: self.api.call("GET", "/v1/entitlements", headers=person.headers)["items"],
            lambda items: any(e["status"] == "available" for e in items),
        )
        submitted = self.api.call(
            "POST",
            "/v1/auditions",
            json={"clone_id": creator.clone_id, "version_hash": creator.version_id},
            headers=person.headers,
            key=f"audition-{creator.clone_id}",
        )
        creator.audition_id = submitted["audition_id"]
        self.say(
            f"{person.role} paid the {quote['amount']} USDC audition fee on the devchain"
            f" ({purchase['status']}) and submitted the clone: due {submitted['due_at']}"
        )

    # chapter 4
    def judged(self, creator: Creator, attempt: int = 1) -> None:
        person = creator.person
        audition = self.wait(
            "the evaluator's verdict",
            lambda: self.api.call(
                "GET", f"/v1/auditions/{creator.audition_id}", headers=person.headers
            ),
            lambda body: (
                len(body["attempts"]) >= attempt and body["status"] in ("passed", "failed", "void")
            ),
        )
        judged = audition["attempts"][-1]
        metrics = judged.get("metrics") or {}
        creator.status = audition["status"]
        creator.total_return = str(metrics.get("total_return", ""))
        failed = ", ".join(judged.get("failed_rules") or []) or "none"
        self.say(
            f"the evaluator judged {person.role}'s audition (attempt {attempt}):"
            f" [bold]{creator.status}[/bold] ({metrics.get('trades', 0)} engine trades,"
            f" return {creator.total_return}, failed rules: {failed})"
        )

    def retry(self, creator: Creator, attempt: int) -> None:
        """A failed audition's free retry: a new prop account, traded and judged again."""
        self.api.call(
            "POST",
            f"/v1/auditions/{creator.audition_id}/retry",
            headers=creator.person.headers,
            key=f"retry-{creator.audition_id}-{attempt}",
        )
        self.say(f"{creator.person.role} retried the failed audition for free")

    def auditions_judged(self, creators: list[Creator]) -> list[Creator]:
        """Every audition judged; failed ones retried while fewer than two passed."""
        for creator in creators:
            self.judged(creator)
        for attempt in range(2, RETRY_ROUNDS + 2):
            failed = [c for c in creators if c.status == "failed"]
            if sum(c.status == "passed" for c in creators) >= 2 or not failed:
                break
            for creator in failed:
                self.retry(creator, attempt)
            for creator in failed:
                self.judged(creator, attempt)
        passers = [c for c in creators if c.status == "passed"]
        if len(passers) < 2:
            raise DemoFailedError(f"a race needs two passed clones; {len(passers)} passed")
        return passers

    # chapter 5
    def admit(self, passers: list[Creator], admin: Person) -> None:
        for creator in passers:
            profile = self.api.call(
                "PUT",
                f"/v1/clones/{creator.clone_id}/profile",
                json={"display_name": f"Demo {creator.person.role}", "bio": "demo data"},
                headers=creator.person.headers,
            )
            self.api.call(
                "POST",
                f"/v1/admin/moderation/profiles/{profile['profile_id']}/approve",
                json={"reason": "demo profile"},
                headers=admin.headers,
            )
        wanted = {c.clone_id for c in passers}
        sync = {"Authorization": f"Bearer {self.platform.credentials.arena_sync}"}

        def admitted() -> set[str]:
            self.api.call(
                "POST", "/v1/arena/admissions/sync", headers=sync, key=f"sync-{uuid4().hex[:6]}"
            )
            members = self.api.call("GET", "/v1/arena/members?limit=100")["items"]
            return {m["clone_id"] for m in members if m["status"] == "admitted"} & wanted

        self.wait("the admission round", admitted, lambda got: got == wanted)
        self.say(
            f"profiles approved; an admission round admitted {len(wanted)} clones to the demo arena"
        )

    # chapter 6
    def schedule_race(self, passers: list[Creator], admin: Person) -> str:
        now = datetime.now(UTC)
        race = self.api.call(
            "POST",
            "/v1/admin/races",
            json={
                "name": f"Demo sprint {self.outcome.run}",
                "sales_open_at": now.isoformat(),
                "starts_at": (now + timedelta(seconds=15)).isoformat(),
                "duration_seconds": 10,
                "clone_ids": [c.clone_id for c in passers],
                "reason": "demo race",
            },
            headers=admin.headers,
            key="race",
        )
        race_id: str = race["race_id"]
        self.race_status(race_id, ("open",))
        self.say(f"an admin scheduled [bold]Demo sprint {self.outcome.run}[/bold]: sales are open")
        return race_id

    def race_status(self, race_id: str, wanted: tuple[str, ...]) -> dict[str, Any]:
        body: dict[str, Any] = self.wait(
            f"the race to be {' or '.join(wanted)}",
            lambda: self.api.call("GET", f"/v1/races/{race_id}"),
            lambda race: race["status"] in wanted or race["status"] == "void",
        )
        if body["status"] not in wanted:
            raise DemoFailedError(f"the race was voided: {body.get('status_reason')}")
        return body

    # chapter 7
    def deposit(self, n: int, amount_minor: int) -> Person:
        """A demo spectator pays the treasury on the devchain and has it credited."""
        person = self.api.sign_in(f"spectator {n}", Account.create())
        tx = self.pay_treasury(person, amount_minor)
        deposit_id = self.api.call(
            "POST",
            "/v1/economy/deposits",
            json={"tx_hash": tx},
            headers=person.headers,
            key=f"deposit-{n}",
        )["deposit_id"]
        self.wait(
            "the deposit's confirmation",
            lambda: self.api.call(
                "GET", f"/v1/economy/deposits/{deposit_id}", headers=person.headers
            ),
            lambda body: body["status"] == "verified",
        )
        return person

    def spectators(self) -> list[Person]:
        """Their deposits are verified before any race is scheduled: the chain's pace never
        eats into a race's sales window."""
        people = [self.deposit(n, amount) for n, amount in enumerate(SPECTATOR_DEPOSITS, 1)]
        self.say(f"{len(people)} spectators deposited USDC on the devchain; each deposit verified")
        return people

    def buy_tickets(self, race_id: str, passers: list[Creator], people: list[Person]) -> None:
        for n, person in enumerate(people):
            # Each backs one entrant with 10 USDC and the next with 5.
            for pick, stake in ((n % len(passers), "10"), ((n + 1) % len(passers), "5")):
                self.api.call(
                    "POST",
                    f"/v1/races/{race_id}/tickets",
                    json={"clone_id": passers[pick].clone_id, "amount": stake},
                    headers=person.headers,
                    key=f"ticket-{n}-{pick}",
                )
        staked = len(people) * 15 * USDC
        self.wait(
            "the tickets in the pool",
            lambda: self.api.call("GET", f"/v1/races/{race_id}"),
            lambda race: int(race["pool_minor"]) >= staked,
        )
        self.say(f"spectators bought tickets: the pool holds {staked / USDC:.2f} USDC")

    # chapter 8
    def run_race(self, race_id: str) -> dict[str, Any]:
        self.race_status(race_id, ("running", "finished", "official", "settled"))
        self.say("sales closed; the race is running: the engine trades each entrant's account")
        self.race_status(race_id, ("finished", "official", "settled"))
        self.say("the race finished; the objection window runs")
        race = self.race_status(race_id, ("settled",))
        self.say("the result is official and the race settled")
        self.outcome.race = race
        return race

    # chapter 9
    def pay_out(self, race: dict[str, Any], admins: list[Person]) -> None:
        payout_id = race["settlement"]["payout_id"]
        path = f"/v1/admin/payouts/{payout_id}"
        payout = self.api.call("GET", path, headers=admins[0].headers)
        for admin in admins:
            self.api.call(
                "POST",
                f"{path}/approve",
                json={"digest": payout["table_digest"]},
                headers=admin.headers,
            )
        self.api.call(
            "POST", f"{path}/post", json={"reason": "demo payout"}, headers=admins[-1].headers
        )
        self.race_status(race["race_id"], ("paid",))
        self.say(
            f"two admins approved the payout table ({int(payout['total_minor']) / USDC:.2f} USDC)"
            " and it posted"
        )

    # chapter 10
    def withdraw(self, spectators: list[Person]) -> None:
        balances = {p.role: self.balance(p) for p in spectators}
        winner = next(
            (p for p in spectators if self.won(p)), max(spectators, key=lambda p: balances[p.role])
        )
        amount = balances[winner.role]
        self.outcome.winner = winner.role
        self.outcome.withdrawn_minor = amount
        self.outcome.chain_before_minor = self.chain.usdc_balance(winner.address)
        asked = self.api.call(
            "POST",
            "/v1/economy/withdrawals",
            json={"amount": str(Decimal(amount) / USDC)},
            headers=winner.headers,
            key="withdrawal",
        )
        custody = {"Authorization": f"Bearer {self.platform.credentials.custody}"}
        lease = self.wait(
            "a custody lease",
            lambda: self.api.call("POST", "/v1/custody/withdrawals/lease", headers=custody)[
                "lease"
            ],
            lambda leased: leased is not None and leased["withdrawal_id"] == asked["withdrawal_id"],
        )
        treasury = self.chain.demo_wallet(0)
        tx = self.chain.transfer_usdc(treasury, lease["wallet"], int(lease["amount_minor"]))
        self.api.call(
            "POST",
            f"/v1/custody/withdrawals/{asked['withdrawal_id']}/executed",
            json={"tx_hash": tx, "fencing_token": lease["fencing_token"]},
            headers=custody,
        )
        self.chain.mine(1)
        self.outcome.withdrawal = self.wait(
            "the withdrawal to post",
            lambda: self.api.call(
                "GET", f"/v1/economy/withdrawals/{asked['withdrawal_id']}", headers=winner.headers
            ),
            lambda body: body["status"] in ("posted", "authorized", "cancelled"),
        )
        self.outcome.chain_after_minor = self.chain.usdc_balance(winner.address)
        self.say(
            f"{winner.role} withdrew {amount / USDC:.2f} USDC: custody leased it, paid it from the"
            f" treasury on the devchain, and the ledger posted it ({self.outcome.withdrawal['status']})"
        )
        self.outcome.balances = {p.role: self.balance(p) for p in spectators}

    def balance(self, person: Person) -> int:
        body = self.api.call("GET", "/v1/ledger/accounts/me", headers=person.headers)
        return int(body["available_minor"])

    def won(self, person: Person) -> bool:
        tickets = self.api.call("GET", "/v1/tickets", headers=person.headers)["items"]
        return any(t.get("outcome") == "won" for t in tickets)

    def tell(self) -> Outcome:
        admins = self.sign_in_admins()
        creators = [
            Creator(self.api.sign_in(f"creator {n}", Account.create()), prompt)
            for n, prompt in enumerate(PROMPTS, start=1)
        ]
        self.say(f"{len(creators)} demo creators signed in with SIWE (fresh demo wallets)")
        for n, creator in enumerate(creators, start=1):
            self.make_clone(creator, n)
        for creator in creators:
            self.audition(creator)
        self.say("the engine trades the auditions on replayed market data…")
        self.outcome.creators = creators
        passers = self.auditions_judged(creators)
        self.admit(passers, admins[0])
        spectators = self.spectators()
        race_id = self.schedule_race(passers, admins[0])
        self.buy_tickets(race_id, passers, spectators)
        race = self.run_race(race_id)
        self.pay_out(race, admins)
        self.withdraw(spectators)
        return self.outcome


# --- the ending ----------------------------------------------------------------------------


def final_checks(outcome: Outcome, services: Services, console: Console) -> None:
    """`pumpparty audit verify` and the reconciliation monitors, as the operator runs them."""
    result = verify(services.url)
    outcome.audit_ok = result.ok
    outcome.audit = (
        f"ok: {result.checked} events, head {result.head}"
        if result.ok
        else f"FAILED at {result.first_bad_position}: {result.problem}"
    )
    outcome.reconciliation = reconcile_and_record(
        services.projections.datastore, services.settings.admin_addresses
    )
    checked = outcome.reconciliation
    console.print(f"$ pumpparty audit verify\n{outcome.audit}", highlight=False)
    console.print(
        "$ pumpparty ledger check\n"
        + (
            "ok: every monitor agrees"
            if checked.ok
            else f"FAILED: {len(checked.breaches)} breach(es),"
            f" trial balance {checked.trial_balance_minor}"
        ),
        highlight=False,
    )


def tables(outcome: Outcome, console: Console) -> None:
    clones = Table("creator", "backtest return", "audition", "audition return", title="Auditions")
    for c in outcome.creators:
        clones.add_row(c.person.role, c.backtest, c.status, c.total_return)
    console.print(clones)
    race = outcome.race
    names = {c.clone_id: c.person.role for c in outcome.creators}
    result = Table("place", "clone of", "final equity (USD)", "pool (USDC)", title=race.get("name"))
    for e in sorted(race.get("entrants", []), key=lambda e: e.get("place") or 99):
        equity = e.get("final_equity_minor")
        result.add_row(
            str(e.get("place")),
            names.get(e["clone_id"], e["clone_id"]),
            f"{int(equity) / USDC:,.2f}" if equity else "-",
            f"{int(e['pool_minor']) / USDC:.2f}",
        )
    console.print(result)
    money = Table("spectator", "ledger balance (USDC)", title="Balances")
    for role, minor in outcome.balances.items():
        money.add_row(role, f"{minor / USDC:.2f}")
    money.add_row(
        f"{outcome.winner} on the devchain",
        f"{outcome.chain_before_minor / USDC:.2f} -> {outcome.chain_after_minor / USDC:.2f}",
    )
    console.print(money)


def tell_story(platform: Platform, console: Console) -> Outcome:
    """The whole story against `platform`, then the tables and the final checks."""
    story = Story(platform, console)
    try:
        outcome = story.tell()
    finally:
        story.api.close()
    tables(outcome, console)
    final_checks(outcome, platform.services, console)
    outcome.seconds = time.monotonic() - story.started
    console.print(f"the whole story took {outcome.seconds:.0f}s", highlight=False)
    return outcome


def succeeded(outcome: Outcome) -> bool:
    reconciled = outcome.reconciliation is not None and outcome.reconciliation.ok
    arrived = outcome.chain_after_minor - outcome.chain_before_minor == outcome.withdrawn_minor
    return (
        outcome.audit_ok and reconciled and arrived and outcome.withdrawal.get("status") == "posted"
    )


# --- the command -----------------------------------------------------------------------------


def finish(outcome: Outcome, started: float, console: Console) -> bool:
    ok = succeeded(outcome)
    console.print(
        f"{'[green]all checks ok[/green]' if ok else '[red]a final check failed[/red]'}:"
        f" {time.monotonic() - started:.0f}s in all",
        highlight=False,
    )
    return ok


def run_demo(*, data_dir: Path | None, database_url: str | None, console: Console) -> bool:
    """`pumpparty demo`: start the devchain and a demo service, tell the story, check."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        with console.status("starting the devchain and a demo service on a fresh data directory…"):
            platform = stack.enter_context(
                started_platform(data_dir=data_dir, database_url=database_url)
            )
        console.print(
            f"devchain at {platform.chain.url}, demo service at {platform.url}"
            f" (ready in {time.monotonic() - started:.0f}s)",
            highlight=False,
        )
        try:
            outcome = tell_story(platform, console)
        except DemoFailedError as failure:
            console.print(f"[red]the demo stopped:[/red] {failure}", highlight=False)
            return False
    return finish(outcome, started, console)


def client_environment(platform: Platform) -> dict[str, str]:
    """What `pumpparty demo --url` needs to be given: the served platform's settings."""
    settings = platform.settings
    tokens = [spec.model_dump(mode="json") for spec in settings.service_tokens]
    for spec, token in zip(tokens, settings.service_tokens, strict=True):
        spec["secrets"] = [secret.get_secret_value() for secret in token.secrets]
    env = {
        **platform.chain.settings_env(),
        "PUMPPARTY_DATA_DIR": str(settings.data_dir),
        "PUMPPARTY_ADMIN_ADDRESSES": ",".join(settings.admin_addresses),
        "PUMPPARTY_SERVICE_TOKENS": orjson.dumps(tokens).decode(),
    }
    if settings.database_url:
        env["PUMPPARTY_DATABASE_URL"] = settings.database_url
    return env


CLIENT_ENVIRONMENT = "demo-client.env"
"""Where `pumpparty demo --serve` leaves the environment `pumpparty demo --url` needs, in
its data directory."""


def write_client_environment(platform: Platform) -> Path:
    """`client_environment` as shell `export` lines, in a file only this user may read: it
    holds the service tokens' secrets, which are never printed."""
    path = platform.settings.data_dir / CLIENT_ENVIRONMENT
    lines = (
        f"export {name}={shlex.quote(value)}\n"
        for name, value in client_environment(platform).items()
    )
    write_private(path, "".join(lines).encode())
    return path


def serve_demo(
    *, data_dir: Path | None, database_url: str | None, console: Console, stop: threading.Event
) -> None:
    """`pumpparty demo --serve`: the devchain and the demo service until `stop` is set."""
    with started_platform(data_dir=data_dir, database_url=database_url) as platform:
        environment = write_client_environment(platform)
        console.print(
            f"demo service at {platform.url}, devchain at {platform.chain.url}. Tell the story"
            " against it from another shell, with the environment it needs (its service"
            " tokens' secrets among it, so the file is yours alone to read):",
            highlight=False,
        )
        console.print(f". {shlex.quote(str(environment))}", highlight=False, soft_wrap=True)
        console.print(f"pumpparty demo --url {platform.url}", highlight=False)
        stop.wait()


def story_against(url: str, settings: Settings, console: Console) -> Outcome:
    """The story against a running demo service, whose settings this process was given
    (admins, tokens, chain, database: what `client_environment` prints)."""
    chain = remote_devchain(str(settings.evm_rpc_url).rstrip("/"), settings.chain_id)
    try:
        admins = {a.lower() for a in settings.admin_addresses}
        if any(chain.demo_wallet(i).address.lower() not in admins for i in DEMO_ADMINS):
            raise DemoFailedError(
                "PUMPPARTY_ADMIN_ADDRESSES must name the demo admins (devchain demo wallets"
                f" {', '.join(map(str, DEMO_ADMINS))}): start the service with `pumpparty demo"
                " --serve` and use the environment it writes"
            )
        credentials = Credentials.from_settings(settings)
        services = open_services(settings, run_migrations=False)
        try:
            platform = Platform(url.rstrip("/"), chain, credentials, settings, services)
            return tell_story(platform, console)
        finally:
            services.close()
    finally:
        chain.stop()


def run_demo_against(url: str, settings: Settings, console: Console) -> bool:
    """`pumpparty demo --url`: the story against a `pumpparty demo --serve`."""
    started = time.monotonic()
    try:
        outcome = story_against(url, settings, console)
    except DemoFailedError as failure:
        console.print(f"[red]the demo stopped:[/red] {failure}", highlight=False)
        return False
    return finish(outcome, started, console)
