"""Versioned prompt templates: what the engine asks a model, word for word.

A template never changes once used: a new wording is a new version (`strategy-graph@2`),
and each generation records the version it was made with. `PROMPT_V1` asks for a
strategy graph against its strict JSON Schema (`aggregates.graph_schema`), then, when
the answer breaks a guardrail, for a repair that lists each violation by rule and JSON
pointer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aggregates.graph_schema import SCHEMA_NAME, strategy_graph_json_schema
from aggregates.ports import ChatMessage, ModelRequest
from aggregates.strategy_graph import GraphRules

GRAPH_PURPOSE = "strategy-graph"
REPAIR_PURPOSE = "strategy-graph-repair"

REPAIR_LINES = 20
"""The most violations a repair request lists (the rest are counted)."""


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str
    user: str
    repair: str

    def request(self, prompt: str, rules: GraphRules, max_tokens: int) -> ModelRequest:
        """The first round: the user's idea, the rules and catalog in force, the schema."""
        system = self.system.format(
            max_nodes=rules.max_nodes,
            max_edges=rules.max_edges,
            max_depth=rules.max_depth,
            channels=", ".join(sorted(rules.channels)),
            assets=", ".join(sorted(rules.assets)),
        )
        return ModelRequest(
            purpose=GRAPH_PURPOSE,
            messages=(
                ChatMessage("system", system),
                ChatMessage("user", self.user.format(prompt=prompt)),
            ),
            schema_name=SCHEMA_NAME,
            json_schema=strategy_graph_json_schema(rules),
            inputs={
                "prompt": prompt,
                "assets": sorted(rules.assets),
                "channels": sorted(rules.channels),
                "max_nodes": rules.max_nodes,
                "max_edges": rules.max_edges,
                "max_depth": rules.max_depth,
            },
            max_tokens=max_tokens,
        )

    def repair_request(
        self, first: ModelRequest, answer: str, violations: Sequence[dict[str, str]]
    ) -> ModelRequest:
        """The repair round: the first exchange, then the violations fed back."""
        lines = [
            f"- {v['rule']} at {v['pointer'] or '/'}: {v['detail']}"
            for v in violations[:REPAIR_LINES]
        ]
        if len(violations) > REPAIR_LINES:
            lines.append(f"- and {len(violations) - REPAIR_LINES} more")
        return ModelRequest(
            purpose=REPAIR_PURPOSE,
            messages=(
                *first.messages,
                ChatMessage("assistant", answer),
                ChatMessage("user", self.repair.format(violations="\n".join(lines))),
            ),
            schema_name=first.schema_name,
            json_schema=first.json_schema,
            inputs=first.inputs,
            max_tokens=first.max_tokens,
            temperature=first.temperature,
        )


PROMPT_V1 = PromptTemplate(
    version="strategy-graph@1",
    system="""\
You design trading strategies for Pump Party as strategy graphs. Answer with one JSON \
object that matches the strategy_graph JSON Schema, and nothing else.

A strategy graph is nodes and edges. The kinds of node:
- data_source: reads one feature channel (`channel`); outputs a series.
- feature_transform: `transform` (zscore, ema, sma, diff, pct_change, rolling_std, \
rolling_min, rolling_max) over a trailing `window` of 1 to 720 bars of its input series; \
outputs a series.
- model: asks a language model (`provider`, `model`) with `prompt.template`, whose \
{{{{name}}}} placeholders are each declared in `prompt.variables` and bound by an edge whose \
`port` is that name; outputs a score.
- signal: from its input series or score, long above `long_above` and short below \
`short_below` (rule `threshold`), or by its sign (rule `sign`); outputs a signal.
- risk_rule: limits a signal for one `asset`: `max_position_fraction` in (0, 1], \
`stop_loss_fraction` in (0, 0.5], `max_leverage` from 1 to 20; outputs a signal.
- action: the one sink; trades `asset` with `size_fraction` in (0, 1] of equity; takes one \
or more signals.
An edge goes from a node's output into an input port of another node: `port` is `in`, or \
a prompt variable's name for a model node.

Rules: exactly one action node, and every node reaches it; no cycles; no node without \
edges; every input bound by exactly one edge (only an action takes several); at most \
{max_nodes} nodes, {max_edges} edges and paths of at most {max_depth} nodes. Node ids are \
short identifiers (a letter, then letters, digits, _ or -). Decimals are strings such as \
"0.25".

Feature channels you may read: {channels}.
Assets you may trade: {assets}.""",
    user="Build a strategy graph for this idea:\n\n{prompt}",
    repair="""\
Your graph breaks these rules (each with the JSON pointer of the part at fault in your \
answer):
{violations}

Answer again with the whole corrected graph as one JSON object.""",
)

PROMPTS = {PROMPT_V1.version: PROMPT_V1}
