"""How a provider call fails, by class: the router decides on the class, never on text.

Each error carries the tokens the call still cost (a truncated or unparseable answer was
billed) and, for a rate limit, the server's Retry-After in seconds.
"""

from __future__ import annotations

from typing import ClassVar

from aggregates.ports import TokenUsage

DETAIL_LIMIT = 300
"""Characters of an error's text kept in the call's record."""


def printable(text: str) -> str:
    """Error text safe to record: no control characters, bounded."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return cleaned[:DETAIL_LIMIT].strip()


class ProviderError(Exception):
    outcome: ClassVar[str] = "error"

    def __init__(
        self,
        detail: str,
        *,
        usage: TokenUsage | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(printable(detail))
        self.detail = printable(detail)
        self.usage = usage or TokenUsage()
        self.retry_after = retry_after


class ProviderRateLimitedError(ProviderError):
    """429: fall back at once; the provider cools down for its Retry-After."""

    outcome = "rate-limited"


class ProviderTimeoutError(ProviderError):
    """No answer in time: fall back; the provider cools down."""

    outcome = "timeout"


class ProviderAuthError(ProviderError):
    """401/403: the key is wrong or revoked; fall back, cool down for long."""

    outcome = "auth-failed"


class ProviderUnavailableError(ProviderError):
    """5xx, refused or dropped connections: tried once more, then fall back and cool down."""

    outcome = "unavailable"


class ProviderBadOutputError(ProviderError):
    """An answer that is not a JSON object (refused, cut off by the token limit, too big,
    not JSON): fall back, no cooldown (the provider is healthy)."""

    outcome = "bad-output"


class ProviderRefusedRequestError(ProviderError):
    """Another 4xx: this provider will not take this request as written; fall back."""

    outcome = "refused"
