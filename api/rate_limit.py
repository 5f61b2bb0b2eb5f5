"""Brute-force limits on sign-in routes, per client address and per wallet (429 + Retry-After)."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api.problems import RateLimitedError


class RateLimiter:
    """In-process windows: each API process limits what it serves."""

    def __init__(self, spec: str) -> None:
        self.limit = parse(spec)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, route: str, **keys: str) -> None:
        for kind, value in keys.items():
            if not value:
                continue
            if not self.limiter.hit(self.limit, route, kind, value.lower()):
                reset = self.limiter.get_window_stats(
                    self.limit, route, kind, value.lower()
                ).reset_time
                retry_after = max(1, math.ceil(reset - time.time()))
                raise RateLimitedError(
                    f"too many attempts from this {kind}; try again in {retry_after}s",
                    headers={"Retry-After": str(retry_after)},
                )
