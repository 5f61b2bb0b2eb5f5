from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import orjson
import pytest

from aggregates.strategy_graph import (
    Rule,
    StrategyGraphRejectedError,
    canonical_document,
    canonical_json,
    check_graph,
    graph_digest,
)
from tests.support.clones import RULES, full_graph, node_index


def violations(graph: Any, rules: Any = RULES) -> list[tuple[str, str]]:
    with pytest.raises(StrategyGraphRejectedError) as raised:
        check_graph(graph, rules)
    return [(v.rule.value, v.pointer) for v in raised.value.violations]


def with_edges(graph: dict[str, Any], *edges: dict[str, str]) -> dict[str, Any]:
    return {**graph, "edges": [*graph["edges"], *edges]}


def test_a_graph_with_every_node_kind_passes() -> None:
    graph = check_graph(full_graph(), RULES)

    assert {node.kind for node in graph.nodes} == {
        "data_source",
        "feature_transform",
        "model",
        "signal",
        "risk_rule",
        "action",
    }


def test_the_version_id_ignores_key_order_and_list_order() -> None:
    graph = full_graph()
    shuffled = orjson.loads(
        orjson.dumps(
            {
                "edges": list(reversed(graph["edges"])),
                "nodes": [dict(reversed(node.items())) for node in reversed(graph["nodes"])],
            }
        )
    )

    first = graph_digest(canonical_document(check_graph(graph, RULES)))
    second = graph_digest(canonical_document(check_graph(shuffled, RULES)))

    assert first == second


def test_canonical_json_is_sorted_compact_and_fills_defaults() -> None:
    document = canonical_document(check_graph(full_graph(), RULES))

    text = canonical_json(document).decode()

    assert text.startswith('{"edges":[{"from":"fund","port":"funding","to":"llm"}')
    assert " " not in text.replace(
        "Momentum {{momentum}}, funding {{funding}}. Answer -1 to 1.", ""
    )
    assert document["nodes"][0] == {
        "asset": "BTC",
        "direction": "long_short",
        "id": "buy",
        "kind": "action",
        "order_type": "market",
        "size_fraction": "0.5",
    }


def test_equal_decimals_written_differently_hash_the_same() -> None:
    plain = full_graph(buy={"size_fraction": "0.5"}, sig={"long_above": 0.3})
    padded = full_graph(buy={"size_fraction": "0.500"}, sig={"long_above": "0.30"})

    digests = {graph_digest(canonical_document(check_graph(g, RULES))) for g in (plain, padded)}

    assert len(digests) == 1


def test_a_canonical_document_checks_back_to_itself() -> None:
    document = canonical_document(check_graph(full_graph(), RULES))

    assert canonical_document(check_graph(copy.deepcopy(document), RULES)) == document


def test_a_cycle_names_the_edge_that_closes_it() -> None:
    template = "{{momentum}} {{funding}} {{echo}}"
    graph = full_graph(
        llm={"prompt": {"template": template, "variables": ["momentum", "funding", "echo"]}}
    )
    echo = {
        **graph["nodes"][3],
        "id": "llm2",
        "prompt": {"template": "{{prior}}", "variables": ["prior"]},
    }
    graph["nodes"].append(echo)
    graph = with_edges(graph, {"from": "llm", "to": "llm2", "port": "prior"})
    graph = with_edges(graph, {"from": "llm2", "to": "llm", "port": "echo"})

    with pytest.raises(StrategyGraphRejectedError) as raised:
        check_graph(graph, RULES)

    assert [(v.rule, v.pointer) for v in raised.value.violations] == [(Rule.CYCLE, "/edges/7")]
    assert "llm -> llm2 -> llm" in raised.value.violations[0].detail


def test_no_action_is_refused() -> None:
    graph = full_graph()
    graph["nodes"] = [n for n in graph["nodes"] if n["kind"] != "action"]
    graph["edges"] = [e for e in graph["edges"] if e["to"] != "buy"]

    assert (Rule.NO_ACTION.value, "/nodes") in violations(graph)


def test_a_second_action_is_named() -> None:
    graph = full_graph()
    graph["nodes"].append({"id": "sell", "kind": "action", "asset": "ETH", "size_fraction": "1"})
    graph = with_edges(graph, {"from": "risk", "to": "sell"})

    assert violations(graph) == [(Rule.EXTRA_ACTION.value, "/nodes/7")]


def test_a_node_that_never_reaches_the_action_is_named() -> None:
    graph = full_graph()
    graph["nodes"].append({"id": "side", "kind": "feature_transform", "transform": "diff"})
    graph = with_edges(graph, {"from": "ret", "to": "side"})

    assert violations(graph) == [(Rule.DEAD_END.value, "/nodes/7")]


