"""Per-tenant and per-key rate limits: fixed one-minute windows in Redis.

Each request increments two counters (the tenant's and the key's); over
either limit is a 429 with ``Retry-After``. Every answer carries
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` for the
tighter of the two. Counters are per tenant, so one tenant's flood never
spends another's budget. If Redis is down the limiter fails open (logged):
availability of the API matters more than a minute of unmetered traffic.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import falcon
import redis
import structlog
from swiftmail_web import metrics
from swiftmail_web.errors import RateLimitedError

from swiftmail_core.principal import Principal

log = structlog.get_logger("swiftmail.web")
WINDOW = 60


@dataclasses.dataclass(frozen=True)
class Limits:
    """Requests allowed per minute."""

    per_tenant: int = 6000
    per_key: int = 3000


class RateLimiter:
    """Count requests in Redis under ``prefix`` and refuse the excess."""

    def __init__(
        self,
        redis_client: redis.Redis,
        limits: Limits,
        prefix: str = "swiftmail:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis_client
        self.limits = limits
        self.prefix = prefix
        self.clock = clock

    def hit(self, principal: Principal, resp: falcon.Response) -> None:
        """Count one request; set headers; raise RateLimitedError when over."""
        now = self.clock()
        window = int(now // WINDOW)
        reset = WINDOW - int(now % WINDOW)
        buckets = [("tenant", f"{self.prefix}ratelimit:tenant:{principal.tenant_id}:{window}",
                    self.limits.per_tenant)]
        if principal.key_id is not None:
            buckets.append(("key", f"{self.prefix}ratelimit:key:{principal.key_id}:{window}",
                            self.limits.per_key))
        try:
            pipe = self.redis.pipeline(transaction=False)
            for _, name, _ in buckets:
                pipe.incr(name)
                pipe.expire(name, WINDOW + 5)
            counts = pipe.execute()[::2]
        except redis.RedisError as ex:
            log.warning("rate limiter unavailable; allowing request", error=str(ex))
            return
        remaining = [(limit - int(count), limit, scope)
                     for (scope, _, limit), count in zip(buckets, counts, strict=True)]
        left, limit, scope = min(remaining)
        resp.set_header("RateLimit-Limit", str(limit))
        resp.set_header("RateLimit-Remaining", str(max(left, 0)))
        resp.set_header("RateLimit-Reset", str(reset))
        if left < 0:
            metrics.RATE_LIMITED.labels(scope).inc()
            raise RateLimitedError(
                f"too many requests for this {scope}: {limit} per minute; retry in {reset}s",
                retry_after=reset,
            )
