"""Strategy graphs, generated: valid ones pass and hash the same however they are written;
any graph at all, sent over HTTP, is saved or refused with a problem, never a 500."""

from __future__ import annotations

import json
import math
import random
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregates.strategy_graph import canonical_document, check_graph, graph_digest
from tests.support.clones import RULES, configure, create_clone
from tests.support.http import PROBLEM
from tests.support.wallets import sign_in

TRANSFORMS = ["zscore", "ema", "sma", "diff", "pct_change", "rolling_std"]
ASSETS = sorted(RULES.assets)


def amount(low: str, high: str) -> st.SearchStrategy[str]:
    return st.decimals(Decimal(low), Decimal(high), places=4).map(str)


@st.composite
def valid_graphs(draw: st.DrawFn) -> dict[str, Any]:
    """Sources, optional transforms, an optional model, signals, optional risk, one action."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    feeds = []
    for i in range(draw(st.integers(1, 3))):
        feed = f"src{i}"
        channel = draw(st.sampled_from(sorted(RULES.channels)))
        nodes.append({"id": feed, "kind": "data_source", "channel": channel})
        for j in range(draw(st.integers(0, 2))):
            step = f"t{i}x{j}"
            nodes.append(
                {
                    "id": step,
                    "kind": "feature_transform",
                    "transform": draw(st.sampled_from(TRANSFORMS)),
                    "window": draw(st.integers(1, 720)),
                }
            )
            edges.append({"from": feed, "to": step})
            feed = step
        feeds.append(feed)
    if draw(st.booleans()):
        variables = [f"v{i}" for i in range(len(feeds))]
        nodes.append(
            {
                "id": "llm",
                "kind": "model",
                "provider": draw(st.sampled_from(["anthropic", "openai", "local"])),
                "model": "m-1",
                "prompt": {
                    "template": " ".join(f"{{{{{v}}}}}" for v in variables),
                    "variables": variables,
                },
                "temperature": draw(amount("0", "2")),
            }
        )
        edges += [
            {"from": f, "to": "llm", "port": v} for f, v in zip(feeds, variables, strict=True)
        ]
        feeds = ["llm"]
    asset = draw(st.sampled_from(ASSETS))
    for k, feed in enumerate(feeds):
        signal = f"sig{k}"
        low = draw(amount("-10", "0"))
        nodes.append(
            {
                "id": signal,
                "kind": "signal",
                "short_below": low,
                "long_above": draw(amount("0", "10")),
            }
        )
        edges.append({"from": feed, "to": signal})
        if draw(st.booleans()):
            risk = f"risk{k}"
            nodes.append(
                {
                    "id": risk,
                    "kind": "risk_rule",
                    "asset": asset,
                    "max_position_fraction": draw(amount("0.0001", "1")),
                    "stop_loss_fraction": draw(amount("0.0001", "0.5")),
                    "max_leverage": draw(st.integers(1, 20)),
                }
            )
            edges.append({"from": signal, "to": risk})
            signal = risk
        edges.append({"from": signal, "to": "act"})
    nodes.append(
        {
            "id": "act",
            "kind": "action",
            "asset": asset,
            "size_fraction": draw(amount("0.0001", "1")),
        }
    )
    return {"nodes": nodes, "edges": edges}


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON with every object's keys and the node and edge lists in another order."""
    if isinstance(value, dict):
        items = [(k, shuffled(v, rng)) for k, v in value.items()]
        rng.shuffle(items)
        if {"nodes", "edges"} <= value.keys():
            for _, listed in items:
                rng.shuffle(listed)
        return dict(items)
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@settings(max_examples=100, deadline=None)
@given(graph=valid_graphs(), seed=st.integers(0, 2**32))
def test_valid_graphs_pass_and_hash_the_same_however_written(
    graph: dict[str, Any], seed: int
) -> None:
    document = canonical_document(check_graph(graph, RULES))
    rewritten = canonical_document(check_graph(shuffled(graph, random.Random(seed)), RULES))

    assert graph_digest(rewritten) == graph_digest(document)
    assert canonical_document(check_graph(document, RULES)) == document


