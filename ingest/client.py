"""What every market-data client shares: one pooled async httpx client per host, timeouts,
retries with jittered exponential backoff that honour 429 Retry-After, and strict parsing.

A request either returns a payload parsed into its pydantic model or raises `FetchError`
naming what went wrong (`kind`) and an excerpt of what came back; rounds record it as an
ingestion error. Timeouts, unreachable hosts, dropped connections, 429, 5xx and bodies that
are not JSON (a truncated transfer) are retried; other 4xx and wrong shapes are not, since
asking again would get the same answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from runtime.clock import Clock, system_clock
from runtime.settings import Settings

T = TypeVar("T")

USER_AGENT = "pumpparty-ledger/0.1 (market-data ingestion)"
"""Sent explicitly: Cloudflare once refused Polymarket calls with a default User-Agent."""

EXCERPT = 300

Sleep = Callable[[float], Awaitable[None]]


class FetchError(Exception):
    """A request that yielded no usable payload."""

    def __init__(self, kind: str, request: str, message: str, excerpt: str = "") -> None:
        super().__init__(f"{request}: {message}")
        self.kind = kind
        self.request = request
        self.message = message
        self.excerpt = excerpt


class RetryableFetchError(FetchError):
    """Worth asking again; `retry_after` is the server's own wait, when it gave one."""

    def __init__(
        self,
        kind: str,
        request: str,
        message: str,
        excerpt: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(kind, request, message, excerpt)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff: float = 0.5
    """The first backoff window; each retry doubles it (full jitter: a random wait in it)."""
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    """A longer Retry-After is not waited out in the round: the host is paused instead."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=settings.ingest_attempts,
            backoff=settings.ingest_backoff,
            backoff_max=settings.ingest_backoff_max,
            retry_after_max=settings.ingest_retry_after_max,
        )


class SourceClient:
    """One host: a shared `httpx.AsyncClient` plus the retry policy around every call."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        policy: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = system_clock,
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        self.timeout = timeout
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self._paused_until: datetime | None = None  # a rate-limited host is left alone till then
        self._backoff = wait_random_exponential(multiplier=policy.backoff, max=policy.backoff_max)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def get(
        self, path: str, adapter: TypeAdapter[T], *, params: list[tuple[str, str]] | None = None
    ) -> T:
        return await self._fetch(adapter, "GET", path, params=params)

    async def post(self, path: str, adapter: TypeAdapter[T], *, body: Any) -> T:
        return await self._fetch(adapter, "POST", path, json=body)

    async def _fetch(self, adapter: TypeAdapter[T], method: str, path: str, **request: Any) -> T:
        label = describe(method, path, request.get("json"))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableFetchError),
            sleep=self.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                data, excerpt = await self._payload(label, method, path, request)
                return parse(adapter, data, label, excerpt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _payload(
        self, label: str, method: str, path: str, request: dict[str, Any]
    ) -> tuple[Any, str]:
        """One attempt: the decoded JSON body and its excerpt, or a FetchError saying why not."""
        if self._paused_until is not None and self.clock() < self._paused_until:
            until = self._paused_until.isoformat()
            raise FetchError(
                "rate-limited", label, f"paused until {until}: the host asked us to wait"
            )
        try:
            response = await self.http.request(method, path, **request)
        except httpx.TimeoutException:
            raise RetryableFetchError("timeout", label, f"no answer in {self.timeout}s") from None
        except httpx.ConnectError as error:
            raise RetryableFetchError("unreachable", label, str(error) or "refused") from None
        except httpx.TransportError as error:
            raise RetryableFetchError(
                "transport", label, f"{type(error).__name__}: {error}"
            ) from None
        excerpt = response.text[:EXCERPT]
        if response.status_code == 429:
            self._rate_limited(label, response, excerpt)
        if response.status_code >= 500:
            raise RetryableFetchError("http", label, f"HTTP {response.status_code}", excerpt)
        if response.status_code >= 400:
            detail = error_message(response)
            raise FetchError("http", label, f"HTTP {response.status_code}: {detail}", excerpt)
        try:
            # Numbers become Decimal as written: DefiLlama sends prices as JSON numbers.
            return json.loads(response.content, parse_float=Decimal), excerpt
        except ValueError as error:
            raise RetryableFetchError("decode", label, f"not JSON: {error}", excerpt) from None

    def _rate_limited(self, label: str, response: httpx.Response, excerpt: str) -> NoReturn:
        now = self.clock()
        wait = retry_after(response.headers.get("Retry-After"), now)
        if wait is not None and wait > self.policy.retry_after_max:
            self._paused_until = now + timedelta(seconds=wait)
            raise FetchError("rate-limited", label, f"HTTP 429: retry after {wait:g}s", excerpt)
        raise RetryableFetchError("rate-limited", label, "HTTP 429", excerpt, retry_after=wait)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, RetryableFetchError) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))


def parse(adapter: TypeAdapter[T], data: Any, label: str, excerpt: str = "") -> T:
    """Validate `data`; a mismatch is a `shape` FetchError naming the first bad place."""
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the payload"
        message = f"unexpected shape at {where}: {first['msg']}"
        raise FetchError("shape", label, message, excerpt or repr(data)[:EXCERPT]) from None


def describe(method: str, path: str, body: Any) -> str:
    """`POST /info candleSnapshot BTC`: enough to tell requests apart in the error table."""
    if isinstance(body, dict) and "type" in body:
        coin = body.get("coin") or (body.get("req") or {}).get("coin")
        return " ".join(str(part) for part in (method, path, body["type"], coin) if part)
    return f"{method} {path}"


def retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds: either delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((moment - now).total_seconds(), 0.0)


def error_message(response: httpx.Response) -> str:
    """Polymarket answers `{"error": ...}`; others send plain text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:EXCERPT].strip() or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text[:EXCERPT]
