"""What the public endpoints share: settings, the hit stream, link lookups."""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from typing import Any

import redis as redis_lib

from swiftmail_core import redis_clients
from swiftmail_core.db import system_tx
from swiftmail_core.errors import ConfigurationError
from swiftmail_core.plugins import PluginManager
from swiftmail_core.settings import Settings
from swiftmail_core.tracking_ingest import HitStream
from swiftmail_core.tracking_ingest.stream import DEFAULT_STREAM


@dataclasses.dataclass(frozen=True)
class PublicConfig:
    """Options of the public endpoints, from ``[plugins.tracking]``."""

    stream: str = DEFAULT_STREAM
    redis_prefix: str = "swiftmail:"
    signup_per_ip_per_hour: int = 20
    #: Proxy hops in front of the public endpoints whose X-Forwarded-For entry is trusted
    #: (``trust_forwarded_for = true`` is one hop), or the proxies' networks.
    trusted_hops: int = 0
    trusted_proxies: tuple[Any, ...] = ()
    #: How long a Redis call on the hot path may take before the visitor is answered
    #: anyway (the hit is then logged as not stored).
    redis_timeout_ms: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> PublicConfig:
        """Read ``[plugins.tracking]`` (env ``SWIFTMAIL_PLUGIN_TRACKING_*``)."""
        raw = settings.plugin_settings("tracking")
        return cls(
            stream=str(raw.get("stream", cls.stream)),
            redis_prefix=str(raw.get("redis_prefix", cls.redis_prefix)),
            signup_per_ip_per_hour=int(raw.get("signup_per_ip_per_hour",
                                               cls.signup_per_ip_per_hour)),
            redis_timeout_ms=int(raw.get("redis_timeout_ms", cls.redis_timeout_ms)),
            trusted_hops=_trusted_hops(raw),
            trusted_proxies=_networks(raw.get("trusted_proxies", "")),
        )

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """Return the visitor's address for a request from ``peer``."""
        from swiftmail_web.public.client_address import client_address

        return client_address(peer, forwarded_for, trusted_proxies=self.trusted_proxies,
                              trusted_hops=self.trusted_hops)


def _trusted_hops(raw: dict[str, Any]) -> int:
    if "trusted_hops" in raw:
        try:
            hops = int(raw["trusted_hops"])
        except (TypeError, ValueError):
            hops = -1
        if not 0 <= hops <= 10:
            raise ConfigurationError("setting plugins.tracking.trusted_hops must be 0 to 10 "
                                     "(SWIFTMAIL_PLUGIN_TRACKING_TRUSTED_HOPS)")
        return hops
    trusted = str(raw.get("trust_forwarded_for", "")).lower() in ("1", "true", "yes", "on")
    return 1 if trusted else 0


def _networks(value: Any) -> tuple[Any, ...]:
    parts = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    try:
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in parts if p.strip())
    except ValueError as ex:
        raise ConfigurationError(f"setting plugins.tracking.trusted_proxies is not a list of "
                                 f"networks: {ex}") from ex


class LinkResolver:
    """Return a stored link's URL, cached per process (links never change)."""

    def __init__(self, cache_size: int = 65536) -> None:
        self.cache_size = cache_size
        self._cache: dict[tuple[uuid.UUID, int], str | None] = {}

    def cached(self, tenant_id: uuid.UUID, link_id: int) -> str | bool | None:
        """Return the cached URL (None: no such link), or False when not cached."""
        return self._cache.get((tenant_id, link_id), False)

    def lookup(self, tenant_id: uuid.UUID, link_id: int) -> str | None:
        """Return the URL of the tenant's link, reading the database on a miss."""
        found = self._cache.get((tenant_id, link_id), False)
        if found is not False:
            return found  # type: ignore[return-value]
        url = self._read(tenant_id, link_id)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()  # NOTE: crude bound; links are re-read once after
        self._cache[(tenant_id, link_id)] = url
        return url

    @staticmethod
    def _read(tenant_id: uuid.UUID, link_id: int) -> str | None:
        # APPSEC: tenant and link come from one verified click token; the
        # system role reads the link table by its full key.
        with system_tx() as database:
            row = database.execute_sql(
                "SELECT url FROM links WHERE tenant_id = %s AND id = %s",
                (str(tenant_id), link_id),
            ).fetchone()
        return row[0] if row else None


@dataclasses.dataclass
class PublicServices:
    """Collaborators of the public resources, built once per process."""

    settings: Settings
    redis: redis_lib.Redis
    plugins: PluginManager | None
    config: PublicConfig
    stream: HitStream
    links: LinkResolver

    @property
    def secret_key(self) -> str:
        """Return the key that signs public tokens."""
        return str(self.settings.require("secret_key"))

    @classmethod
    def build(
        cls,
        settings: Settings,
        redis_client: redis_lib.Redis,
        plugins: PluginManager | None = None,
        config: PublicConfig | None = None,
    ) -> PublicServices:
        """Build the services from settings and a Redis client (bounded for the hot path)."""
        config = config or PublicConfig.from_settings(settings)
        bounded = redis_clients.bounded(redis_client, config.redis_timeout_ms / 1000)
        return cls(settings, bounded, plugins, config,
                   HitStream(bounded, config.stream), LinkResolver())
