"""Strategy graphs: the model of a clone's strategy and the topology guardrails it must pass.

A graph is nodes (data source, feature transform, model/prompt, signal, risk rule, action)
and edges from one node's output into a named input port of another. `check_graph` parses
a raw JSON document and applies every rule; each failure names the rule and the JSON
pointer (RFC 6901) of the node or edge at fault, in the document as it was given.

A checked graph has one canonical form: keys sorted, no whitespace, nodes sorted by id,
edges by (from, to, port), prompt variables sorted, defaults filled in and decimals
written in their shortest form. Its SHA-256 is the version id, so the same graph has
the same id whatever order its keys or lists came in.

Pure: the limits and the allowed channels and assets arrive as `GraphRules`.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from aggregates.clones import FREE_TEXT
from aggregates.errors import InvalidCommandError


class Rule(StrEnum):
    """Each guardrail's stable name: the problem `type` and each error's `rule`."""

    MALFORMED = "graph-malformed"
    TOO_MANY_NODES = "too-many-nodes"
    TOO_MANY_EDGES = "too-many-edges"
    UNKNOWN_NODE_KIND = "unknown-node-kind"
    PARAMETER_INVALID = "parameter-invalid"
    DUPLICATE_NODE_ID = "duplicate-node-id"
    UNKNOWN_NODE = "unknown-node"
    DUPLICATE_EDGE = "duplicate-edge"
    UNKNOWN_PORT = "unknown-port"
    PORT_TYPE_MISMATCH = "port-type-mismatch"
    INPUT_OVERBOUND = "input-overbound"
    INPUT_MISSING = "input-missing"
    ORPHAN_NODE = "orphan-node"
    CYCLE = "graph-cycle"
    NO_ACTION = "no-action"
    EXTRA_ACTION = "extra-action"
    DEAD_END = "dead-end"
    TOO_DEEP = "too-deep"
    PROMPT_VARIABLE_UNDECLARED = "prompt-variable-undeclared"
    PROMPT_VARIABLE_UNUSED = "prompt-variable-unused"
    PROMPT_VARIABLE_UNBOUND = "prompt-variable-unbound"
    UNKNOWN_CHANNEL = "unknown-channel"
    ASSET_NOT_ALLOWED = "asset-not-allowed"


@dataclass(frozen=True)
class GraphRules:
    max_nodes: int
    max_edges: int
    max_depth: int
    channels: frozenset[str]
    assets: frozenset[str]


@dataclass(frozen=True)
class Violation:
    rule: Rule
    pointer: str
    detail: str

    def as_problem_error(self) -> dict[str, str]:
        return {"rule": self.rule.value, "pointer": self.pointer, "detail": self.detail}


class StrategyGraphRejectedError(InvalidCommandError):
    """One or more guardrails failed; the problem `type` is the first failure's rule."""

    code = "strategy-graph-rejected"

    def __init__(self, violations: list[Violation]) -> None:
        first = violations[0]
        super().__init__(f"{first.detail} (at {first.pointer or '/'})")
        self.violations = violations
        self.code = first.rule.value

    @property
    def problem_errors(self) -> list[dict[str, str]]:
        return [violation.as_problem_error() for violation in self.violations]


# --- the model ----------------------------------------------------------------------------

PortType = Literal["series", "score", "signal"]

NodeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
PortName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")]
Asset = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")]
Channel = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
PromptText = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=FREE_TEXT)]
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def decimal_text(value: Decimal) -> str:
    """The shortest plain form: 0.50 -> "0.5", 1E+2 -> "100", -0 -> "0"."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


# Decimal parameters: at most 8 places, written canonically; each field adds its range.
Amount = Annotated[
    Decimal,
    Field(max_digits=18, decimal_places=8, allow_inf_nan=False),
    PlainSerializer(decimal_text, return_type=str),
]
# Whole-number parameters are strict, so `true` or `"3"` is not taken for a number.
Whole = Annotated[int, Field(strict=True)]


@dataclass(frozen=True)
class Port:
    accepts: frozenset[str]
    many: bool = False  # False: exactly one edge; True: one or more


SINGLE_SERIES = Port(frozenset({"series"}))
SINGLE_SIGNAL = Port(frozenset({"signal"}))
SERIES_OR_SCORE = Port(frozenset({"series", "score"}))


class GraphNode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: ClassVar[PortType | None] = None

    id: NodeId

    def inputs(self) -> dict[str, Port]:
        return {}


class DataSourceNode(GraphNode):
    """A feature channel from ingestion, by name."""

    output: ClassVar[PortType | None] = "series"

    kind: Literal["data_source"]
    channel: Channel


class FeatureTransformNode(GraphNode):
    output: ClassVar[PortType | None] = "series"

    kind: Literal["feature_transform"]
    transform: Literal[
        "zscore", "ema", "sma", "diff", "pct_change", "rolling_std", "rolling_min", "rolling_max"
    ]
    window: Whole = Field(default=24, ge=1, le=720)

    def inputs(self) -> dict[str, Port]:
        return {"in": SINGLE_SERIES}


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    template: PromptText
    variables: Annotated[list[PortName], Field(max_length=16)] = []

    @field_validator("variables")
    @classmethod
    def check_distinct(cls, variables: list[str]) -> list[str]:
        if len(set(variables)) != len(variables):
            raise ValueError("prompt variables must be distinct")
        return variables


class ModelNode(GraphNode):
    """A model called with a prompt; each declared variable is an input port to bind."""

    output: ClassVar[PortType | None] = "score"

    kind: Literal["model"]
    provider: Literal["anthropic", "openai", "google", "mistral", "local"]
    model: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")]
    prompt: Prompt
    temperature: Amount = Field(default=Decimal(0), ge=0, le=2)
    max_tokens: Whole = Field(default=512, ge=1, le=8192)

    def inputs(self) -> dict[str, Port]:
        return {variable: SERIES_OR_SCORE for variable in self.prompt.variables}


class SignalNode(GraphNode):
    """Long above one level, short below another, flat between."""

    output: ClassVar[PortType | None] = "signal"

    kind: Literal["signal"]
    rule: Literal["threshold", "sign"] = "threshold"
    long_above: Amount = Field(default=Decimal(0), ge=-1000, le=1000)
    short_below: Amount = Field(default=Decimal(0), ge=-1000, le=1000)

    @model_validator(mode="after")
    def check_levels(self) -> SignalNode:
        if self.long_above < self.short_below:
            raise ValueError("long_above must not be below short_below")
        return self

    def inputs(self) -> dict[str, Port]:
        return {"in": SERIES_OR_SCORE}


class RiskRuleNode(GraphNode):
    output: ClassVar[PortType | None] = "signal"

    kind: Literal["risk_rule"]
    asset: Asset
    max_position_fraction: Amount = Field(gt=0, le=1)
    stop_loss_fraction: Amount = Field(gt=0, le=Decimal("0.5"))
    max_leverage: Whole = Field(default=1, ge=1, le=20)

    def inputs(self) -> dict[str, Port]:
        return {"in": SINGLE_SIGNAL}


class ActionNode(GraphNode):
    """The single sink: where signals become orders on one asset."""

    kind: Literal["action"]
    asset: Asset
    order_type: Literal["market", "limit"] = "market"
    direction: Literal["long_only", "short_only", "long_short"] = "long_short"
    size_fraction: Amount = Field(gt=0, le=1)

    def inputs(self) -> dict[str, Port]:
        return {"in": Port(frozenset({"signal"}), many=True)}


Node = Annotated[
    DataSourceNode | FeatureTransformNode | ModelNode | SignalNode | RiskRuleNode | ActionNode,
    Field(discriminator="kind"),
]
NODE_KINDS = ("data_source", "feature_transform", "model", "signal", "risk_rule", "action")


class Edge(BaseModel):
    """From one node's output into a named input port of another ("in" unless a prompt's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: NodeId = Field(alias="from")
    target: NodeId = Field(alias="to")
    port: PortName = "in"


Cadence = Literal["1m", "5m", "15m", "1h"]
"""How often a running account's graph is evaluated: once per closed bar of this interval."""


