"""The one settings object, read once from `PUMPPARTY_*` environment variables."""

from __future__ import annotations

import ipaddress
import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

ENV_PREFIX = "PUMPPARTY_"


class ServiceTokenSpec(BaseModel):
    """A machine client: its name, its scopes, and one or two secrets (two allow rotation)."""

    name: str = Field(min_length=1)
    scopes: list[str]
    secrets: list[SecretStr] = Field(min_length=1, max_length=2)


class ModelProviderSpec(BaseModel):
    """An OpenAI-compatible model provider (issue 19): its name in routes, where it is, the
    model asked for, the key (never logged), and which token-limit parameter it takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    kind: Literal["openai", "anthropic"] = "openai"
    """`openai`: Chat Completions (OpenAI, vLLM, Ollama); `anthropic`: the Messages API."""
    base_url: HttpUrl
    model: str = Field(min_length=1, max_length=128)
    api_key: SecretStr | None = None
    token_parameter: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    timeout: float | None = Field(default=None, gt=0, le=600)

    @field_validator("name")
    @classmethod
    def not_offline(cls, name: str) -> str:
        if name == "offline":
            raise ValueError("'offline' is the built-in offline provider's name")
        return name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: str | None = None
    # The log's two roles (issue 15): `database_url` is the owner's (`pumpparty migrate`),
    # `service_database_url` the role the service runs as. Unset, it is derived from the
    # owner's URL: role `pumpparty_service` on the same server, created by migrate.
    service_database_url: str | None = None
    # The key snapshots are sealed with (HMAC-SHA256); the database never sees it. Unset, a
    # random one is kept in the data dir. Every process of one deployment needs the same.
    snapshot_key: SecretStr | None = Field(default=None, min_length=32)
    data_dir: Path = Path(".data")
    database_pool_size: int = Field(default=8, ge=1, le=100)

    jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    jwt_previous_secrets: list[SecretStr] = []
    jwt_issuer: str = "pumpparty-ledger"
    jwt_audience: str = "pumpparty-api"
    access_token_ttl: int = Field(default=15 * 60, gt=0)
    refresh_token_ttl: int = Field(default=30 * 24 * 3600, gt=0)
    session_lifetime: int = Field(default=90 * 24 * 3600, gt=0)
    nonce_ttl: int = Field(default=10 * 60, gt=0)
    auth_rate_limit: str = "30/minute"
    # Where the sign-in limits count: `database` (one budget for every API process, kept
    # in PostgreSQL) or `memory` (this process's own: only for a single API process).
    rate_limit_storage: Literal["database", "memory"] = "database"
    # Load balancers and reverse proxies whose X-Forwarded-For is believed: addresses or
    # networks, comma-separated. Only a request whose peer is one of them is taken to come
    # from the rightmost forwarded address that is not one of them; otherwise the header is
    # ignored. Empty: the peer is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    siwe_domain: str = "localhost:8000"
    siwe_uri: str = "http://localhost:8000/login"
    chain_id: int = Field(default=8453, gt=0)
    admin_addresses: Annotated[list[str], NoDecode] = []
    service_tokens: list[ServiceTokenSpec] = []

    evm_rpc_url: HttpUrl = HttpUrl("http://127.0.0.1:8545")
    treasury_address: str = "0x000000000000000000000000000000000000dEaD"
    usdc_contract: str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    min_confirmations: int = Field(default=12, ge=0)
    audition_fee: Decimal = Field(default=Decimal("25"), gt=0, decimal_places=6)
    # Economy: quotes, deposit verification, reconciliation.
    quote_ttl: int = Field(default=30 * 60, gt=0)
    deposit_pending_timeout: int = Field(default=60 * 60, gt=0)
    deposit_poll_interval: float = Field(default=15.0, gt=0)
    # A user's purchases waiting for the chain at once; one more is a 409.
    max_pending_purchases: int = Field(default=5, ge=1, le=1000)
    evm_rpc_timeout: float = Field(default=5.0, gt=0)
    evm_rpc_attempts: int = Field(default=3, ge=1, le=10)
    evm_rpc_backoff: float = Field(default=0.2, ge=0)
    reconciliation_interval: float = Field(default=60.0, gt=0)
    # Seconds after which the last completed reconciliation is `stale` in health (unset:
    # three reconciliation intervals).
    reconciliation_stale_after: float | None = Field(default=None, gt=0)

    hyperliquid_url: HttpUrl = HttpUrl("https://api.hyperliquid.xyz")
    polymarket_url: HttpUrl = HttpUrl("https://gamma-api.polymarket.com")
    defillama_url: HttpUrl = HttpUrl("https://coins.llama.fi")
    ingest_mode: Literal["live", "replay", "off"] = "replay"
    # Ingestion (issue 8): second hosts, what to follow, cadences (seconds), client behaviour,
    # retention of raw ticks. Lists are JSON, e.g. PUMPPARTY_INGEST_HYPERLIQUID_COINS='["BTC"]'.
    polymarket_clob_url: HttpUrl = HttpUrl("https://clob.polymarket.com")
    defillama_api_url: HttpUrl = HttpUrl("https://api.llama.fi")
    ingest_replay_dir: Path | None = None
    ingest_hyperliquid_coins: list[str] = ["BTC", "ETH", "SOL"]
    ingest_candle_interval: Literal["1m", "5m", "15m", "1h"] = "5m"
    ingest_lookback: float = Field(default=6 * 3600.0, gt=0)
    ingest_polymarket_slugs: list[str] = ["btc-100k", "eth-5k"]
    ingest_defillama_coins: list[str] = [
        "coingecko:bitcoin",
        "coingecko:ethereum",
        "coingecko:solana",
        "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    ]
    ingest_defillama_protocols: list[str] = ["aave", "lido"]
    ingest_hyperliquid_interval: float = Field(default=60.0, gt=0)
    ingest_polymarket_interval: float = Field(default=60.0, gt=0)
    ingest_defillama_interval: float = Field(default=300.0, gt=0)
    ingest_channels_interval: float = Field(default=60.0, gt=0)
    ingest_retention_interval: float = Field(default=3600.0, gt=0)
    ingest_tick_retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    ingest_timeout: float = Field(default=10.0, gt=0)
    ingest_attempts: int = Field(default=4, ge=1, le=10)
    ingest_backoff: float = Field(default=0.5, ge=0)
    ingest_backoff_max: float = Field(default=30.0, ge=0)
    ingest_retry_after_max: float = Field(default=60.0, ge=0)

    read_wait_timeout: float = Field(default=2.0, ge=0, le=30)
    # Hardening (issue 15): reads waiting for a position at once per process (more: 503),
    # and the largest request body, in bytes, in general and for a strategy-graph draft.
    read_wait_limit: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_draft_body_bytes: int = Field(default=512 * 1024, ge=1024)
    access_log: bool = False
    digest_interval: float = Field(default=60.0, gt=0)
    command_retries: int = Field(default=5, ge=0, le=50)
    heartbeat_interval: float = Field(default=5.0, gt=0)

    # Backups (issue 20): where dumps go (unset: `<data_dir>/backups`), how often the worker
    # takes and verifies one (seconds) and how many verified ones it keeps there; the folder
    # of PostgreSQL's tools (pg_dump, pg_restore; unset: the embedded wheel's, fine for any
    # server up to its version); and the role dumps run as, which must read every table and
    # sequence (e.g. a member of pg_read_all_data; unset: the owner's URL when this process
    # has it, else the service's, which cannot read the sequences).
    backup_dir: Path | None = None
    backup_interval: float = Field(default=24 * 3600.0, gt=0)
    backup_keep: int = Field(default=7, ge=1, le=1000)
    pg_bin: Path | None = None
    backup_database_url: str | None = None

    # Clones (issue 4): active clones per user, reports that hide a profile for review, and
    # the strategy-graph guardrails. Lists are JSON, e.g. PUMPPARTY_CLONE_ASSETS='["BTC"]'.
    clone_active_limit: int = Field(default=5, ge=1, le=1000)
    clone_report_threshold: int = Field(default=3, ge=1, le=1000)
    # Only reports from reporters in good standing count towards that threshold: moderators,
    # admins, and wallets that first signed in at least this many seconds before reporting.
    clone_report_min_account_age: int = Field(default=7 * 24 * 3600, ge=0)
    clone_graph_max_nodes: int = Field(default=64, ge=2, le=1000)
    clone_graph_max_edges: int = Field(default=128, ge=1, le=5000)
    clone_graph_max_depth: int = Field(default=16, ge=2, le=1000)
    clone_assets: list[str] = Field(default=["BTC", "ETH", "SOL"], min_length=1)
    # The feature channels data-source nodes may name (ingestion's default catalog).
    clone_channels: list[str] = Field(
        default=[
            *(
                f"hyperliquid.{coin}.{feature}"
                for coin in ("BTC", "ETH", "SOL")
                for feature in (
                    "return_1h",
                    "return_4h",
                    "volatility_1h",
                    "volatility_4h",
                    "funding_rate",
                )
            ),
            *(f"defillama.{p}.tvl_change_{w}" for p in ("aave", "lido") for w in ("1d", "7d")),
            *(f"polymarket.{slug}.probability" for slug in ("btc-100k", "eth-5k")),
        ],
        min_length=1,
    )

    # Prop trading: how old a mark may be for an action to fill (seconds), and the cadence
    # (seconds) of the mark-to-market job. The equity curve is a read model: no job of its own.
    prop_max_mark_age: float = Field(default=60.0, gt=0, le=86400)
    prop_mark_interval: float = Field(default=60.0, gt=0)

    # Auditions: the terms each audition pins when submitted (duration in seconds; starting
    # equity in USD; the profit target as a fraction of the starting equity; fills and UTC
    # days with a fill; the loss limits are the `audition` prop rule set's own, never here),
    # the retry policy (free retries, each within `audition_retry_window` seconds of the
    # failure; past that a retry takes a new entitlement), the evaluator's cadence and how
    # far ahead "due soon" looks (seconds).
    audition_duration: int = Field(default=14 * 24 * 3600, gt=0, le=366 * 24 * 3600)
    audition_starting_equity: Decimal = Field(
        default=Decimal("10000"), gt=0, le=Decimal("1e12"), decimal_places=8
    )
    audition_profit_target: Decimal = Field(default=Decimal("0.08"), gt=0, le=100)
    audition_min_trades: int = Field(default=10, ge=0, le=1_000_000)
    audition_min_active_days: int = Field(default=4, ge=0, le=366)
    audition_free_retries: int = Field(default=1, ge=0, le=100)
    audition_retry_window: int = Field(default=7 * 24 * 3600, ge=0)
    audition_evaluate_interval: float = Field(default=60.0, gt=0)
    audition_due_soon: int = Field(default=24 * 3600, gt=0)

    # Arena: seats until an admin sets a capacity (an event), the admission job's cadence
    # (seconds) and the most clones one admission round admits.
    arena_capacity: int = Field(default=64, ge=0, le=10_000)
    arena_admission_interval: float = Field(default=300.0, gt=0)
    arena_admission_batch: int = Field(default=16, ge=1, le=10_000)

    # Races: the defaults a scheduled race pins (seconds of ticket sales before the start,
    # race duration, the objection window after the finish), each entrant's starting equity
    # in USD, the win pool's terms in micro-USDC (takeout in basis points; the break unit
    # prices are rounded down to, 10,000 = 1 cent; the minimum price per 1 USDC staked;
    # the stake limits, in whole cents), and the calendar job's cadence (seconds).
    race_entrants: int = Field(default=3, ge=2, le=100)
    race_sales_seconds: int = Field(default=3600, gt=0)
    race_duration_seconds: int = Field(default=3600, gt=0, le=366 * 24 * 3600)
    race_objection_seconds: int = Field(default=600, ge=0)
    race_starting_equity: Decimal = Field(
        default=Decimal("10000"), gt=0, le=Decimal("1e12"), decimal_places=8
    )
    race_takeout_bps: int = Field(default=1500, ge=0, le=10_000)
    race_break_unit_minor: int = Field(default=10_000, gt=0, le=1_000_000)
    race_min_price_minor: int = Field(default=1_050_000, ge=1_000_000)
    race_min_stake_minor: int = Field(default=1_000_000, ge=10_000)
    race_max_stake_minor: int = Field(default=10_000_000_000, ge=10_000)
    race_calendar_interval: float = Field(default=30.0, gt=0)

    # Payouts: from this total (micro-USDC) two distinct admins must approve, else one; an
    # approval stands this many seconds (then it lapses: it never moves money by itself).
    payout_dual_approval_minor: int = Field(default=1_000_000_000, ge=0)
    payout_approval_ttl: int = Field(default=24 * 3600, gt=0)

    # The job queue (issue 19) every background job that can fail goes through: seconds a
    # lease lasts without a heartbeat, attempts before a job is dead, and the retry backoff's
    # base and cap (seconds; doubled per attempt, with jitter). The same attempts and backoff
    # apply to a scheduled job's failing rounds and to one payment's failing check before
    # they become dead letters (services/dead_letters.py). Then the engine's executor:
    # how often the worker looks for backtest jobs (seconds), and the most bars a backtest
    # and a dry run may ask for.
    job_lease_seconds: float = Field(default=60.0, gt=0, le=24 * 3600)
    job_max_attempts: int = Field(default=5, ge=1, le=100)
    job_backoff_base: float = Field(default=5.0, gt=0, le=3600)
    job_backoff_max: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    backtest_poll_interval: float = Field(default=5.0, gt=0)
    backtest_max_bars: int = Field(default=20_000, ge=10, le=1_000_000)
    dry_run_max_bars: int = Field(default=500, ge=1, le=10_000)

    # The engine's cadence driver (issue 19, services/cadence.py): seconds between rounds,
    # and how many accounts one round trades. A graph without a cadence decides on the bars
    # ingestion stores (`ingest_candle_interval`), traded, dry-run and backtested alike.
    engine_cadence_interval: float = Field(default=60.0, gt=0)
    engine_max_accounts: int = Field(default=500, ge=1, le=100_000)

    # The engine (issue 19): model providers and routing, generation's limits. Providers are
    # a JSON list of `ModelProviderSpec` (`offline`, the deterministic built-in, is always
    # there); routes map a purpose (`strategy-graph`, `strategy-graph-repair`) to an ordered
    # fallback list of provider names, else `model_default_route`. Cooldowns and waits are
    # seconds; the budget is prompt + completion tokens per user per UTC day.
    model_providers: list[ModelProviderSpec] = []
    model_routes: dict[str, list[str]] = {}
    model_default_route: list[str] = Field(default=["offline"], min_length=1)
    model_timeout: float = Field(default=60.0, gt=0, le=600)
    model_cooldown: float = Field(default=30.0, ge=0)
    model_auth_cooldown: float = Field(default=300.0, ge=0)
    model_retry_after_max: float = Field(default=2.0, ge=0, le=60)
    model_max_output_bytes: int = Field(default=64 * 1024, ge=1024, le=4 * 1024 * 1024)
    generation_max_tokens: int = Field(default=4096, ge=256, le=65536)
    generation_daily_token_budget: int = Field(default=200_000, ge=0)

    @model_validator(mode="after")
    def routes_name_known_providers(self) -> Settings:
        known = {"offline", *(spec.name for spec in self.model_providers)}
        if len(known) != len(self.model_providers) + 1:
            raise ValueError("model provider names must be distinct")
        for names in (self.model_default_route, *self.model_routes.values()):
            unknown = [name for name in names if name not in known]
            if unknown:
                raise ValueError(f"no model provider named {unknown[0]!r}")
        return self

    # Withdrawals: below this amount (micro-USDC) a withdrawal is authorized at once, from
    # it an admin other than the requesting user approves it; custody's lease on one lasts
    # this many seconds (then another custodian may lease it, with a higher fencing token).
    withdrawal_auto_approve_minor: int = Field(default=1_000_000_000, ge=0)
    withdrawal_lease_seconds: int = Field(default=300, gt=0, le=7 * 24 * 3600)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def proxies_are_addresses(cls, value: list[str]) -> list[str]:
        """Each an IP address or network; never everyone (`*`, a /0), whose forwarded
        addresses would all be believed, the client's own leftmost one included."""
        proxies = []
        for entry in value:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
            if network.prefixlen == 0:
                raise ValueError(f"{entry!r} would trust every peer")
            single = network.prefixlen == network.max_prefixlen and "/" not in entry
            proxies.append(str(network.network_address) if single else str(network))
        return proxies

    @field_validator("admin_addresses", mode="before")
    @classmethod
    def split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class SettingsError(Exception):
    """A setting is unknown or invalid; the message names it in one line."""


def load_settings() -> Settings:
    """Read and validate every `PUMPPARTY_*` variable; an unknown name is refused too."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]}")
    try:
        return Settings()
    except PydanticSettingsError as error:
        # pydantic-settings names the field in its message: 'error parsing value for field "x"'.
        field = str(error).split('"')[1] if '"' in str(error) else "?"
        raise SettingsError(
            f"invalid setting {ENV_PREFIX}{field.upper()}: not valid JSON"
        ) from None
    except ValidationError as error:
        first = error.errors()[0]
        name = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else ENV_PREFIX
        raise SettingsError(f"invalid setting {name}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
