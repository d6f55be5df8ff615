"""How the platform proves itself to a relay's intake: signed requests.

APPSEC: a worker hands a relay mail that names tenant, campaign and ledger
ids, so the relay must know the request comes from the platform itself, not
from a tenant (whose API key could otherwise claim another tenant's ledger
rows). The worker signs each request body with a platform secret, the
webhook signature scheme (``swiftmail_core.webhooks.signing``: HMAC-SHA256
over ``"<t>." + body``); the relay checks it in constant time, refuses a
timestamp outside ``intake_clock_skew`` and refuses a signature it has seen
before (replays within the window).

The secrets come from the core setting ``relay_platform_secret`` (comma
separated: the first signs, every one verifies, so a rotation prepends the
new secret everywhere, then drops the old one) or, unset, one key derived
from ``secret_key``, which every worker and relay host already shares.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from swiftmail_core.crypto import derive_key
from swiftmail_core.errors import ConfigurationError
from swiftmail_core.settings import Settings
from swiftmail_core.webhooks.signing import SIGNATURE_HEADER, sign_payload, verify_signature

PURPOSE = "relay-platform-intake"
__all__ = ["SIGNATURE_HEADER", "MemoryReplayGuard", "RedisReplayGuard", "ReplayGuard",
           "platform_secrets", "sign_request", "verify_request"]


def platform_secrets(settings: Settings) -> tuple[bytes, ...]:
    """Return the platform secrets, the signing one first; raise naming the setting."""
    configured = [part.strip() for part in (settings.relay_platform_secret or "").split(",")]
    secrets = tuple(part.encode() for part in configured if part)
    if secrets:
        if any(len(secret) < 32 for secret in secrets):
            raise ConfigurationError(
                "setting 'relay_platform_secret' must hold secrets of at least 32 characters "
                "(SWIFTMAIL_RELAY_PLATFORM_SECRET)")
        return secrets
    if settings.secret_key:
        return (derive_key(settings.secret_key, PURPOSE),)
    raise ConfigurationError(
        "neither 'relay_platform_secret' nor 'secret_key' is set: the relay transport cannot "
        "sign hand-offs to a relay; run `swiftmail init` or set SWIFTMAIL_RELAY_PLATFORM_SECRET")


def sign_request(secrets: Sequence[bytes], body: bytes, timestamp: int | None = None) -> str:
    """Return the signature header value for ``body`` (with the first secret)."""
    return sign_payload(secrets[0], body, timestamp)


def verify_request(secrets: Sequence[bytes], header: str, body: bytes, *, tolerance: float,
                   now: float | None = None) -> str | None:
    """Return the verified signature digest (the replay key), or None when it does not verify."""
    current = time.time() if now is None else now
    for secret in secrets:
        if verify_signature(secret, header, body, tolerance=int(tolerance), now=current):
            # The key is recomputed, never taken from the header: extra v1= values
            # appended to a captured header must not make a replay look new.
            moment = next(int(value) for name, _, value in
                          (item.strip().partition("=") for item in header.split(","))
                          if name == "t")
            return sign_payload(secret, body, moment).rpartition("v1=")[2]
    return None


class ReplayGuard(Protocol):
    """Remembers signatures already used within the clock-skew window."""

    async def first_use(self, digest: str, ttl: float) -> bool:
        """Return True the first time ``digest`` is seen within ``ttl`` seconds."""
        ...

    async def forget(self, digest: str) -> None:
        """Forget ``digest``: its request kept nothing and may come again."""
        ...


class RedisReplayGuard:
    """Replay memory shared by every relay through Redis (``SET NX EX``).

    A request replayed to another relay is refused too. Redis down: the
    check raises and the intake answers 503 (the worker tries another relay).
    """

    def __init__(self, client: object, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def first_use(self, digest: str, ttl: float) -> bool:
        """Record ``digest``; True when no relay saw it before."""
        stored = await self.client.set(  # type: ignore[attr-defined]
            f"{self.prefix}:intake:seen:{digest}", b"1", nx=True, ex=max(1, int(ttl)))
        return bool(stored)

    async def forget(self, digest: str) -> None:
        """Drop ``digest`` so any relay takes its request again."""
        await self.client.delete(f"{self.prefix}:intake:seen:{digest}")  # type: ignore[attr-defined]


class MemoryReplayGuard:
    """Replay memory of one process (tests, a single relay without Redis)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    async def first_use(self, digest: str, ttl: float) -> bool:
        """Record ``digest``; True when this process did not see it within ``ttl``."""
        now = time.monotonic()
        for key, until in list(self._seen.items()):
            if until < now:
                del self._seen[key]
        if digest in self._seen:
            return False
        self._seen[digest] = now + ttl
        return True

    async def forget(self, digest: str) -> None:
        """Drop ``digest`` so this process takes its request again."""
        self._seen.pop(digest, None)
