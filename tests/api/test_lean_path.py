"""The lean request path: an access token verified once is taken again for a second at
most (its expiry still holds), and read-your-writes waits share one watcher per process
that looks at the projections' positions, instead of each read polling the database."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, cast
from uuid import uuid4

from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import VERIFIED_FOR, VerifiedTokens
from api.deps import ProjectionPositions, positions_of
from api.tokens import AccessClaims, AccessTokens
from projections.reads import ProjectionReads
from runtime.clock import FixedClock
from services.bootstrap import Services
from tests.support.http import assert_problem
from tests.support.wallets import sign_in


class FakeReads:
    """Positions that move when told; counts every look."""

    def __init__(self, position: int = 0) -> None:
        self.at = position
        self.looks = 0
        self.polled = 0

    async def position(self, projection: str) -> int:
        self.looks += 1
        await asyncio.sleep(0)
        return self.at

    async def wait_until(self, projection: str, position: int, timeout: float) -> bool:
        self.polled += 1
        return self.at >= position


def watcher(reads: FakeReads, interval: float = 0.005) -> ProjectionPositions:
    return ProjectionPositions(cast(ProjectionReads, reads), interval=interval)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_many_waiters_share_one_look_at_a_time() -> None:
    reads = FakeReads()

    async def scenario() -> list[bool]:
        positions = watcher(reads)
        waits = [positions.wait_until("clones", 5, 2.0) for _ in range(50)]

        async def advance() -> None:
            await asyncio.sleep(0.05)
            reads.at = 5

        results = await asyncio.gather(*waits, advance())
        await positions.close()
        return results[:50]

    started = time.monotonic()
    assert run(scenario()) == [True] * 50
    assert time.monotonic() - started < 1.0
    # One look every 5 ms for everyone, not one per waiter per look.
    assert reads.looks < 40


def test_a_wait_is_bounded_and_false_when_not_reached() -> None:
    reads = FakeReads(position=3)

    async def scenario() -> bool:
        positions = watcher(reads)
        try:
            return await positions.wait_until("clones", 4, 0.1)
        finally:
            await positions.close()

    started = time.monotonic()
    assert run(scenario()) is False
    assert 0.1 <= time.monotonic() - started < 1.0


def test_a_position_already_seen_answers_without_a_look() -> None:
    reads = FakeReads(position=9)

    async def scenario() -> tuple[bool, int, bool, int]:
        positions = watcher(reads)
        first = await positions.wait_until("clones", 9, 1.0)
        looks = reads.looks
        second = await positions.wait_until("clones", 7, 1.0)
        await positions.close()
        return first, looks, second, reads.looks

    first, looks, second, after = run(scenario())
    assert first and second
    assert looks >= 1
    assert after == looks


def test_no_timeout_still_reads_the_position_once() -> None:
    reads = FakeReads(position=7)

    async def scenario() -> tuple[bool, bool]:
        positions = watcher(reads, interval=10.0)
        reached = await positions.wait_until("clones", 7, 0)
        behind = await positions.wait_until("clones", 8, 0)
        await positions.close()
        return reached, behind

    assert run(scenario()) == (True, False)


def test_the_watcher_sleeps_while_nobody_waits_and_stops_on_close() -> None:
    reads = FakeReads(position=1)

    async def scenario() -> tuple[int, int, bool, int]:
        positions = watcher(reads, interval=0.001)
        await positions.wait_until("clones", 1, 1.0)
        looks = reads.looks
        await asyncio.sleep(0.05)
        idle_looks = reads.looks
        task = positions._task
        await positions.close()
        stopped = task is None or task.done()
        # Closed: a wait falls back to the read models' own bounded wait.
        await positions.wait_until("clones", 2, 0.01)
        return looks, idle_looks, stopped, reads.polled

    looks, idle_looks, stopped, polled = run(scenario())
    assert idle_looks <= looks + 1
    assert stopped
    assert polled == 1


def test_the_app_opens_the_watcher_and_closes_it_when_it_stops(
    services: Services, clock: FixedClock
) -> None:
    with TestClient(create_app(services=services, clock=clock)):
        positions = positions_of(services.reads)
        assert not positions._closed

    assert positions._closed
    assert positions_of(services.reads) is not positions


def test_a_token_used_a_moment_ago_still_expires(client: TestClient, clock: FixedClock) -> None:
    signed_in = sign_in(client)
    tokens: AccessTokens = client.app.state.access_tokens  # type: ignore[attr-defined]
    assert client.get("/v1/sessions", headers=signed_in.headers).status_code == 200
    assert client.get("/v1/sessions", headers=signed_in.headers).status_code == 200

    clock.advance(seconds=tokens.ttl.total_seconds() + 10)

    assert_problem(
        client.get("/v1/sessions", headers=signed_in.headers), 401, "access-token-expired"
    )


def test_verified_tokens_are_remembered_for_a_second_of_the_service_clock(
    services: Services, clock: FixedClock
) -> None:
    tokens = AccessTokens.from_settings(services.settings)
    claims = AccessClaims(uuid4(), "0xabc", frozenset({"admin"}), uuid4())
    token = tokens.mint(claims, clock())
    verified = VerifiedTokens(tokens)
    calls = 0
    real_verify = tokens.verify

    def counting(token: str, now: datetime) -> AccessClaims:
        nonlocal calls
        calls += 1
        return real_verify(token, now)

    tokens.verify = counting  # type: ignore[method-assign]

    first = verified.principal(token, clock())
    again = verified.principal(token, clock())
    clock.advance(seconds=VERIFIED_FOR.total_seconds())
    later = verified.principal(token, clock())

    assert first == again == later
    assert first.user_id == claims.user_id and first.is_admin
    assert calls == 2
