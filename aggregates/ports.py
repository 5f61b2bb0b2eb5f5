"""What the domain needs from the outside world, as plain types; adapters live in `ingest/`.

The prop engine asks a `PriceSource` for the latest `Mark` of an asset and records the
price, its source and when it was observed in the fill event, so replay never asks again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import orjson

from aggregates.purchases import DepositObservation


@dataclass(frozen=True)
class Mark:
    asset: str
    price: Decimal
    observed_at: datetime
    source: str


class PriceSource(Protocol):
    def latest_mark(self, asset: str) -> Mark | None: ...

    def mark_at(self, asset: str, moment: datetime) -> Mark | None:
        """The newest mark observed at or before `moment`: what a race's result reads at
        its end time, however late the finish runs."""
        ...


class DepositObserver(Protocol):
    """What the chain says of a deposit transaction (None: the node could not say)."""

    def observe_deposit(self, tx_hash: str) -> DepositObservation | None: ...


# --- models (issue 19): what generation and model nodes ask of an LLM provider -------------


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class TokenUsage:
    """Tokens as the provider reported them. `cached_tokens` are part of `prompt_tokens`
    (read from a prompt cache), so a call's total is prompt + completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class ModelRequest:
    """One structured-output request: the messages, the JSON Schema the answer must match
    (`schema_name`: 1-64 of `[A-Za-z0-9_-]`), and the inputs the messages were rendered
    from (what a deterministic provider answers from; never sent over the wire)."""

    purpose: str
    messages: tuple[ChatMessage, ...]
    schema_name: str
    json_schema: Mapping[str, Any]
    inputs: Mapping[str, Any] = field(default_factory=dict)
    max_tokens: int = 4096
    temperature: Decimal = Decimal(0)

    def canonical(self) -> dict[str, Any]:
        """The request as JSON data: what `digest` hashes (sorted keys, no whitespace)."""
        return {
            "purpose": self.purpose,
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "schema_name": self.schema_name,
            "schema": self.json_schema,
            "inputs": self.inputs,
            "max_tokens": self.max_tokens,
            "temperature": format(self.temperature.normalize(), "f"),
        }

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: the same request gets the same hash, whichever
        provider answers it."""
        return hashlib.sha256(
            orjson.dumps(self.canonical(), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()


@dataclass(frozen=True)
class ModelAnswer:
    """The parsed JSON answer, the text it was parsed from, and what it cost."""

    data: Any
    raw: str
    usage: TokenUsage
    provider: str
    model: str


class ModelProvider(Protocol):
    """`generate(request) -> answer (JSON + usage)`; a failure raises one of the provider
    error classes (`ingest.providers.errors`). The router is one too."""

    name: str
    model: str

    def generate(self, request: ModelRequest) -> ModelAnswer: ...
