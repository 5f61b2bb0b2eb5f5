"""Issue 20, item 6: live updates for clients, `GET /v1/stream` (Server-Sent Events).

The stream is served by a real uvicorn server on loopback (its own services and event
loop, one database with the test's `client`), read by a real HTTP client; the read models
are driven with `catch_up`, so what the stream may send is decided by the test:

- a client that disconnects and reconnects with `Last-Event-ID` gets every change exactly
  once, however it was cut off (it hung up, or fell too far behind and was ended);
- another user's private changes never arrive; public race and arena changes reach both;
- an anonymous caller, a bad token or a service token is refused with problem+json before
  the stream starts; so are a malformed or future `Last-Event-ID`;
- without `Last-Event-ID` the stream starts at "now";
- idle streams get keep-alive comments, a logged-out session's stream ends, and a server
  told to stop ends its streams instead of waiting for the clients.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.stream import Broadcaster
from runtime.clock import FixedClock
from runtime.settings import Settings
from services.bootstrap import Services, open_services
from tests.conftest import ENGINE_TOKEN
from tests.support.clones import create_clone, make_admin
from tests.support.http import assert_problem, bearer
from tests.support.jobs import run_job
from tests.support.projections import catch_up
from tests.support.races import USDC, buy, fund, members, schedule
from tests.support.wallets import SignedIn, sign_in

HOUR = timedelta(hours=1)
WAIT = 10.0
"""Seconds a test waits for a message that must come."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Races move the test's clock by hours: access tokens that outlive them; and room for
    a dozen clones per user."""
    return settings.model_copy(update={"access_token_ttl": 24 * 3600, "clone_active_limit": 20})


@dataclass
class Served:
    url: str
    app: FastAPI
    server: uvicorn.Server

    @property
    def broadcaster(self) -> Broadcaster:
        broadcaster: Broadcaster = self.app.state.stream
        return broadcaster


@pytest.fixture
def served(settings: Settings, clock: FixedClock) -> Iterator[Served]:
    """The API under uvicorn on a loopback port, in a thread with its own event loop."""
    services = open_services(settings, run_migrations=False, clock=clock)
    app = create_app(services=services, clock=clock)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server failed to start"
        time.sleep(0.02)
    # Off the main thread uvicorn installs no signal handlers, where the app finds it.
    app.state.stream.server = server
    try:
        yield Served(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        thread.join(WAIT)
        services.close()
        assert not thread.is_alive(), "open streams held the server's shutdown"


@dataclass
class Message:
    id: int
    event: str
    data: dict[str, Any]


@dataclass
class Listening:
    """One SSE connection, read by a thread into a queue (None: the stream ended)."""

    url: str
    user: SignedIn
    last_event_id: int | None = None
    received: queue.Queue[Message | str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        headers = dict(self.user.headers)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        self.client = httpx.Client(timeout=httpx.Timeout(WAIT, read=None))
        request = self.client.build_request("GET", self.url + "/v1/stream", headers=headers)
        self.response = self.client.send(request, stream=True)
        assert self.response.status_code == 200, self.response.read()
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if line == "":
                    if "id" in fields:
                        self.received.put(
                            Message(int(fields["id"]), fields["event"], json.loads(fields["data"]))
                        )
                    fields = {}
                elif line.startswith(":"):
                    self.received.put(line[1:].strip())  # a comment: keep-alive
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except (httpx.HTTPError, OSError, ValueError):
            pass
        finally:
            self.received.put(None)

    def next(self, timeout: float = WAIT, *, comments: bool = False) -> Message | str | None:
        deadline = time.monotonic() + timeout
        while True:
            item = self.received.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(item, str) and not comments:
                continue
            return item

    def messages(self, count: int) -> list[Message]:
        found: list[Message] = []
        while len(found) < count:
            item = self.next()
            assert item is not None, f"the stream ended after {found}"
            assert isinstance(item, Message)
            found.append(item)
        return found

    def quiet(self, seconds: float = 0.6) -> None:
        """Nothing more arrives (the broadcaster polls every 0.1 s)."""
        with pytest.raises(queue.Empty):
            item = self.next(seconds)
            pytest.fail(f"unexpected: {item}")

    def ended(self, timeout: float = WAIT) -> list[Message]:
        """What arrives before the server ends the stream."""
        found: list[Message] = []
        while (item := self.next(timeout)) is not None:
            assert isinstance(item, Message)
            found.append(item)
        return found

    def close(self) -> None:
        """Hang up: the reader thread, blocked in a read, sees the socket shut."""
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.response.close()
        self.client.close()


@pytest.fixture
def listen(served: Served) -> Iterator[Any]:
    opened: list[Listening] = []

    def open_stream(user: SignedIn, last_event_id: int | None = None) -> Listening:
        listening = Listening(served.url, user, last_event_id)
        opened.append(listening)
        return listening

    yield open_stream
    for listening in opened:
        listening.close()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def positions(services: Services, aggregate_ids: list[str], after: int = 0) -> list[int]:
    """Where these aggregates changed, from the audit log read model."""
    with psycopg.connect(services.url) as connection:
        rows = connection.execute(
            "SELECT position FROM audit_log WHERE aggregate_id = ANY(%s) AND position > %s"
            " ORDER BY position",
            ([UUID(a) for a in aggregate_ids], after),
        ).fetchall()
    return [row[0] for row in rows]


def head(services: Services) -> int:
    with psycopg.connect(services.url) as connection:
        row = connection.execute("SELECT max(position) FROM audit_log").fetchone()
    return int(row[0] or 0) if row else 0


# --- who may listen ------------------------------------------------------------------


def test_a_stream_needs_a_signed_in_user(client: TestClient) -> None:
    anonymous = client.get("/v1/stream")
    assert_problem(anonymous, 401, "unauthenticated")
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert_problem(client.get("/v1/stream", headers=bearer("not-a-token")), 401, "unauthenticated")
    assert_problem(client.get("/v1/stream", headers=bearer("a.b.c")), 401, "access-token-invalid")
    # A machine client has no changes of its own to follow.
    assert_problem(client.get("/v1/stream", headers=bearer(ENGINE_TOKEN)), 403, "forbidden")
    # Refused before anything is said about the resume point.
    assert_problem(client.get("/v1/stream", headers={"Last-Event-ID": "x"}), 401, "unauthenticated")


def test_a_resume_point_must_be_a_position_the_log_has_reached(client: TestClient) -> None:
    user = sign_in(client)
    for bad in ("x", "-1", "1.5", "12 13"):
        response = client.get("/v1/stream", headers={**user.headers, "Last-Event-ID": bad})
        assert_problem(response, 422, "invalid-last-event-id")
    future = client.get("/v1/stream", headers={**user.headers, "Last-Event-ID": "999999"})
    assert_problem(future, 409, "position-beyond-head")
    assert_problem(
        client.get("/v1/stream?after=999999", headers=user.headers), 409, "position-beyond-head"
    )


def test_the_stream_is_not_in_the_openapi_document(client: TestClient) -> None:
    """A stream never ends: kept out of the schema (and so out of the schema fuzzers)."""
    assert "/v1/stream" not in client.get("/openapi.json").json()["paths"]


# --- what a listener gets ------------------------------------------------------------


def test_the_stream_starts_now(
    client: TestClient, services: Services, served: Served, listen: Any
) -> None:
    user = sign_in(client)
    before = create_clone(client, user, "Before")
    catch_up(services)

    stream = listen(user)
    after = create_clone(client, user, "After")
    catch_up(services)

    (message,) = stream.messages(1)
    assert (message.event, message.data["clone_id"]) == ("clone", after)
    assert message.data == {
        "clone_id": after,
        "change": "Created",
        "status": "active",
        "position": message.id,
    }
    assert message.id > max(positions(services, [before]))
    stream.quiet()


def test_private_changes_reach_only_their_owner_and_public_ones_reach_everyone(
    client: TestClient, services: Services, served: Served, listen: Any, clock: FixedClock
) -> None:
    admin = make_admin(client, services)
    a, b = sign_in(client), sign_in(client)
    create_clone(client, a, "A's first")
    catch_up(services)
    start = head(services)
    stream_a, stream_b = listen(a), listen(b)

    # Two clones of strangers pass and are admitted (public), a race is scheduled and opens
    # (public); B is funded and buys a ticket (B's ledger and ticket); each makes a clone.
    entrants = members(services, client, 2, clock())
    race = schedule(client, admin, clock(), entrants=2, starts_at=(clock() + HOUR).isoformat())
    race_id = race["race_id"]
    catch_up(services)
    assert run_job(services, "race_calendar", clock) == 1
    fund(services, b, 100 * USDC, clock())
    ticket = buy(client, b, race_id, entrants[0], "10", "ticket-1")
    assert ticket.status_code == 201, ticket.text
    b_clone = create_clone(client, b, "B's")
    a_clone = create_clone(client, a, "A's second")
    catch_up(services)

    public = [("arena", "Admitted", "admitted")] * 2 + [
        ("race", "Scheduled", "scheduled"),
        ("race", "SalesOpened", "open"),
    ]
    got_a = stream_a.messages(5)
    assert [(m.event, m.data["change"], m.data.get("status")) for m in got_a] == [
        *public,
        ("clone", "Created", "active"),
    ]
    assert [m.data["clone_id"] for m in got_a[:2]] == entrants
    assert {m.data["race_id"] for m in got_a[2:4]} == {race_id}
    assert got_a[4].data["clone_id"] == a_clone
    stream_a.quiet()

    got_b = stream_b.messages(8)
    assert [(m.event, m.data["change"], m.data.get("status")) for m in got_b] == [
        *public,
        ("ledger", "Posted", "posted"),  # the funding
        ("ledger", "Posted", "posted"),  # the stake, to the race's escrow
        ("ticket", "Bought", None),  # (in the same transaction)
        ("clone", "Created", "active"),
    ]
    assert [m.id for m in got_b[:4]] == [m.id for m in got_a[:4]]
    funding, stake, bought = got_b[4:7]
    assert funding.data["amount_minor"] == 100 * USDC
    assert bought.data == {
        "ticket_id": ticket.json()["ticket_id"],
        "race_id": race_id,
        "clone_id": entrants[0],
        "amount_minor": 10 * USDC,
        "change": "Bought",
        "position": bought.id,
    }
    assert stake.data["amount_minor"] == -10 * USDC
    assert got_b[7].data["clone_id"] == b_clone
    stream_b.quiet()

    # Ids are log positions, in order; nothing of B's (nor the strangers' own clones,
    # queue entries, or the race's admin reasons) ever reached A.
    for got in (got_a, got_b):
        assert [m.id for m in got] == sorted({m.id for m in got})
        assert all(m.data["position"] == m.id for m in got)
    assert not {m.id for m in got_a} & {funding.id, bought.id, stake.id, got_b[7].id}
    assert "reason" not in json.dumps([m.data for m in got_a + got_b])

    # Read again from the read models (a reconnect from before it all): the same answer.
    for user, got in ((a, got_a), (b, got_b)):
        replay = listen(user, last_event_id=start)
        assert replay.messages(len(got)) == got
        replay.quiet()


def test_a_reconnect_with_last_event_id_gets_every_change_exactly_once(
    client: TestClient, services: Services, served: Served, listen: Any
) -> None:
    user = sign_in(client)
    start = head(services)
    first = listen(user)
    clones = [create_clone(client, user, f"Clone {i}") for i in range(6)]
    catch_up(services)
    got = first.messages(2)
    first.close()  # cut off with four more sent or on their way
    wait_until(lambda: served.broadcaster.streams == 0)  # the server saw it hang up

    clones += [create_clone(client, user, f"Clone {i}") for i in range(6, 9)]
    catch_up(services)
    second = listen(user, last_event_id=got[-1].id)
    got += second.messages(7)  # the four it missed and the three made while away
    clones += [create_clone(client, user, f"Clone {i}") for i in range(9, 11)]
    catch_up(services)
    got += second.messages(2)  # and, joined again, what comes next
    second.quiet()

    assert [m.data["clone_id"] for m in got] == clones
    assert [m.id for m in got] == positions(services, clones, start)[: len(got)]
    assert len({m.id for m in got}) == len(got) == 11


def test_a_client_too_far_behind_is_ended_and_resumes_without_a_gap(
    client: TestClient, services: Services, served: Served, listen: Any
) -> None:
    served.broadcaster.queue_size = 2
    user = sign_in(client)
    stream = listen(user)
    clones = [create_clone(client, user, f"Clone {i}") for i in range(8)]
    catch_up(services)  # one batch of 8 for a backlog of 2: the stream is ended

    got = stream.ended()
    assert 1 <= len(got) < 8
    while len(got) < 8:
        again = listen(user, last_event_id=got[-1].id)
        got += again.messages(8 - len(got))
        again.quiet()

    assert [m.data["clone_id"] for m in got] == clones
    assert len({m.id for m in got}) == 8


def test_idle_streams_get_keep_alives_and_end_with_their_session(
    client: TestClient, services: Services, served: Served, listen: Any, clock: FixedClock
) -> None:
    served.broadcaster.ping = 0.2
    user = sign_in(client)
    stream = listen(user)
    assert stream.next(comments=True) == "stream open"
    assert stream.next(comments=True) == "ping"
    assert stream.next(comments=True) == "ping"

    logout = client.post("/v1/auth/logout", json={"refresh_token": user.refresh_token})
    assert logout.status_code == 200, logout.text
    catch_up(services)
    clock.now += timedelta(seconds=2)  # past what the app remembers of the session
    assert stream.ended() == []


def test_a_stopping_server_ends_its_streams(
    client: TestClient, services: Services, served: Served, listen: Any
) -> None:
    user = sign_in(client)
    stream = listen(user)
    clone = create_clone(client, user)
    catch_up(services)
    assert stream.messages(1)[0].data["clone_id"] == clone

    served.server.should_exit = True
    assert stream.ended(timeout=5) == []
