"""An Anthropic provider: the `anthropic` SDK's Messages API against any base URL.

Structured output: the request's JSON Schema is offered as the one tool the model must call
(`tools=[{"name": schema_name, "input_schema": schema}]`, `tool_choice` naming it), and the
answer is that call's `input`. System messages go in `system`. The SDK never retries
(`max_retries=0`): the router is the only loop. Each failure is raised as its class
(`ingest.providers.errors`), with, for a 429, the server's Retry-After. Usage is taken as
the server reports it; our prompt tokens count cached ones (`TokenUsage`), so they are
`input_tokens + cache_read_input_tokens + cache_creation_input_tokens`, cached tokens
`cache_read_input_tokens`, completion tokens `output_tokens`. The key comes from settings
only and is never logged or recorded.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NoReturn

import anthropic
import orjson

from aggregates.ports import ModelAnswer, ModelRequest, TokenUsage
from ingest.client import retry_after
from ingest.providers.errors import (
    ProviderAuthError,
    ProviderBadOutputError,
    ProviderRateLimitedError,
    ProviderRefusedRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    printable,
)
from ingest.providers.openai_compatible import NO_KEY, RETRY_AFTER_MAX
from runtime.clock import Clock, system_clock


class AnthropicProvider:
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        max_output_bytes: int = 64 * 1024,
        clock: Clock = system_clock,
    ) -> None:
        self.name = name
        self.model = model
        self.max_output_bytes = max_output_bytes
        self.clock = clock
        self.client = anthropic.Anthropic(
            api_key=api_key or NO_KEY, base_url=base_url, max_retries=0, timeout=timeout
        )

    def close(self) -> None:
        self.client.close()

    def generate(self, request: ModelRequest) -> ModelAnswer:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages: list[Any] = [
            {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
        ]
        tool: Any = {
            "name": request.schema_name,
            "description": "Answer by calling this tool with JSON matching its schema.",
            "input_schema": dict(request.json_schema),
        }
        arguments: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": request.schema_name},
            "temperature": float(request.temperature),
        }
        if system:
            arguments["system"] = system
        try:
            message = self.client.messages.create(**arguments)
        except anthropic.APIError as error:
            self._raise_for(error)
        return self._answer_of(message, request.schema_name)

    def _raise_for(self, error: anthropic.APIError) -> NoReturn:
        text = f"{self.name}: {error}"
        if isinstance(error, anthropic.APITimeoutError):
            raise ProviderTimeoutError(text) from None
        if isinstance(error, anthropic.APIConnectionError):
            raise ProviderUnavailableError(text) from None
        if isinstance(error, anthropic.RateLimitError):
            seconds = retry_after(error.response.headers.get("retry-after"), self.clock())
            wait = None if seconds is None else min(seconds, RETRY_AFTER_MAX)
            raise ProviderRateLimitedError(text, retry_after=wait) from None
        if isinstance(error, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
            raise ProviderAuthError(text) from None
        if isinstance(error, anthropic.APIStatusError):
            status = error.status_code
            if status == 408:
                raise ProviderTimeoutError(text) from None
            if status >= 500:  # 529 (overloaded) included
                raise ProviderUnavailableError(text) from None
            raise ProviderRefusedRequestError(text) from None
        if isinstance(error, anthropic.APIResponseValidationError):
            raise ProviderBadOutputError(text) from None
        raise ProviderUnavailableError(text) from None

    def _answer_of(self, message: Any, tool_name: str) -> ModelAnswer:
        usage = usage_of(getattr(message, "usage", None))
        if getattr(message, "stop_reason", None) == "max_tokens":
            raise ProviderBadOutputError(
                f"{self.name}: the answer was cut off at the token limit", usage=usage
            )
        calls = [
            block
            for block in getattr(message, "content", None) or []
            if getattr(block, "type", None) == "tool_use"
            and getattr(block, "name", "") == tool_name
        ]
        if not calls or not isinstance(calls[0].input, dict):
            raise ProviderBadOutputError(
                f"{self.name}: the answer did not call {tool_name} with an object", usage=usage
            )
        raw = orjson.dumps(calls[0].input, option=orjson.OPT_SORT_KEYS).decode()
        if len(raw.encode("utf-8")) > self.max_output_bytes:
            raise ProviderBadOutputError(
                f"{self.name}: the answer is over {self.max_output_bytes} bytes", usage=usage
            )
        # Numbers as the JSON said them (decimals exact), as the OpenAI-compatible provider.
        data = json.loads(raw, parse_float=Decimal)
        model = getattr(message, "model", None)
        reported = printable(model) if isinstance(model, str) and model else ""
        return ModelAnswer(
            data=data, raw=raw, usage=usage, provider=self.name, model=reported[:128] or self.model
        )


def usage_of(usage: Any) -> TokenUsage:
    """Messages API usage as reported (absent fields count 0)."""
    if usage is None:
        return TokenUsage()
    read = _count(getattr(usage, "cache_read_input_tokens", None))
    written = _count(getattr(usage, "cache_creation_input_tokens", None))
    return TokenUsage(
        prompt_tokens=_count(getattr(usage, "input_tokens", None)) + read + written,
        completion_tokens=_count(getattr(usage, "output_tokens", None)),
        cached_tokens=read,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
