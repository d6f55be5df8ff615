"""Failed SMTP AUTH per source address: a growing delay, then a disconnect.

Counted in-process, per listener process (not in Redis): the count needs
no network round trip, keeps working while Redis is down, and a guesser is
slowed on every process it reaches. The table is a bounded TTL cache, so a
flood of addresses cannot grow it; an IPv6 client counts per /64, the block
one subscriber usually holds. An address is forgiven ``window`` seconds
after its last failure.
"""

from __future__ import annotations

import ipaddress

from cachetools import TTLCache

FAILURE_LIMIT = 10
WINDOW_SECONDS = 900.0
BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 8.0


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

    Used from one event loop only (no lock).
    """

    def __init__(self, *, limit: int = FAILURE_LIMIT, window: float = WINDOW_SECONDS,
                 base_delay: float = BASE_DELAY_SECONDS, max_delay: float = MAX_DELAY_SECONDS,
                 max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._counts: TTLCache[str, int] = TTLCache(maxsize=max_addresses, ttl=window)

    def blocked(self, address: str) -> bool:
        """Return True once ``address`` has failed ``limit`` times within the window."""
        return self._counts.get(source_key(address), 0) >= self.limit

    def failed(self, address: str) -> float:
        """Count one failure; return the seconds to wait before answering it."""
        key = source_key(address)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return min(self.max_delay, self.base_delay * 2 ** (count - 1))
