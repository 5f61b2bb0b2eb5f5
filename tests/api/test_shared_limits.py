"""Issue 15: sign-in limits that hold however the API is deployed.

- Several API processes (uvicorn workers, hosts behind a load balancer) count against one
  budget, kept in PostgreSQL: a second process does not hand out a second budget.
- The limits key on the client's address. Behind a trusted proxy that is the rightmost
  X-Forwarded-For address not itself a trusted proxy; from any other peer the header is
  ignored, so spoofing it escapes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from runtime.clock import FixedClock
from runtime.rate_limits import wait
from runtime.settings import Settings, SettingsError, load_settings
from services.bootstrap import Services, open_services
from tests.support.http import assert_problem
from tests.support.wallets import new_wallet

ROOT = Path(__file__).resolve().parents[2]
PROXIES = ["10.0.0.0/24", "192.0.2.10"]
PROXY = "10.0.0.5"
"""A load balancer in the trusted range: the peer every proxied request comes from."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_rate_limit": "3/minute", "trusted_proxies": PROXIES})


@pytest.fixture
def other_process(settings: Settings, clock: FixedClock) -> Iterator[TestClient]:
    """A second API process: its own services (connections) and its own app, one database."""
    services = open_services(settings, run_migrations=False, clock=clock)
    try:
        with TestClient(create_app(services=services, clock=clock)) as client:
            yield client
    finally:
        services.close()


def peer(client: TestClient, host: str) -> TestClient:
    """The same app, reached from another direct peer (a client, or a proxy)."""
    return TestClient(client.app, client=(host, 40000))


def nonce(client: TestClient, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = client.post(
        "/v1/auth/nonce", json={"address": new_wallet().address}, headers=headers
    )
    return response.status_code


# --- one budget across processes -----------------------------------------------------


def test_two_api_processes_share_one_budget(client: TestClient, other_process: TestClient) -> None:
    first, second = peer(client, "198.51.100.7"), peer(other_process, "198.51.100.7")

    statuses = [nonce(first), nonce(second), nonce(first), nonce(second), nonce(first)]
    refused = second.post("/v1/auth/nonce", json={"address": new_wallet().address})

    assert statuses == [201, 201, 201, 429, 429]  # before: each process had a budget of 3
    body = assert_problem(refused, 429, "rate-limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 2 * 60
    assert "try again" in body["detail"]
    # Another address still has its own budget, in either process.
    assert nonce(peer(other_process, "198.51.100.8")) == 201


def test_concurrent_attempts_in_two_processes_never_pass_the_limit_together(
    client: TestClient, other_process: TestClient
) -> None:
    barrier = threading.Barrier(12)
    statuses: list[int] = []

    def attempt(app: TestClient) -> None:
        barrier.wait()
        statuses.append(nonce(app))

    threads = [
        threading.Thread(
            target=attempt, args=(peer(client if n % 2 else other_process, "198.51.100.20"),)
        )
        for n in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [201] * 3 + [429] * 9


@pytest.mark.parametrize(
    ("elapsed", "previous", "current", "expected"),
    [
        (10.0, 0, 3, 70.0),  # full now: the next window, once this one weighs 2 of 3
        (10.0, 3, 0, 10.0),  # the last window still weighs 2.5: wait till it weighs 2
        (50.0, 3, 2, 10.0),  # no room left in this window; the next one has room at once
    ],
)
def test_retry_after_is_when_one_more_attempt_would_be_allowed(
    elapsed: float, previous: int, current: int, expected: float
) -> None:
    assert wait(3, 60, elapsed, previous, current) == pytest.approx(expected)


def test_the_budget_lives_in_the_database_and_expired_windows_are_pruned(
    client: TestClient, services: Services
) -> None:
    with psycopg.connect(services.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rate_limit_windows (key, window_start, hits, expires_at)"
            " VALUES ('nonce:ip:192.0.2.99', 0, 7, now() - interval '1 hour')"
        )

    assert nonce(peer(client, "198.51.100.9")) == 201

    with psycopg.connect(services.url) as conn:
        rows = conn.execute("SELECT key, hits FROM rate_limit_windows").fetchall()
    assert rows == [("nonce:ip:198.51.100.9", 1)]


# --- the client's address behind proxies ---------------------------------------------


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(client: TestClient) -> None:
    attacker, proxy = peer(client, "203.0.113.66"), peer(client, PROXY)

    spoofed = [nonce(attacker, f"198.51.100.{n}") for n in range(1, 6)]
    alice = [nonce(proxy, "198.51.100.1") for _ in range(4)]
    bob = [nonce(proxy, "198.51.100.2") for _ in range(3)]

    assert spoofed == [201, 201, 201, 429, 429]  # one budget: the peer's own
    assert alice == [201, 201, 201, 429]  # the spoofed hits were not counted as hers
    assert bob == [201, 201, 201]  # before: everyone behind the proxy shared one budget


def test_spoofed_entries_left_of_what_the_proxy_appended_escape_nothing(
    client: TestClient,
) -> None:
    proxy = peer(client, PROXY)

    # The client sends its own X-Forwarded-For; the proxy appends the address it saw.
    statuses = [nonce(proxy, f"10.0.0.{n}, 203.0.113.{n}, 198.51.100.1") for n in range(1, 6)]
    someone_else = nonce(proxy, "198.51.100.2")

    assert statuses == [201, 201, 201, 429, 429]
    assert someone_else == 201


def test_the_client_is_found_behind_a_chain_of_trusted_proxies(client: TestClient) -> None:
    edge = peer(client, "192.0.2.10")

    through_two = [nonce(edge, "198.51.100.3, 10.0.0.7") for _ in range(4)]
    direct = [nonce(peer(client, PROXY), "198.51.100.3") for _ in range(1)]

    assert through_two == [201, 201, 201, 429]
    assert direct == [429]  # the same client, whichever proxies it came through


# --- settings and start-up -----------------------------------------------------------


def test_trusted_proxies_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUMPPARTY_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16,2001:db8::/32")

    assert load_settings().trusted_proxies == ["10.0.0.1", "192.168.0.0/16", "2001:db8::/32"]


@pytest.mark.parametrize("value", ["*", "not-an-address", "10.0.0.0/33", "0.0.0.0/0"])
def test_a_proxy_that_is_not_an_address_or_network_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PUMPPARTY_TRUSTED_PROXIES", value)

    with pytest.raises(SettingsError, match="invalid setting PUMPPARTY_TRUSTED_PROXIES"):
        load_settings()


def test_several_api_processes_refuse_per_process_limits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPPARTY_")}
    env.update(PUMPPARTY_DATA_DIR=str(tmp_path), PUMPPARTY_RATE_LIMIT_STORAGE="memory")

    refused = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "api", "--workers", "2", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode != 0
    assert "PUMPPARTY_RATE_LIMIT_STORAGE=memory" in refused.stderr
    assert "--workers 2" in refused.stderr
