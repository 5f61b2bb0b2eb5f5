"""The strategy graph's JSON Schema, in the strict form structured output asks for.

Derived from the models in `strategy_graph` (never written by hand, so it cannot drift):
pydantic's schema, then made strict (OpenAI's `json_schema` with `strict: true`): every
object lists all its properties as `required` and has `additionalProperties: false`; no
`default`, `title`, `discriminator` or string lengths; a tagged union is an `anyOf` of
objects whose `kind` is a one-value `enum`; decimals are strings of a fixed pattern (a
graph carries decimals as strings), their range said in the description. Given the
`GraphRules` in force, channels and assets become enums of what is allowed, and node and
edge lists are capped at the limits.

The schema only steers the model: every answer is checked again by `check_graph`.
"""

from __future__ import annotations

from typing import Any

from aggregates.clones import FREE_TEXT
from aggregates.strategy_graph import GraphRules, StrategyGraph

SCHEMA_NAME = "strategy_graph"
"""The `json_schema.name` of a structured-output request (1-64 of `[A-Za-z0-9_-]`)."""

DECIMAL_PATTERN = r"^-?(0|[1-9][0-9]{0,9})(\.[0-9]{1,8})?$"

_DROPPED = frozenset({"title", "default", "examples", "discriminator", "minLength", "maxLength"})


def strategy_graph_json_schema(rules: GraphRules | None = None) -> dict[str, Any]:
    """The strict JSON Schema of a strategy graph (narrowed to `rules` when given)."""
    schema = _strict(StrategyGraph.model_json_schema(by_alias=True, mode="validation"))
    # The cadence is the owner's choice, not the model's; strict output would have to
    # answer it, and a graph without one keeps the canonical form it always had.
    schema["properties"].pop("cadence", None)
    schema["required"] = [name for name in schema["required"] if name != "cadence"]
    if rules is not None:
        _narrow(schema, rules)
    return schema


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "anyOf" in node and _is_decimal(node["anyOf"]):
        return _decimal(node)
    strict: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "pattern" and value == FREE_TEXT:
            continue  # the text rule's escapes are beyond structured output's regex support
        if key == "const":
            strict["enum"] = [value]
        elif key == "oneOf":
            strict["anyOf"] = _strict(value)
        elif key in ("properties", "$defs"):
            strict[key] = {name: _strict(child) for name, child in value.items()}
        else:
            strict[key] = _strict(value)
    if "properties" in strict:
        strict["required"] = list(strict["properties"])
        strict["additionalProperties"] = False
    return strict


def _is_decimal(branches: list[Any]) -> bool:
    types = sorted(branch.get("type", "") for branch in branches if isinstance(branch, dict))
    return types == ["number", "string"]


def _decimal(node: dict[str, Any]) -> dict[str, Any]:
    number = next(branch for branch in node["anyOf"] if branch.get("type") == "number")
    bounds = []
    for key, word in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in number:
            bounds.append(f"{word} {_plain(number[key])}")
    described = "a decimal number written as a string, at most 8 decimal places"
    if bounds:
        described += ", " + " and ".join(bounds)
    if "description" in node:
        described = f"{node['description']} ({described})"
    return {"type": "string", "pattern": DECIMAL_PATTERN, "description": described}


def _plain(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _narrow(schema: dict[str, Any], rules: GraphRules) -> None:
    defs = schema["$defs"]
    channel = defs["DataSourceNode"]["properties"]["channel"]
    channel.pop("pattern", None)
    channel["enum"] = sorted(rules.channels)
    for name in ("RiskRuleNode", "ActionNode"):
        asset = defs[name]["properties"]["asset"]
        asset.pop("pattern", None)
        asset["enum"] = sorted(rules.assets)
    schema["properties"]["nodes"]["maxItems"] = rules.max_nodes
    schema["properties"]["edges"]["maxItems"] = rules.max_edges
