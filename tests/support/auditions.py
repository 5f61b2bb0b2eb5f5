"""Builders for audition tests: short rules, a published clone, an entitlement, marks and
engine actions, through HTTP or straight through the services."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from fastapi.testclient import TestClient

from aggregates.base import CommandContext
from aggregates.entitlements import Entitlement
from aggregates.ports import Mark
from ingest.prices import PostgresPriceSource
from runtime.settings import Settings
from services import cloning
from services.bootstrap import Services
from tests.conftest import ENGINE_TOKEN
from tests.support.clones import RULES, create_clone, full_graph, save_draft
from tests.support.http import bearer
from tests.support.wallets import SignedIn

ENGINE = bearer(ENGINE_TOKEN)
DAY = 24 * 3600

SHORT_RULES: dict[str, Any] = {
    "audition_duration": 2 * DAY,
    "audition_starting_equity": Decimal("10000"),
    "audition_profit_target": Decimal("0.05"),
    "audition_min_trades": 2,
    "audition_min_active_days": 2,
    "audition_free_retries": 1,
    "audition_retry_window": DAY,
}
"""Two days, 5% target, two fills on two days. The loss limits are not settings: they are
the `audition` prop rule set's (5% a day, 10% from the peak), so the limit the prop engine's
gates and breaches enforce is the one the verdict judges."""


def short_rules(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={**SHORT_RULES, **changes})


def context_at(at: datetime, actor: str = "user:tester") -> CommandContext:
    return CommandContext(actor=actor, occurred_at=at, correlation_id="req-RETRO-CLOCK")


# --- straight through the services ---------------------------------------------------------


def grant_entitlement(services: Services, user_id: UUID, at: datetime) -> UUID:
    """An audition entitlement as a verified purchase grants it (the purchase is elided)."""

    def decide(unit: Any) -> UUID:
        entitlement = Entitlement(id=uuid4(), user_id=user_id, purchase_id=uuid4(), kind="audition")
        return unit.add(entitlement).id

    return services.event_log.execute(context_at(at, "service:economy"), decide).result


def published_version(services: Services, owner_id: UUID, at: datetime) -> tuple[UUID, str]:
    """A clone of `owner_id` with one published version: (clone id, version hash)."""
    context = context_at(at, f"user:{owner_id}")
    clone_id = cloning.create_clone(
        services.event_log,
        context,
        owner_id=owner_id,
        key=uuid4().hex,
        name="RETRO-CLOCK",
        description="",
        active_limit=5,
    ).result
    cloning.save_draft(
        services.event_log,
        context,
        clone_id=clone_id,
        owner_id=owner_id,
        graph=full_graph(),
        rules=RULES,
    )
    version = cloning.publish_version(
        services.event_log, context, clone_id=clone_id, owner_id=owner_id, rules=RULES
    ).result
    return clone_id, version.version_id


def record_mark(services: Services, at: datetime, price: str, asset: str = "BTC") -> None:
    PostgresPriceSource(services.projections.datastore).record(
        [Mark(asset, Decimal(price), at, "hyperliquid")]
    )


# --- through HTTP --------------------------------------------------------------------------


def publish_clone(client: TestClient, owner: SignedIn) -> tuple[str, str]:
    """A clone with one published version, through the clone routes: (clone id, hash)."""
    clone_id = create_clone(client, owner)
    save_draft(client, owner, clone_id, full_graph())
    response = client.post(f"/v1/clones/{clone_id}/versions", headers=owner.headers)
    assert response.status_code == 201, response.text
    return clone_id, str(response.json()["version_id"])


def submit(
    client: TestClient, owner: SignedIn, clone_id: str, version_hash: str, **headers: str
) -> Any:
    return client.post(
        "/v1/auditions",
        json={"clone_id": clone_id, "version_hash": version_hash},
        headers={**owner.headers, **headers},
    )


def act(client: TestClient, account_id: str, number: int, **body: Any) -> Any:
    """One engine action (service token), filled at the latest mark."""
    action = {"client_action_id": f"a-{number}", "asset": "BTC", "side": "buy", "size": "1"}
    response = client.post(
        f"/v1/prop/accounts/{account_id}/actions", json={**action, **body}, headers=ENGINE
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "filled", response.json()
    return response.json()
