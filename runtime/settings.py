"""The one settings object, read once from `PUMPPARTY_*` environment variables."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

ENV_PREFIX = "PUMPPARTY_"


class ServiceTokenSpec(BaseModel):
    """A machine client: its name, its scopes, and one or two secrets (two allow rotation)."""

    name: str = Field(min_length=1)
    scopes: list[str]
    secrets: list[SecretStr] = Field(min_length=1, max_length=2)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: str | None = None
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
    siwe_domain: str = "localhost:8000"
    siwe_uri: str = "http://localhost:8000/login"
    chain_id: int = Field(default=8453, gt=0)
    admin_addresses: Annotated[list[str], NoDecode] = []
    service_tokens: list[ServiceTokenSpec] = []

    evm_rpc_url: HttpUrl = HttpUrl("http://127.0.0.1:8545")
    treasury_address: str = "0x000000000000000000000000000000000000dEaD"
    usdc_contract: str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    min_confirmations: int = Field(default=12, ge=0)
    audition_fee: Decimal = Field(default=Decimal("25"), gt=0)

    hyperliquid_url: HttpUrl = HttpUrl("https://api.hyperliquid.xyz")
    polymarket_url: HttpUrl = HttpUrl("https://gamma-api.polymarket.com")
    defillama_url: HttpUrl = HttpUrl("https://coins.llama.fi")
    ingest_mode: Literal["live", "replay", "off"] = "replay"

    read_wait_timeout: float = Field(default=2.0, ge=0, le=30)
    digest_interval: float = Field(default=60.0, gt=0)
    command_retries: int = Field(default=5, ge=0, le=50)
    heartbeat_interval: float = Field(default=5.0, gt=0)

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
