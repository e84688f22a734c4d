"""Rate limits from the spec's table, enforced per user (per client IP before login).

GCRA (a leaky bucket kept as one timestamp per key): N requests per period, bursts up to N,
O(1) memory per key. Counters live in this process; with several API replicas behind a load
balancer each replica enforces its own share (see README, "Scaling out").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from api.metrics import RATE_LIMIT_REJECTIONS
from config.settings import Settings
from domain.errors import RateLimited


@dataclass(frozen=True)
class Limit:
    group: str
    count: int
    period_seconds: int


def limits_from(settings: Settings) -> dict[str, Limit]:
    return {
        "auth": Limit("auth", settings.rate_limit_auth_per_minute, 60),
        "workspace": Limit("workspace", settings.rate_limit_workspace_per_hour, 3600),
        "sandbox": Limit("sandbox", settings.rate_limit_sandbox_per_hour, 3600),
        "message": Limit("message", settings.rate_limit_message_per_hour, 3600),
    }


class RateLimiter:
    _MAX_KEYS = 100_000

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.limits = limits_from(settings)
        self._tat: dict[tuple[str, str], float] = {}
        self._now = time.monotonic

    def hit(self, group: str, key: str) -> None:
        """Count one request; raise RateLimited (429 + Retry-After) when over the limit."""
        if not self.enabled:
            return
        limit = self.limits[group]
        interval = limit.period_seconds / max(limit.count, 1)
        now = self._now()
        tat = max(self._tat.get((group, key), now), now)
        allowed_at = tat + interval - limit.period_seconds
        if now < allowed_at:
            RATE_LIMIT_REJECTIONS.labels(group).inc()
            retry_after = max(1, math.ceil(allowed_at - now))
            raise RateLimited(
                f"Rate limit exceeded: {limit.count} requests per "
                f"{_period_name(limit.period_seconds)} for {group} operations",
                retry_after,
            )
        if len(self._tat) > self._MAX_KEYS:
            self._evict(now)
        self._tat[(group, key)] = tat + interval

    def _evict(self, now: float) -> None:
        # A key whose theoretical arrival time has passed is back to a full bucket: forget it.
        for k in [k for k, v in self._tat.items() if v <= now]:
            del self._tat[k]


def _period_name(seconds: int) -> str:
    return {60: "minute", 3600: "hour"}.get(seconds, f"{seconds} s")
