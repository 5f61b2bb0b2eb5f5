"""Builders for clone tests: a strategy graph with every node kind, clones and profiles."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient

from aggregates.strategy_graph import GraphRules
from services.bootstrap import Services
from tests.support.wallets import SignedIn, new_wallet, sign_in

RULES = GraphRules(
    max_nodes=64,
    max_edges=128,
    max_depth=16,
    channels=frozenset(
        {"hyperliquid.BTC.return_1h", "hyperliquid.BTC.funding_rate", "hyperliquid.ETH.return_1h"}
    ),
    assets=frozenset({"BTC", "ETH", "SOL"}),
)

_FULL_GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "ret", "kind": "data_source", "channel": "hyperliquid.BTC.return_1h"},
        {"id": "fund", "kind": "data_source", "channel": "hyperliquid.BTC.funding_rate"},
        {"id": "z", "kind": "feature_transform", "transform": "zscore", "window": 48},
        {
            "id": "llm",
            "kind": "model",
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "prompt": {
                "template": "Momentum {{momentum}}, funding {{funding}}. Answer -1 to 1.",
                "variables": ["momentum", "funding"],
            },
            "temperature": "0.2",
        },
        {"id": "sig", "kind": "signal", "long_above": "0.3", "short_below": "-0.3"},
        {
            "id": "risk",
            "kind": "risk_rule",
            "asset": "BTC",
            "max_position_fraction": "0.25",
            "stop_loss_fraction": "0.05",
        },
        {"id": "buy", "kind": "action", "asset": "BTC", "size_fraction": "0.5"},
    ],
    "edges": [
        {"from": "ret", "to": "z"},
        {"from": "z", "to": "llm", "port": "momentum"},
        {"from": "fund", "to": "llm", "port": "funding"},
        {"from": "llm", "to": "sig"},
        {"from": "sig", "to": "risk"},
        {"from": "risk", "to": "buy"},
    ],
}


def full_graph(**node_changes: dict[str, Any]) -> dict[str, Any]:
    """A valid graph using every node kind; `node_changes` updates nodes by id."""
    graph = copy.deepcopy(_FULL_GRAPH)
    for node in graph["nodes"]:
        node.update(node_changes.get(node["id"], {}))
    return graph


def node_index(graph: dict[str, Any], node_id: str) -> int:
    return next(i for i, node in enumerate(graph["nodes"]) if node["id"] == node_id)


def make_admin(client: TestClient, services: Services) -> SignedIn:
    wallet = new_wallet()
    client.app.state.services.settings = services.settings.model_copy(  # type: ignore[attr-defined]
        update={"admin_addresses": [wallet.address]}
    )
    return sign_in(client, wallet)


def configure(client: TestClient, **settings: Any) -> None:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    services.settings = services.settings.model_copy(update=settings)


def create_clone(client: TestClient, user: SignedIn, name: str = "RETRO-CLOCK") -> str:
    response = client.post("/v1/clones", json={"name": name}, headers=user.headers)
    assert response.status_code == 201, response.text
    clone_id: str = response.json()["clone_id"]
    return clone_id


def save_draft(client: TestClient, user: SignedIn, clone_id: str, graph: dict[str, Any]) -> Any:
    response = client.put(f"/v1/clones/{clone_id}/draft", json=graph, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


def submit_profile(
    client: TestClient, user: SignedIn, clone_id: str, display_name: str = "Retro Clock"
) -> str:
    response = client.put(
        f"/v1/clones/{clone_id}/profile",
        json={"display_name": display_name, "bio": "Trades the hourly drift."},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    profile_id: str = response.json()["profile_id"]
    return profile_id


def approved_clone(client: TestClient, owner: SignedIn, admin: SignedIn) -> tuple[str, str]:
    """A clone of `owner` with a public profile: (clone id, profile id)."""
    clone_id = create_clone(client, owner)
    profile_id = submit_profile(client, owner, clone_id)
    approved = client.post(
        f"/v1/admin/moderation/profiles/{profile_id}/approve", json={}, headers=admin.headers
    )
    assert approved.status_code == 200, approved.text
    return clone_id, profile_id
