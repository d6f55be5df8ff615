"""Every Redis client SwiftMail makes, built from the settings: a URL or Sentinel.

Nothing else in SwiftMail calls ``redis.Redis(...)``, ``from_url`` or
``RedisHuey``: the API's rate limiter, tracking, the worker's huey queue and
the relay's shaping and slot counters all take their client from here, so
one setting moves them all.

* ``redis_url``: one server (or, unset, the embedded Redis in data_dir).
* ``redis_sentinels``: the master of ``redis_sentinel_service`` as the
  Sentinels name it. Every new connection asks a Sentinel where the master
  is; a connection to a dead, silent or demoted master fails, is dropped,
  and the retry reconnects through the Sentinels, so a failover is followed
  without a restart (redis-py's Sentinel support, huey included, with
  ``SentinelConnection`` asking again on every reconnect).

Clients carry timeouts (a stalled server never holds a caller forever) and
a bounded retry with backoff that rides out a failover of a few seconds.
Callers on a hot path ask for fewer retries and shorter timeouts.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from swiftmail_core.errors import ConfigurationError
from swiftmail_core.settings import Settings

#: Seconds a command (or a connect) may take before the client gives up.
DEFAULT_TIMEOUT = 5.0
#: Retries of a failed command, with backoff 0.2, 0.4, 0.8 ... capped at 2 s.
DEFAULT_RETRIES = 4
#: A Sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT = 1.0
#: An idle pooled connection is PINGed before reuse after this many seconds.
HEALTH_CHECK_SECONDS = 10


class SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """A Sentinel-managed connection that asks the Sentinels on every reconnect.

    redis-py reconnects a dropped connection inside a command's retries
    (``send_packed_command`` calls ``connect_check_health``) to the address
    it had, never asking the Sentinels again. After a master went silent (a
    cut cable, a stopped process) the retries then go on timing out against
    it for good. Here every (re)connect to the master starts with a lookup.
    """

    def connect_to(self, address: tuple[str, int]) -> None:
        """Connect to ``address`` (already looked up) without a second lookup."""
        self.host, self.port = address
        super(redis.sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False)

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        """Connect to the master the Sentinels name now (one try: the command retries)."""
        if self._sock:
            return
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super(redis.sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=check_health, retry_socket_connect=False)


class AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """The asyncio twin of ``SentinelConnection``."""

    async def connect_to(self, address: tuple[str, int]) -> None:
        """Connect to ``address`` (already looked up) without a second lookup."""
        self.host, self.port = address
        await super(redis.asyncio.sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False)

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        """Connect to the master the Sentinels name now (one try: the command retries)."""
        if self.is_connected:
            return
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super(redis.asyncio.sentinel.SentinelManagedConnection, self).connect_check_health(
            check_health=check_health, retry_socket_connect=False)


def _backoff(retries: int) -> Any:
    return ExponentialBackoff(cap=2.0, base=0.2) if retries else NoBackoff()


def _options(timeout: float, retries: int, *, asynchronous: bool = False) -> dict[str, Any]:
    retry_class = redis.asyncio.retry.Retry if asynchronous else Retry
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "health_check_interval": HEALTH_CHECK_SECONDS,
            "retry": retry_class(_backoff(retries), retries)}


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    """Return the configured Sentinels as (host, port), refusing a malformed entry."""
    addresses = []
    for entry in settings.redis_sentinels:
        host, _, port = entry.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"setting 'redis_sentinels' has {entry!r}: expected HOST:PORT, e.g. "
                "10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379")
        addresses.append((host, int(port)))
    return addresses


def uses_sentinel(settings: Settings) -> bool:
    """True when clients find the master through Sentinels."""
    return bool(settings.redis_sentinels)


def url(settings: Settings) -> str:
    """Return the one server's URL (starting the embedded Redis if none is configured)."""
    if uses_sentinel(settings):
        raise ConfigurationError(
            "Redis is reached through redis_sentinels: there is no single URL "
            "(use swiftmail_core.redis_clients.client)")
    if settings.redis_url:
        return settings.redis_url
    from swiftmail_core import embedded

    return embedded.redis_url(settings.data_dir)


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT,
                              "socket_connect_timeout": SENTINEL_TIMEOUT}
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    return kwargs


def _node_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"db": settings.redis_db}
    if settings.redis_password:
        kwargs["password"] = settings.redis_password
    return kwargs


def sentinel(settings: Settings) -> redis.sentinel.Sentinel:
    """Return a Sentinel manager for the configured Sentinels."""
    return redis.sentinel.Sentinel(sentinel_addresses(settings),
                                   sentinel_kwargs=_sentinel_kwargs(settings))


def client(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT,
           retries: int = DEFAULT_RETRIES) -> redis.Redis:
    """Return a Redis client on the master (a URL's server or Sentinel's master)."""
    options = _options(timeout, retries)
    if uses_sentinel(settings):
        return sentinel(settings).master_for(
            settings.redis_sentinel_service, connection_class=SentinelConnection,
            **_node_kwargs(settings), **options)
    return redis.Redis.from_url(url(settings), **options)


def async_client(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES) -> redis.asyncio.Redis:
    """Return an asyncio Redis client on the master (the relay, the tracking hot path)."""
    options = _options(timeout, retries, asynchronous=True)
    if uses_sentinel(settings):
        manager = redis.asyncio.sentinel.Sentinel(
            sentinel_addresses(settings), sentinel_kwargs=_sentinel_kwargs(settings))
        return manager.master_for(
            settings.redis_sentinel_service, connection_class=AsyncSentinelConnection,
            **_node_kwargs(settings), **options)
    return redis.asyncio.Redis.from_url(url(settings), **options)


def huey(settings: Settings, name: str, **options: Any) -> Any:
    """Return a RedisHuey application named ``name`` on the master.

    huey polls with a one-second blocking pop and backs off on errors by
    itself, so its client retries little and waits longer than a pop.
    """
    from huey import RedisHuey

    pool = client(settings, timeout=DEFAULT_TIMEOUT, retries=1).connection_pool
    return RedisHuey(name, connection_pool=pool, **options)


def bounded(source: redis.Redis, seconds: float) -> redis.Redis:
    """Return a client on the same server(s) whose calls give up after ``seconds``.

    No retries either: redis-py retries a timed-out call with backoff by
    default, which is what a visitor-facing path must not wait for.
    """
    pool = source.connection_pool
    options = {"socket_timeout": seconds, "socket_connect_timeout": seconds,
               "retry": Retry(NoBackoff(), 0)}
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return pool.sentinel_manager.master_for(pool.service_name, **{
            **{k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"},
            "connection_class": pool.connection_class, **options})
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **{**pool.connection_kwargs, **options}))


def describe(settings: Settings) -> str:
    """Say where Redis is: the URL (password hidden) or the Sentinels' master now."""
    from swiftmail_core.settings import redact_url

    if not uses_sentinel(settings):
        return "embedded" if settings.uses_embedded_redis else redact_url(url(settings))
    host, port = sentinel(settings).discover_master(settings.redis_sentinel_service)
    return (f"Sentinel service {settings.redis_sentinel_service!r}: master at {host}:{port} "
            f"({len(settings.redis_sentinels)} Sentinels)")
