"""IP pools: which local source address a message leaves from.

The operator names source addresses (``source_addresses = {name = "ip"}``),
groups them into pools (``ip_pools = {pool = [name, ...]}``) and assigns
pools to sending domains (``domain_pools``) and tenants (``tenant_pools``,
by tenant id); ``default_pool`` covers the rest. A sending domain's pool wins
over its tenant's. Within a pool, a message sticks to one address (chosen
from its queue id), so its retries keep the same source. Without pools the
relay binds nothing and counts warm-up under ``source_ip``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import zlib
from collections.abc import Mapping
from typing import Any

from swiftmail_core.errors import ConfigurationError


@dataclasses.dataclass(frozen=True)
class SourceAddress:
    """A named local address the relay may bind when connecting out."""

    name: str
    ip: str


@dataclasses.dataclass(frozen=True)
class IpPools:
    """The operator's pools and assignments, checked."""

    pools: Mapping[str, tuple[SourceAddress, ...]] = dataclasses.field(default_factory=dict)
    tenant_pools: Mapping[str, str] = dataclasses.field(default_factory=dict)
    domain_pools: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_pool: str = ""

    @classmethod
    def from_config(cls, config: Any) -> IpPools:
        """Build and check the pools from a RelayConfig; name the bad key on error."""
        addresses: dict[str, SourceAddress] = {}
        for name, ip in (config.source_addresses or {}).items():
            try:
                addresses[name] = SourceAddress(name, str(ipaddress.ip_address(str(ip))))
            except ValueError:
                raise ConfigurationError(
                    f"relay setting 'source_addresses.{name}' is not an IP address: {ip!r}"
                ) from None
        pools: dict[str, tuple[SourceAddress, ...]] = {}
        for pool, names in (config.ip_pools or {}).items():
            members = [names] if isinstance(names, str) else list(names)
            unknown = [n for n in members if n not in addresses]
            if unknown or not members:
                raise ConfigurationError(
                    f"relay setting 'ip_pools.{pool}' names no source address or an unknown one "
                    f"({', '.join(unknown) or 'empty'}): define it in 'source_addresses'")
            pools[pool] = tuple(addresses[n] for n in members)
        tenant_pools = {str(k).lower(): str(v) for k, v in (config.tenant_pools or {}).items()}
        domain_pools = {str(k).lower().rstrip("."): str(v)
                        for k, v in (config.domain_pools or {}).items()}
        for key, table in (("tenant_pools", tenant_pools), ("domain_pools", domain_pools)):
            for owner, pool in table.items():
                if pool not in pools:
                    raise ConfigurationError(
                        f"relay setting '{key}.{owner}' names unknown pool {pool!r}")
        if config.default_pool and config.default_pool not in pools:
            raise ConfigurationError(
                f"relay setting 'default_pool' names unknown pool {config.default_pool!r}")
        return cls(pools, tenant_pools, domain_pools, config.default_pool)

    def pool_for(self, tenant_id: str | None, sender_domain: str | None) -> str:
        """Return the pool of a sending domain, else of its tenant, else the default."""
        if sender_domain and sender_domain.lower() in self.domain_pools:
            return self.domain_pools[sender_domain.lower()]
        if tenant_id and tenant_id.lower() in self.tenant_pools:
            return self.tenant_pools[tenant_id.lower()]
        return self.default_pool

    def choose(self, queue_id: str, tenant_id: str | None,
               sender_domain: str | None) -> SourceAddress | None:
        """Return the source address for one message, or None (no pools: bind nothing)."""
        members = self.pools.get(self.pool_for(tenant_id, sender_domain))
        if not members:
            return None
        return members[zlib.crc32(queue_id.encode()) % len(members)]