def test_a_node_without_edges_is_an_orphan() -> None:
    graph = full_graph()
    graph["nodes"].append(
        {"id": "lonely", "kind": "data_source", "channel": "hyperliquid.ETH.return_1h"}
    )

    assert violations(graph) == [(Rule.ORPHAN_NODE.value, "/nodes/7")]


def test_an_edge_from_a_signal_into_a_transform_is_a_type_mismatch() -> None:
    graph = full_graph()
    graph["edges"][0] = {"from": "sig", "to": "z"}

    assert (Rule.PORT_TYPE_MISMATCH.value, "/edges/0") in violations(graph)


def test_the_action_has_no_output() -> None:
    graph = full_graph()
    graph["nodes"].append({"id": "sig2", "kind": "signal"})
    graph = with_edges(graph, {"from": "buy", "to": "sig2"})

    assert (Rule.PORT_TYPE_MISMATCH.value, "/edges/6") in violations(graph)


def test_an_edge_into_an_unknown_port_names_the_port() -> None:
    graph = full_graph()
    graph["edges"][1] = {"from": "z", "to": "llm", "port": "mood"}

    found = violations(graph)

    assert found[0] == (Rule.UNKNOWN_PORT.value, "/edges/1/port")
    momentum = graph["nodes"][node_index(graph, "llm")]["prompt"]["variables"].index("momentum")
    assert (Rule.PROMPT_VARIABLE_UNBOUND.value, f"/nodes/3/prompt/variables/{momentum}") in found


def test_an_edge_to_a_missing_node_names_the_end() -> None:
    graph = with_edges(full_graph(), {"from": "ghost", "to": "z"})

    assert violations(graph) == [(Rule.UNKNOWN_NODE.value, "/edges/6/from")]


def test_a_repeated_edge_is_named() -> None:
    graph = with_edges(full_graph(), {"from": "ret", "to": "z", "port": "in"})

    assert violations(graph) == [(Rule.DUPLICATE_EDGE.value, "/edges/6")]


def test_two_edges_into_a_single_port_are_refused() -> None:
    graph = with_edges(full_graph(), {"from": "fund", "to": "z"})

    assert violations(graph) == [(Rule.INPUT_OVERBOUND.value, "/edges/6")]


def test_an_unfed_input_is_named() -> None:
    graph = full_graph()
    graph["edges"] = [e for e in graph["edges"] if e["to"] != "sig"]
    graph = with_edges(graph, {"from": "llm", "to": "risk"})  # keeps llm wired, type aside

    assert (Rule.INPUT_MISSING.value, f"/nodes/{node_index(graph, 'sig')}") in violations(graph)


def test_duplicate_node_ids_are_named() -> None:
    graph = full_graph()
    graph["nodes"].append({"id": "z", "kind": "feature_transform", "transform": "sma"})

    assert violations(graph) == [(Rule.DUPLICATE_NODE_ID.value, "/nodes/7/id")]


def test_limits_on_nodes_edges_and_depth_come_from_the_rules() -> None:
    graph = full_graph()

    assert violations(graph, replace(RULES, max_nodes=6)) == [(Rule.TOO_MANY_NODES.value, "/nodes")]
    assert violations(graph, replace(RULES, max_edges=5)) == [(Rule.TOO_MANY_EDGES.value, "/edges")]
    # ret -> z -> llm -> sig -> risk -> buy is six nodes deep; the sixth goes past five.
    assert violations(graph, replace(RULES, max_depth=5)) == [(Rule.TOO_DEEP.value, "/nodes/6")]


@pytest.mark.parametrize(
    ("node_id", "change", "pointer"),
    [
        ("z", {"window": 0}, "/window"),
        ("z", {"window": True}, "/window"),
        ("llm", {"temperature": "2.5"}, "/temperature"),
        ("llm", {"max_tokens": 10**6}, "/max_tokens"),
        ("risk", {"max_position_fraction": "0"}, "/max_position_fraction"),
        ("risk", {"stop_loss_fraction": "NaN"}, "/stop_loss_fraction"),
        ("buy", {"size_fraction": "0.123456789"}, "/size_fraction"),
        ("buy", {"order_type": "iceberg"}, "/order_type"),
        ("sig", {"long_above": "-1", "short_below": "1"}, ""),
        ("llm", {"provider": "oracle-of-delphi"}, "/provider"),
        ("ret", {"surprise": 1}, "/surprise"),
    ],
)
def test_parameters_are_typed_and_ranged_per_kind(
    node_id: str, change: dict[str, Any], pointer: str
) -> None:
    graph = full_graph(**{node_id: change})

    found = violations(graph)

    assert found == [
        (Rule.PARAMETER_INVALID.value, f"/nodes/{node_index(graph, node_id)}{pointer}")
    ]


