"""Failed SMTP AUTH per source address: a growing delay, then a disconnect.

Counted in Redis, shared by every listener process on every relay host, so
a guesser spreading attempts across processes (SO_REUSEPORT) or hosts gets
one allowance, not one per process. The shared count is a key per address
under the relay's Redis prefix that expires ``window`` seconds after the
last failure (an address is forgiven then).

Fail safe: each process also keeps its own count (a bounded TTL cache, so a
flood of addresses cannot grow it) and uses the larger of the two; while
Redis cannot be asked, the local count alone still slows and disconnects a
guesser. An IPv6 client counts per /64, the block one subscriber usually
holds.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import redis
import structlog
from cachetools import TTLCache

log = structlog.get_logger("swiftmail.relay.auth_failures")

FAILURE_LIMIT = 10
WINDOW_SECONDS = 900.0
BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 8.0
#: Seconds an AUTH waits for the shared count before going on with the local one
#: (a Redis failing over must not hold every AUTH for the client's retries).
REDIS_WAIT_SECONDS = 1.0
#: What a failed Redis call raises: the client's errors, the socket's, the wait's.
REDIS_FAILURES = (redis.RedisError, OSError, TimeoutError)


def source_key(address: str) -> str:
    """Return the counting key of a peer address (IPv6 by /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AuthFailures:
    """Count failed AUTH per source address and say how long to hold the reply.

    ``client`` is an asyncio Redis client (``swiftmail_core.redis_clients``)
    holding the count shared by every relay process under ``prefix``; without
    one the count is this process's only (tests, a relay without Redis). A
    Redis call that takes longer than ``redis_wait`` seconds is given up for
    the local count.
    Used from one event loop only (no lock).
    """

    def __init__(self, *, limit: int = FAILURE_LIMIT, window: float = WINDOW_SECONDS,
                 base_delay: float = BASE_DELAY_SECONDS, max_delay: float = MAX_DELAY_SECONDS,
                 max_addresses: int = 100_000, client: Any = None,
                 prefix: str = "swiftmail:relay",
                 redis_wait: float = REDIS_WAIT_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.redis = client
        self.prefix = prefix
        self.redis_wait = redis_wait
        self._counts: TTLCache[str, int] = TTLCache(maxsize=max_addresses, ttl=window)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:authfail:{key}"

    async def _shared(self, key: str) -> int:
        if self.redis is None:
            return 0
        try:
            value = await asyncio.wait_for(self.redis.get(self._key(key)), self.redis_wait)
        except REDIS_FAILURES as ex:
            log.warning("auth_failures_redis_unavailable", error=str(ex))
            return 0
        return int(value or 0)

    async def _count_shared(self, key: str) -> int:
        if self.redis is None:
            return 0
        try:
            count = await asyncio.wait_for(self._incr(key), self.redis_wait)
        except REDIS_FAILURES as ex:
            log.warning("auth_failures_redis_unavailable", error=str(ex))
            return 0
        return int(count)

    async def _incr(self, key: str) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(self._key(key))
            pipe.expire(self._key(key), max(1, int(self.window)))
            count, _ = await pipe.execute()
        return int(count)

    async def blocked(self, address: str) -> bool:
        """Return True once ``address`` has failed ``limit`` times within the window."""
        key = source_key(address)
        local = self._counts.get(key, 0)
        if local >= self.limit:
            return True
        return await self._shared(key) >= self.limit

    async def failed(self, address: str) -> float:
        """Count one failure; return the seconds to wait before answering it."""
        key = source_key(address)
        local = self._counts.get(key, 0) + 1
        self._counts[key] = local
        count = max(local, await self._count_shared(key))
        return min(self.max_delay, self.base_delay * 2 ** (count - 1))
