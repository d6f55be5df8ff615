"""Traffic shaping: the interface the engine uses, and a no-op default.

The shared Redis implementation lives in ``swiftmail_relay.shaping``.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from swiftmail_relay.classify import Reply
from swiftmail_relay.mx import Route
from swiftmail_relay.spool import Envelope


class Wait(float):
    """Seconds to wait, and what for: ``rate``, ``warm-up`` or ``suspended``."""

    reason: str

    def __new__(cls, seconds: float, reason: str = "rate") -> Wait:
        """Build a wait of ``seconds`` for ``reason``."""
        wait = super().__new__(cls, seconds)
        wait.reason = reason
        return wait


@dataclasses.dataclass(frozen=True)
class SitePolicy:
    """Limits for one destination site (or provider group)."""

    max_connections: int = 20
    messages_per_connection: int = 100
    connections_per_minute: int = 0  # 0: unlimited
    messages_per_second: float = 0.0  # 0: unlimited


class Throttle(Protocol):
    """What the engine asks before and after talking to a destination."""

    def policy(self, route: Route) -> SitePolicy:
        """Return the limits of the route's site."""
        ...

    async def admit(self, route: Route, envelope: Envelope, recipients: int,
                    source: str | None = None) -> float:
        """Return 0 to send now, or seconds to wait (rate, warm-up, suspension).

        ``source`` names the source address the message leaves from (IP pools).
        """
        ...

    async def acquire_connection(self, site: str) -> bool:
        """Take a connection slot for ``site``; False when the shared cap is full."""
        ...

    async def release_connection(self, site: str) -> None:
        """Give a connection slot back."""
        ...

    async def observe(self, route: Route, replies: list[Reply]) -> None:
        """Learn from remote replies (adaptive backoff rules)."""
        ...


class NoThrottle:
    """No shaping beyond the per-process connection cap."""

    def __init__(self, policy: SitePolicy | None = None) -> None:
        self._policy = policy or SitePolicy()

    def policy(self, route: Route) -> SitePolicy:
        """Return the one policy for every site."""
        return self._policy

    async def admit(self, route: Route, envelope: Envelope, recipients: int,
                    source: str | None = None) -> float:
        """Always send now."""
        return 0.0

    async def acquire_connection(self, site: str) -> bool:
        """Always grant."""
        return True

    async def release_connection(self, site: str) -> None:
        """Nothing to release."""

    async def observe(self, route: Route, replies: list[Reply]) -> None:
        """Ignore replies."""