def test_an_unknown_node_kind_points_at_the_kind() -> None:
    graph = full_graph(z={"kind": "crystal_ball"})

    assert violations(graph) == [(Rule.UNKNOWN_NODE_KIND.value, "/nodes/2/kind")]


def test_a_placeholder_the_prompt_does_not_declare_is_refused() -> None:
    graph = full_graph(
        llm={
            "prompt": {
                "template": "{{momentum}} {{funding}} {{mood}}",
                "variables": ["momentum", "funding"],
            }
        }
    )

    assert violations(graph) == [
        (Rule.PROMPT_VARIABLE_UNDECLARED.value, "/nodes/3/prompt/template")
    ]


def test_a_declared_variable_the_template_never_uses_is_refused() -> None:
    graph = full_graph(
        llm={"prompt": {"template": "{{momentum}} only", "variables": ["momentum", "funding"]}}
    )

    assert violations(graph) == [(Rule.PROMPT_VARIABLE_UNUSED.value, "/nodes/3/prompt/variables/1")]


def test_every_prompt_variable_must_be_bound() -> None:
    graph = full_graph()
    graph["edges"] = [e for e in graph["edges"] if e.get("port") != "funding"]
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "fund"]

    assert violations(graph) == [
        (Rule.PROMPT_VARIABLE_UNBOUND.value, "/nodes/2/prompt/variables/1")
    ]


def test_an_unknown_feature_channel_is_named() -> None:
    graph = full_graph(ret={"channel": "hyperliquid.DOGE.return_1h"})

    assert violations(graph) == [(Rule.UNKNOWN_CHANNEL.value, "/nodes/0/channel")]


def test_assets_come_from_the_allowed_list() -> None:
    graph = full_graph(risk={"asset": "DOGE"}, buy={"asset": "PEPE"})

    assert violations(graph) == [
        (Rule.ASSET_NOT_ALLOWED.value, "/nodes/5/asset"),
        (Rule.ASSET_NOT_ALLOWED.value, "/nodes/6/asset"),
    ]


@pytest.mark.parametrize("document", [[], "graph", None, {"nodes": "many"}, {"edges": []}])
def test_a_document_that_is_not_a_graph_is_malformed(document: Any) -> None:
    assert violations(document)[0][0] == Rule.MALFORMED.value


def test_the_problem_type_is_the_first_rule_that_failed() -> None:
    graph = full_graph(ret={"channel": "nowhere"})
    graph["nodes"].append({"id": "lonely", "kind": "signal"})

    with pytest.raises(StrategyGraphRejectedError) as raised:
        check_graph(graph, RULES)

    assert raised.value.code == Rule.ORPHAN_NODE.value
    assert [e["rule"] for e in raised.value.problem_errors] == ["orphan-node", "unknown-channel"]


def test_pointers_escape_slashes_and_tildes() -> None:
    graph = full_graph(ret={"a/b~c": 1})

    assert violations(graph) == [(Rule.PARAMETER_INVALID.value, "/nodes/0/a~1b~0c")]


# --- mutation gaps: what a refusal tells the client, and the size limits' edges -------------


def rejected(graph: Any, rules: Any = RULES) -> StrategyGraphRejectedError:
    with pytest.raises(StrategyGraphRejectedError) as raised:
        check_graph(graph, rules)
    return raised.value


def test_a_refusal_lists_each_violation_as_a_problem_error_and_names_the_first() -> None:
    error = rejected([])

    assert error.problem_errors == [
        {"rule": "graph-malformed", "pointer": "", "detail": "a strategy graph is a JSON object"}
    ]
    assert str(error) == "a strategy graph is a JSON object (at /)"
    assert error.code == "graph-malformed"


def test_a_graph_at_the_size_limits_passes_and_one_more_is_refused_with_the_counts() -> None:
    graph = full_graph()
    nodes, edges = len(graph["nodes"]), len(graph["edges"])
    at_limit = replace(RULES, max_nodes=nodes, max_edges=edges)
    below = replace(RULES, max_nodes=nodes - 1, max_edges=edges - 1)

    check_graph(graph, at_limit)
    error = rejected(graph, below)

    assert error.problem_errors == [
        {
            "rule": "too-many-nodes",
            "pointer": "/nodes",
            "detail": f"{nodes} nodes; at most {nodes - 1} are allowed",
        },
        {
            "rule": "too-many-edges",
            "pointer": "/edges",
            "detail": f"{edges} edges; at most {edges - 1} are allowed",
        },
    ]
    assert str(error) == f"{nodes} nodes; at most {nodes - 1} are allowed (at /nodes)"
