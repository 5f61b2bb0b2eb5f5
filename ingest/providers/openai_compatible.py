"""An OpenAI-compatible provider: the `openai` SDK's Chat Completions against any base URL
(OpenAI itself, vLLM, Ollama, a gateway).

Structured output: `response_format={"type": "json_schema", "json_schema": {"name",
"strict": true, "schema"}}`. The SDK never retries (`max_retries=0`): the router is the only
loop. Each failure is raised as its class (`ingest.providers.errors`), with the tokens it
still cost and, for a 429, the server's Retry-After (`retry-after-ms` or `Retry-After`,
seconds or an HTTP date). Usage is taken exactly as the server reports it:
`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`. The key comes
from settings only and is never logged or recorded.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal, NoReturn

import openai

from aggregates.ports import ModelAnswer, ModelRequest, TokenUsage
from ingest.client import retry_after
from ingest.providers.errors import (
    ProviderAuthError,
    ProviderBadOutputError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRefusedRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    printable,
)
from runtime.clock import Clock, system_clock

TokenParameter = Literal["max_completion_tokens", "max_tokens"]

NO_KEY = "no-key"
"""Sent when no key is configured (a local server that asks for none); the SDK needs one."""

RETRY_AFTER_MAX = 3600.0
"""A Retry-After beyond an hour is taken as an hour."""


class OpenAICompatibleProvider:
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        token_parameter: TokenParameter = "max_completion_tokens",
        max_output_bytes: int = 64 * 1024,
        clock: Clock = system_clock,
    ) -> None:
        self.name = name
        self.model = model
        self.token_parameter = token_parameter
        self.max_output_bytes = max_output_bytes
        self.clock = clock
        self.client = openai.OpenAI(
            api_key=api_key or NO_KEY,
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
        )

    def close(self) -> None:
        self.client.close()

    def generate(self, request: ModelRequest) -> ModelAnswer:
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "strict": True,
                    "schema": request.json_schema,
                },
            },
            "temperature": float(request.temperature),
            self.token_parameter: request.max_tokens,
        }
        try:
            completion = self.client.chat.completions.create(**arguments)
        except openai.APIError as error:
            self._raise_for(error)
        return self._answer_of(completion)

    def _raise_for(self, error: openai.APIError) -> NoReturn:
        text = f"{self.name}: {error}"
        if isinstance(error, openai.APITimeoutError):
            raise ProviderTimeoutError(text) from None
        if isinstance(error, openai.APIConnectionError):
            raise ProviderUnavailableError(text) from None
        if isinstance(error, openai.RateLimitError):
            raise ProviderRateLimitedError(
                text, retry_after=self._retry_after(error.response)
            ) from None
        if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
            raise ProviderAuthError(text) from None
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            if status == 408:
                raise ProviderTimeoutError(text) from None
            if status >= 500:
                raise ProviderUnavailableError(text) from None
            raise ProviderRefusedRequestError(text) from None
        if isinstance(error, openai.APIResponseValidationError):
            raise ProviderBadOutputError(text) from None
        raise ProviderUnavailableError(text) from None

    def _retry_after(self, response: Any) -> float | None:
        headers = response.headers  # the SDK's own httpx response
        milliseconds = headers.get("retry-after-ms")
        if milliseconds is not None:
            try:
                return min(max(float(milliseconds) / 1000, 0.0), RETRY_AFTER_MAX)
            except ValueError:
                pass
        seconds = retry_after(headers.get("retry-after"), self.clock())
        return None if seconds is None else min(seconds, RETRY_AFTER_MAX)

    def _answer_of(self, completion: Any) -> ModelAnswer:
        try:
            usage = usage_of(getattr(completion, "usage", None))
        except (AttributeError, TypeError, ValueError):
            usage = TokenUsage()
        try:
            choice = completion.choices[0]
            message = choice.message
            finish_reason = choice.finish_reason
            content = message.content
            refusal = getattr(message, "refusal", None)
            model = completion.model
        except (AttributeError, IndexError, KeyError, TypeError):
            raise ProviderBadOutputError(
                f"{self.name}: the answer is not a chat completion", usage=usage
            ) from None
        if refusal:
            raise ProviderBadOutputError(f"{self.name} refused: {refusal}", usage=usage)
        if finish_reason == "length":
            raise ProviderBadOutputError(
                f"{self.name}: the answer was cut off at the token limit", usage=usage
            )
        data = self._parse(content, usage)
        reported = printable(model) if isinstance(model, str) and model else ""
        return ModelAnswer(
            data=data,
            raw=content,
            usage=usage,
            provider=self.name,
            model=reported[:128] or self.model,
        )

    def _parse(self, content: Any, usage: TokenUsage) -> Any:
        def bad(why: str) -> ProviderError:
            return ProviderBadOutputError(f"{self.name}: {why}", usage=usage)

        if not isinstance(content, str) or not content.strip():
            raise bad("the answer has no content")
        try:
            size = len(content.encode("utf-8"))
        except UnicodeEncodeError:
            raise bad("the answer is not valid UTF-8") from None
        if size > self.max_output_bytes:
            raise bad(f"the answer is {size} bytes; at most {self.max_output_bytes} are taken")
        if "\x00" in content:
            raise bad("the answer contains a NUL character")
        try:
            data = json.loads(content, parse_float=Decimal, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise bad("the answer is not JSON") from None
        if not isinstance(data, dict):
            raise bad("the answer is not a JSON object")
        return data


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def usage_of(usage: Any) -> TokenUsage:
    """Chat Completions usage as reported (absent fields count 0)."""
    if usage is None:
        return TokenUsage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return TokenUsage(
        prompt_tokens=_count(getattr(usage, "prompt_tokens", None)),
        completion_tokens=_count(getattr(usage, "completion_tokens", None)),
        cached_tokens=_count(cached),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