# --- anything at all, over HTTP ---------------------------------------------------------------

FIELDS = [
    "id", "kind", "channel", "transform", "window", "provider", "model", "prompt", "temperature",
    "max_tokens", "rule", "long_above", "short_below", "asset", "max_position_fraction",
    "stop_loss_fraction", "max_leverage", "order_type", "direction", "size_fraction",
]  # fmt: skip
KINDS = ["data_source", "feature_transform", "model", "signal", "risk_rule", "action"]
NAMES = st.sampled_from(["src0", "t0x0", "llm", "sig0", "risk0", "act", "x", "in", "v0"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    NAMES,
    st.sampled_from(
        ["0.5", "1e400", "-0", "BTC", "hyperliquid.BTC.return_1h", "zscore", "anthropic", "{{v0}}"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
random_nodes = st.builds(
    lambda kind, extra: {"kind": kind, **extra},
    st.sampled_from(KINDS) | st.text(max_size=6),
    st.dictionaries(
        st.sampled_from(FIELDS),
        scalars | st.just({"template": "{{v0}}", "variables": ["v0"]}),
        max_size=6,
    ),
)
random_edges = st.dictionaries(st.sampled_from(["from", "to", "port"]), NAMES | scalars, max_size=3)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid graph with one thing broken: a node or edge dropped, added or changed."""
    graph = draw(valid_graphs())
    nodes, edges = graph["nodes"], graph["edges"]
    change = draw(st.sampled_from(["drop-node", "drop-edge", "add-edge", "set-field", "add-node"]))
    if change == "drop-node":
        nodes.pop(draw(st.integers(0, len(nodes) - 1)))
    elif change == "drop-edge" and edges:
        edges.pop(draw(st.integers(0, len(edges) - 1)))
    elif change == "add-edge":
        ids = [n["id"] for n in nodes]
        edges.append(
            {
                "from": draw(st.sampled_from(ids)),
                "to": draw(st.sampled_from(ids)),
                "port": draw(NAMES),
            }
        )
    elif change == "set-field":
        draw(st.sampled_from(nodes))[draw(st.sampled_from(FIELDS))] = draw(scalars)
    else:
        nodes.append(draw(random_nodes))
    return graph


any_graph = st.one_of(
    valid_graphs(),
    mutated(),
    st.fixed_dictionaries(
        {"nodes": st.lists(random_nodes, max_size=6), "edges": st.lists(random_edges, max_size=6)}
    ),
    st.dictionaries(st.sampled_from(["nodes", "edges", "extra"]), json_values, max_size=3),
)


@pytest.fixture
def drafting(client: TestClient) -> tuple[dict[str, str], str]:
    """One owner and clone shared by every example of a test (hypothesis runs them in one)."""
    configure(client, clone_channels=sorted(RULES.channels))
    owner = sign_in(client)
    return owner.headers, create_clone(client, owner)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(graph=any_graph)
@example(graph={"nodes": math.inf})
@example(graph={"nodes": [{"kind": "signal", "id": "s", "threshold": math.nan}], "edges": []})
def test_any_graph_is_saved_or_refused_never_a_500(
    client: TestClient, drafting: tuple[dict[str, str], str], graph: dict[str, Any]
) -> None:
    headers, clone_id = drafting

    # Sent as Python writes JSON, NaN and Infinity included: a client may send anything.
    saved = client.put(
        f"/v1/clones/{clone_id}/draft",
        content=json.dumps(graph).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )

    assert saved.status_code in (200, 422), saved.text
    if saved.status_code == 422:
        assert saved.headers["content-type"].startswith(PROBLEM)
        assert saved.json()["errors"], saved.text
    else:
        published = client.post(f"/v1/clones/{clone_id}/versions", headers=headers)
        assert published.status_code in (200, 201), published.text
