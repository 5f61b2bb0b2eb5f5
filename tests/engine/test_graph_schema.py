"""The strategy graph's strict JSON Schema: derived from the models, strict as structured
output wants it, and true to the guardrails' own idea of a graph."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs

from aggregates.graph_schema import SCHEMA_NAME, strategy_graph_json_schema
from aggregates.strategy_graph import canonical_document, check_graph
from tests.support.clones import RULES, full_graph


def objects_in(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [found for item in node for found in objects_in(item)]
    if not isinstance(node, dict):
        return []
    own = [node] if "properties" in node else []
    return own + [found for value in node.values() for found in objects_in(value)]


def keys_in(node: Any) -> set[str]:
    if isinstance(node, list):
        return {key for item in node for key in keys_in(item)}
    if not isinstance(node, dict):
        return set()
    return set(node) | {key for value in node.values() for key in keys_in(value)}


def test_every_object_requires_all_its_properties_and_no_others() -> None:
    schema = strategy_graph_json_schema(RULES)

    objects = objects_in(schema)

    assert len(objects) >= 9  # the graph, six node kinds, the prompt, the edge
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])


def test_the_keywords_structured_output_refuses_are_gone() -> None:
    used = keys_in(strategy_graph_json_schema(RULES))

    assert used.isdisjoint({"default", "title", "discriminator", "oneOf", "const", "maxLength"})


def test_the_schema_name_is_one_structured_output_takes() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", SCHEMA_NAME)


def test_a_checked_graph_in_canonical_form_matches_the_schema() -> None:
    document = canonical_document(check_graph(full_graph(), RULES))

    jsonschema_rs.validate(strategy_graph_json_schema(RULES), document)


def with_node(document: dict[str, Any], node_id: str, **changes: Any) -> dict[str, Any]:
    nodes = [node | changes if node["id"] == node_id else node for node in document["nodes"]]
    return {**document, "nodes": nodes}


def test_decimals_are_strings_and_catalogs_are_the_rules_in_force() -> None:
    document = canonical_document(check_graph(full_graph(), RULES))
    validator = jsonschema_rs.validator_for(strategy_graph_json_schema(RULES))

    assert validator.is_valid(document)
    assert not validator.is_valid(with_node(document, "buy", size_fraction=0.5))
    assert not validator.is_valid(with_node(document, "buy", size_fraction="1/2"))
    assert not validator.is_valid(with_node(document, "buy", asset="DOGE"))
    assert not validator.is_valid(with_node(document, "ret", channel="x.y.z"))
    assert not validator.is_valid(document | {"comment": "hi"})
