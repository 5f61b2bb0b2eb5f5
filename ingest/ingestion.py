"""Ingestion as the worker runs it: the clients of one process and its scheduled rounds.

One `Ingestion` holds one shared async client per host, living on one asyncio loop in a
daemon thread; the worker's jobs (plain functions in the scheduler's threads) hand that
loop their fetches and write what comes back themselves, in one transaction per round.
In `live` mode the clients call the URLs from settings; in `replay` mode the same clients
are answered from the recorded payloads in `ingest/fixtures` (or `ingest_replay_dir`).

A failed round is recorded (the error in `ingest_errors`, the failure in `ingest_health`)
and returns normally: ingestion health, not the worker's job retries, is where it shows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from eventsourcing.postgres import PostgresDatastore
from pydantic import HttpUrl

from ingest.channels import catalog, compute_channels
from ingest.client import FetchError, RetryPolicy, Sleep, SourceClient
from ingest.defillama import CoinsClient, LlamaClient
from ingest.health import Watched, record_error, record_failure, record_success
from ingest.hyperliquid import HyperliquidClient
from ingest.polymarket import ClobClient, GammaClient
from ingest.replay import FIXTURES, Recordings, ReplayTransport
from ingest.retention import prune
from ingest.sources import (
    DEFILLAMA,
    HYPERLIQUID,
    POLYMARKET,
    defillama_batch,
    hyperliquid_batch,
    polymarket_batch,
)
from ingest.storage import Batch
from runtime.clock import Clock, system_clock
from runtime.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C", bound=SourceClient)


def watched_sources(settings: Settings) -> list[Watched]:
    return [
        Watched("source", HYPERLIQUID, settings.ingest_hyperliquid_interval),
        Watched("source", POLYMARKET, settings.ingest_polymarket_interval),
        Watched("source", DEFILLAMA, settings.ingest_defillama_interval),
    ]


def watched(settings: Settings) -> list[Watched]:
    """What ingestion is expected to keep fresh; nothing while it is off."""
    if settings.ingest_mode == "off":
        return []
    return watched_sources(settings) + [channel.watched for channel in catalog(settings)]


@dataclass(frozen=True)
class RoundResult:
    source: str
    written: dict[str, int] = field(default_factory=dict)
    error: FetchError | None = None


class LoopThread:
    """An asyncio loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._started()).result()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="ingest-loop", daemon=True
                )
                self._thread.start()
            return self._loop

    def stop(self, *, wait: bool = True) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if wait and thread is not threading.current_thread():
            thread.join()
            loop.close()


class Ingestion:
    def __init__(
        self,
        settings: Settings,
        datastore: PostgresDatastore,
        *,
        clock: Clock = system_clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.datastore = datastore
        self.clock = clock
        self.loop = LoopThread()
        # The worker never closes its Ingestion; when it is dropped, so is the loop's thread.
        weakref.finalize(self, self.loop.stop, wait=False)
        recordings = Recordings(settings.ingest_replay_dir or FIXTURES)
        policy = RetryPolicy.from_settings(settings)

        def client(cls: type[C], url: HttpUrl, host: str) -> C:
            transport = (
                ReplayTransport(recordings, host) if settings.ingest_mode == "replay" else None
            )
            return cls(
                str(url),
                timeout=settings.ingest_timeout,
                policy=policy,
                transport=transport,
                sleep=sleep,
                clock=clock,
            )

        self.hyperliquid_client = client(HyperliquidClient, settings.hyperliquid_url, "hyperliquid")
        self.gamma = client(GammaClient, settings.polymarket_url, "polymarket_gamma")
        self.clob = client(ClobClient, settings.polymarket_clob_url, "polymarket_clob")
        self.coins = client(CoinsClient, settings.defillama_url, "defillama_coins")
        self.llama = client(LlamaClient, settings.defillama_api_url, "defillama_api")
        self.channel_list = catalog(settings)
        self.sources = {w.name: w for w in watched_sources(settings)}

    def cadence(self, source: str) -> float:
        """Seconds between rounds of `source`."""
        return self.sources[source].cadence_seconds

    # --- one round of each kind (the worker's jobs) ---------------------------------------

    def hyperliquid(self) -> RoundResult:
        s = self.settings
        return self.ingest(
            HYPERLIQUID,
            lambda now: hyperliquid_batch(
                self.hyperliquid_client,
                s.ingest_hyperliquid_coins,
                s.ingest_candle_interval,
                timedelta(seconds=s.ingest_lookback),
                now,
            ),
        )

    def polymarket(self) -> RoundResult:
        return self.ingest(
            POLYMARKET,
            lambda now: polymarket_batch(
                self.gamma, self.clob, self.settings.ingest_polymarket_slugs, now
            ),
        )

    def defillama(self) -> RoundResult:
        s = self.settings
        return self.ingest(
            DEFILLAMA,
            lambda now: defillama_batch(
                self.coins, self.llama, s.ingest_defillama_coins, s.ingest_defillama_protocols
            ),
        )

    def channels(self) -> int:
        """Compute every channel from the stored data; the number of new values."""
        with self.datastore.transaction(commit=True) as cursor:
            return compute_channels(cursor, self.channel_list, self.clock())

    def prune(self) -> dict[str, int]:
        retention = timedelta(seconds=self.settings.ingest_tick_retention)
        with self.datastore.transaction(commit=True) as cursor:
            return prune(cursor, self.clock(), retention)

    # --- one round ----------------------------------------------------------------------

    def ingest(
        self,
        source: str,
        fetch: Callable[[datetime], Coroutine[Any, Any, Batch]],
    ) -> RoundResult:
        """Fetch and parse everything, then write it all with the success, or write only
        the error and the failure."""
        now = self.clock()
        watched = self.sources[source]
        try:
            batch = self.loop.run(fetch(now))
        except FetchError as error:
            log.warning("%s ingestion failed: %s (%s)", source, error, error.kind)
            with self.datastore.transaction(commit=True) as cursor:
                record_error(cursor, source, error, now)
                record_failure(cursor, watched, now, f"{error.kind}: {error}")
            return RoundResult(source, error=error)
        with self.datastore.transaction(commit=True) as cursor:
            written = batch.write(cursor)
            record_success(cursor, watched, now)
        return RoundResult(source, written)

    def close(self) -> None:
        clients = [self.hyperliquid_client, self.gamma, self.clob, self.coins, self.llama]

        async def close_all() -> None:
            for client in clients:
                await client.aclose()

        self.loop.run(close_all())
        self.loop.stop()