class StrategyGraph(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: list[Node]
    edges: list[Edge] = []
    cadence: Cadence | None = None
    """The bar the cadence driver trades on (None: the engine's default interval)."""


# --- canonical form and version id ----------------------------------------------------------


def canonical_document(graph: StrategyGraph) -> dict[str, Any]:
    """The graph as canonical JSON data: what drafts store and version ids hash."""
    document = graph.model_dump(mode="json", by_alias=True)
    for node in document["nodes"]:
        if node["kind"] == "model":
            node["prompt"]["variables"].sort()
    document["nodes"].sort(key=lambda node: node["id"])
    document["edges"].sort(key=lambda edge: (edge["from"], edge["to"], edge["port"]))
    if document.get("cadence") is None:
        # Graphs without a cadence keep the canonical form (and version id) they always had.
        document.pop("cadence", None)
    return document


def canonical_json(document: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def graph_digest(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON, in hex: a published version's id."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


# --- the guardrails -------------------------------------------------------------------------


def check_graph(raw: Any, rules: GraphRules) -> StrategyGraph:
    """Parse and check a graph document; raise with every failure found, else return it."""
    violations = _check_size(raw, rules)
    if violations:
        raise StrategyGraphRejectedError(violations)
    try:
        graph = StrategyGraph.model_validate(raw)
    except ValidationError as error:
        raise StrategyGraphRejectedError([_from_pydantic(e) for e in error.errors()]) from None
    violations = _Topology(graph, rules).violations()
    if violations:
        raise StrategyGraphRejectedError(violations)
    return graph


def _check_size(raw: Any, rules: GraphRules) -> list[Violation]:
    # Counted before parsing, so an oversized document costs nothing to refuse.
    if not isinstance(raw, dict):
        return [Violation(Rule.MALFORMED, "", "a strategy graph is a JSON object")]
    violations = []
    nodes, edges = raw.get("nodes"), raw.get("edges")
    if isinstance(nodes, list) and len(nodes) > rules.max_nodes:
        detail = f"{len(nodes)} nodes; at most {rules.max_nodes} are allowed"
        violations.append(Violation(Rule.TOO_MANY_NODES, "/nodes", detail))
    if isinstance(edges, list) and len(edges) > rules.max_edges:
        detail = f"{len(edges)} edges; at most {rules.max_edges} are allowed"
        violations.append(Violation(Rule.TOO_MANY_EDGES, "/edges", detail))
    return violations


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON pointer; text that cannot be written as UTF-8 is replaced."""
    tokens = [str(part).replace("~", "~0").replace("/", "~1") for part in parts]
    return _printable("".join("/" + token for token in tokens))


def _printable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")[:300]


def _from_pydantic(error: ErrorDetails) -> Violation:
    location = list(error["loc"])
    # A tagged union adds the tag to the location: /nodes/3/model/prompt -> /nodes/3/prompt.
    if len(location) > 2 and location[0] == "nodes" and location[2] in NODE_KINDS:
        del location[2]
    at_node = len(location) >= 2 and location[0] in ("nodes", "edges")
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        rule, location = Rule.UNKNOWN_NODE_KIND, [*location, "kind"]
        detail = f"kind must be one of {', '.join(NODE_KINDS)}"
    else:
        rule = Rule.PARAMETER_INVALID if at_node else Rule.MALFORMED
        detail = _printable(error["msg"])
    return Violation(rule, pointer(*location), detail)


class _Topology:
    """Every rule that needs the parsed graph, in a fixed order (the first is the type)."""

    def __init__(self, graph: StrategyGraph, rules: GraphRules) -> None:
        self.graph = graph
        self.rules = rules
        self.nodes = graph.nodes
        self.index: dict[str, int] = {}
        self.found: list[Violation] = []
        # Edges whose ends both exist, as (edge index, source index, target index).
        self.wired: list[tuple[int, int, int]] = []

    def violations(self) -> list[Violation]:
        self.check_ids()
        if self.found:
            return self.found  # edges cannot be read while ids are ambiguous
        self.check_edges()
        self.check_inputs()
        acyclic = self.check_acyclic()
        sink = self.check_single_action()
        if acyclic and sink is not None:
            self.check_reaches_action(sink)
        if acyclic:
            self.check_depth()
        self.check_prompts()
        self.check_catalog()
        return self.found

    def fail(self, rule: Rule, at: str, detail: str) -> None:
        self.found.append(Violation(rule, at, _printable(detail)))

    def check_ids(self) -> None:
        for i, node in enumerate(self.nodes):
            if node.id in self.index:
                self.fail(Rule.DUPLICATE_NODE_ID, pointer("nodes", i, "id"), f"{node.id} is taken")
            else:
                self.index[node.id] = i

    def check_edges(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        bound: dict[tuple[int, str], int] = defaultdict(int)
        for j, edge in enumerate(self.graph.edges):
            ends = {"from": edge.source, "to": edge.target}
            unknown = [end for end, name in ends.items() if name not in self.index]
            for end in unknown:
                self.fail(Rule.UNKNOWN_NODE, pointer("edges", j, end), f"no node {ends[end]}")
            if unknown:
                continue
            if (edge.source, edge.target, edge.port) in seen:
                self.fail(Rule.DUPLICATE_EDGE, pointer("edges", j), "this edge is already there")
                continue
            seen.add((edge.source, edge.target, edge.port))
            s, t = self.index[edge.source], self.index[edge.target]
            self.wired.append((j, s, t))
            self.check_port(j, edge, s, t, bound)

    def check_port(
        self, j: int, edge: Edge, s: int, t: int, bound: dict[tuple[int, str], int]
    ) -> None:
        source, target = self.nodes[s], self.nodes[t]
        port = target.inputs().get(edge.port)
        if port is None:
            names = ", ".join(sorted(target.inputs())) or "none"
            detail = f"{target.id} has no input port {edge.port} (ports: {names})"
            self.fail(Rule.UNKNOWN_PORT, pointer("edges", j, "port"), detail)
            return
        if source.output is None or source.output not in port.accepts:
            given = source.output or "nothing (an action is the sink)"
            wanted = " or ".join(sorted(port.accepts))
            detail = f"{source.id} outputs {given}; {target.id}.{edge.port} takes {wanted}"
            self.fail(Rule.PORT_TYPE_MISMATCH, pointer("edges", j), detail)
        bound[(t, edge.port)] += 1
        if bound[(t, edge.port)] > 1 and not port.many:
            detail = f"{target.id}.{edge.port} takes exactly one edge"
            self.fail(Rule.INPUT_OVERBOUND, pointer("edges", j), detail)

    def check_inputs(self) -> None:
        touched = {i for _, s, t in self.wired for i in (s, t)}
        fed = {(t, self.graph.edges[j].port) for j, _, t in self.wired}
        for i, node in enumerate(self.nodes):
            if i not in touched:
                self.fail(Rule.ORPHAN_NODE, pointer("nodes", i), f"{node.id} has no edges")
                continue
            for name in node.inputs():
                if (i, name) in fed:
                    continue
                if isinstance(node, ModelNode):
                    k = node.prompt.variables.index(name)
                    at = pointer("nodes", i, "prompt", "variables", k)
                    self.fail(Rule.PROMPT_VARIABLE_UNBOUND, at, f"no edge binds {name}")
                else:
                    self.fail(Rule.INPUT_MISSING, pointer("nodes", i), f"nothing feeds {node.id}")

    def successors(self) -> list[list[tuple[int, int]]]:
        """Per node, its (target, edge index) pairs, in edge order."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.nodes]
        for j, s, t in self.wired:
            out[s].append((t, j))
        return out

    def check_acyclic(self) -> bool:
        # Iterative depth-first search; an edge back into the current path closes a cycle.
        successors = self.successors()
        state = [0] * len(self.nodes)  # 0 unseen, 1 on the path, 2 done
        acyclic = True
        for root in range(len(self.nodes)):
            if state[root]:
                continue
            state[root] = 1
            stack = [(root, iter(successors[root]))]
            while stack:
                node, pending = stack[-1]
                step = next(pending, None)
                if step is None:
                    state[node] = 2
                    stack.pop()
                    continue
                target, j = step
                if state[target] == 1:
                    acyclic = False
                    path = [n for n, _ in stack]
                    loop = [self.nodes[n].id for n in path[path.index(target) :]]
                    detail = f"this edge closes the cycle {' -> '.join([*loop, loop[0]])}"
                    self.fail(Rule.CYCLE, pointer("edges", j), detail)
                elif state[target] == 0:
                    state[target] = 1
                    stack.append((target, iter(successors[target])))
        return acyclic

    def check_single_action(self) -> int | None:
        actions = [i for i, node in enumerate(self.nodes) if isinstance(node, ActionNode)]
        if not actions:
            self.fail(Rule.NO_ACTION, "/nodes", "a graph needs exactly one action node")
            return None
        for extra in actions[1:]:
            detail = f"{self.nodes[extra].id} is a second action; a graph has exactly one"
            self.fail(Rule.EXTRA_ACTION, pointer("nodes", extra), detail)
        return actions[0] if len(actions) == 1 else None

    def check_reaches_action(self, sink: int) -> None:
        predecessors: list[list[int]] = [[] for _ in self.nodes]
        for _, s, t in self.wired:
            predecessors[t].append(s)
        reached, frontier = {sink}, [sink]
        while frontier:
            for s in predecessors[frontier.pop()]:
                if s not in reached:
                    reached.add(s)
                    frontier.append(s)
        touched = {i for _, s, t in self.wired for i in (s, t)}
        for i, node in enumerate(self.nodes):
            if i not in reached and i in touched:  # orphans are reported as such
                detail = f"{node.id} never reaches the action {self.nodes[sink].id}"
                self.fail(Rule.DEAD_END, pointer("nodes", i), detail)

    def check_depth(self) -> None:
        # Longest path, counted in nodes, by relaxing edges in topological order.
        successors = self.successors()
        incoming = [0] * len(self.nodes)
        for _, _, t in self.wired:
            incoming[t] += 1
        depth = [1] * len(self.nodes)
        ready = [i for i, count in enumerate(incoming) if count == 0]
        while ready:
            node = ready.pop()
            for target, _ in successors[node]:
                depth[target] = max(depth[target], depth[node] + 1)
                incoming[target] -= 1
                if incoming[target] == 0:
                    ready.append(target)
        beyond = [i for i, d in enumerate(depth) if d == self.rules.max_depth + 1]
        if beyond:
            detail = f"{self.nodes[beyond[0]].id} is deeper than {self.rules.max_depth} nodes"
            self.fail(Rule.TOO_DEEP, pointer("nodes", beyond[0]), detail)

    def check_prompts(self) -> None:
        for i, node in enumerate(self.nodes):
            if not isinstance(node, ModelNode):
                continue
            used = set(PLACEHOLDER.findall(node.prompt.template))
            for name in sorted(used - set(node.prompt.variables)):
                at = pointer("nodes", i, "prompt", "template")
                self.fail(Rule.PROMPT_VARIABLE_UNDECLARED, at, f"{{{{{name}}}}} is not declared")
            for k, name in enumerate(node.prompt.variables):
                if name not in used:
                    at = pointer("nodes", i, "prompt", "variables", k)
                    self.fail(Rule.PROMPT_VARIABLE_UNUSED, at, f"the template never uses {name}")

    def check_catalog(self) -> None:
        for i, node in enumerate(self.nodes):
            if isinstance(node, DataSourceNode) and node.channel not in self.rules.channels:
                at = pointer("nodes", i, "channel")
                self.fail(Rule.UNKNOWN_CHANNEL, at, f"no feature channel {node.channel}")
            if isinstance(node, RiskRuleNode | ActionNode) and node.asset not in self.rules.assets:
                at = pointer("nodes", i, "asset")
                allowed = ", ".join(sorted(self.rules.assets))
                self.fail(Rule.ASSET_NOT_ALLOWED, at, f"{node.asset} is not tradable ({allowed})")
