"""The operator console's tests: the app served on loopback, a projection made to stall on
a real event, a job made to die, and a browser with a wallet that signs for real."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from aggregates.base import CommandContext
from projections.audit_log import AuditLog
from runtime.clock import Clock
from services.bootstrap import Services
from services.job_queue import JobQueue, queue_policy
from tests.support.log import append_events
from tests.support.projections import catch_up
from tests.support.wallets import sign

START_SECONDS = 10.0
"""How long the server may take to start or stop."""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn on a loopback port, in a thread with its own event loop; its
    base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server failed to start"
        time.sleep(0.02)
    # Off the main thread uvicorn installs no signal handlers, where the app finds it: this
    # is what tells open streams (the console's too) that the server is stopping.
    app.state.stream.server = server
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_SECONDS)
        assert not thread.is_alive(), "open streams held the server's shutdown"


def failing_audit_log(position: int) -> type[AuditLog]:
    """The audit log with a handler bug on the event at `position`, in its first generation."""

    class FailingAuditLog(AuditLog):
        def process_event(self, domain_event, tracking):  # type: ignore[no-untyped-def,override]
            if tracking.notification_id == position and self.view.generation == 1:  # type: ignore[attr-defined]
                raise ValueError(f"handler bug on position {position}")
            return super().process_event(domain_event, tracking)

    return FailingAuditLog


def stall_audit_log(services: Services, context: CommandContext) -> int:
    """Make the audit log stop on the next event appended (a handler bug there), append it
    and catch up as the worker would: the projection is stalled on it. Its position."""
    position = services.projections.status("audit_log").head + 1
    services.projections.classes["audit_log"] = failing_audit_log(position)
    append_events(services, context, 1)
    catch_up(services)
    status = services.projections.status("audit_log")
    assert status.stalled_position == position, status
    return position


def dead_backtest(services: Services, clock: Clock, error: str) -> UUID:
    """A backtest job whose one attempt failed for good: a dead letter."""
    queue = JobQueue(services.datastore, clock, queue_policy(services.settings))
    job = queue.enqueue("backtest", {"console": "test"}, subject="console test", max_attempts=1)
    lease = queue.lease(["backtest"], worker="tests")
    assert lease is not None and lease.job_id == job.id
    dead = queue.fail(lease.job_id, lease.token, error, retry=False)
    assert dead.state == "dead", dead
    return job.id


def chromium() -> str:
    """The system's chromium: never a browser downloaded at run time. CI installs it."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed: the console's browser test needs the system package"
            " (`.ci/run` installs it with apt-get when it is missing)"
        )
    return found


WALLET_SCRIPT = """
window.ethereum = {
  isTestWallet: true,
  async request({ method, params }) {
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [%(address)s];
    if (method === "personal_sign") return await window.consoleTestSign(params[0], params[1]);
    throw new Error("unsupported method " + method);
  },
};
"""


def inject_wallet(page: Any, wallet: LocalAccount) -> None:
    """An EIP-1193 wallet in the page whose `personal_sign` signs for real, here, with
    `wallet`'s key (which the page never sees)."""

    def personal_sign(data: str, address: str) -> str:
        assert address == wallet.address, address
        return sign(wallet, bytes.fromhex(data.removeprefix("0x")).decode())

    page.expose_function("consoleTestSign", personal_sign)
    page.add_init_script(WALLET_SCRIPT % {"address": f'"{wallet.address}"'})
