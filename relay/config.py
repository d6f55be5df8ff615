"""The relay's own settings, read from the ``[plugins.relay]`` table.

Every key may also come from ``SWIFTMAIL_PLUGIN_RELAY_<KEY>`` (see
``Settings.plugin_settings``). ``RelayConfig.from_settings`` validates them and
names the offending key on bad input.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

from swiftmail_core.errors import ConfigurationError
from swiftmail_core.settings import Settings

DAY = 86400


def _hostport(value: str, key: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"relay setting {key!r} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _networks(value: Any, key: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    parts = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    try:
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in parts if p.strip())
    except ValueError as ex:
        raise ConfigurationError(f"relay setting {key!r} is not a network list: {ex}") from ex


@dataclasses.dataclass(frozen=True)
class RelayConfig:
    """Typed relay settings with production defaults."""

    spool_dir: Path
    hostname: str = "localhost"
    submission_listen: tuple[str, int] = ("127.0.0.1", 2525)
    # Listeners where AUTH is allowed without STARTTLS (operator-named, loopback).
    trusted_listeners: tuple[str, ...] = ("127.0.0.1:2525",)
    bounce_listen: tuple[str, int] | None = None
    # The platform intake (docs/relay.md "Platform intake"): workers on any host hand mail
    # here over HTTP, signed with the platform secret; "off" disables it.
    intake_listen: tuple[str, int] | None = ("127.0.0.1", 2526)
    intake_max_body: int = 64 * 1024 * 1024
    intake_clock_skew: float = 300.0
    intake_tls: bool = False  # serve the intake over TLS with tls_cert / tls_key
    # How long the record of a ledger row taken is kept (spool_ledger); 0: max_age + 2 days.
    intake_dedupe_hours: float = 0.0
    bounce_domain: str = ""
    fbl_address: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # Seconds between checks whether tls_cert/tls_key changed on disk (SIGHUP reloads at once).
    tls_reload_check_seconds: float = 60.0
    smtp_port: int = 25
    # Postfix-style smarthost: every domain routes to this host, no MX lookup.
    relayhost: str = ""
    allow_networks: tuple[Any, ...] = ()
    max_message_size: int = 25 * 1024 * 1024
    max_age: float = 4 * DAY
    retry_base: float = 300.0
    retry_cap: float = 4 * 3600.0
    connect_timeout: float = 30.0
    dns_timeout: float = 5.0
    command_timeout: float = 300.0
    max_connections_per_site: int = 20
    messages_per_connection: int = 100
    workers: int = 64
    metrics_listen: tuple[str, int] | None = None
    dkim_ed25519: bool = True
    source_ip: str = "default"
    # IP pools (docs/relay.md "IP pools"): {name: ip}, {pool: [names]}, {tenant id: pool},
    # {sending domain: pool}, and the pool of everything else.
    source_addresses: Any = None
    ip_pools: Any = None
    tenant_pools: Any = None
    domain_pools: Any = None
    default_pool: str = ""
    warmup: bool = True
    warmup_start_per_hour: int = 20
    warmup_factor: float = 1.4
    warmup_idle_days: int = 30
    provider_groups: Any = None  # {group: [mx suffix, ...]}, see shaping.DEFAULT_GROUPS
    policies: Any = None  # {group or "default": {max_connections, messages_per_connection, ...}}
    scan_interval: float = 1.0
    overdue_after: float = 120.0  # the watchdog reschedules mail due, idle and unqueued this long
    # Outbound TLS policies (docs/relay.md "Transport security").
    mta_sts: bool = True
    dane: bool = True
    mta_sts_port: int = 443  # port of the policy host (tests use a loopback one)
    tls_ca_file: str = ""  # extra CA bundle for MTA-STS verification; empty: system store
    tlsrpt_organization: str = ""  # organization-name of TLS-RPT reports (default: hostname)
    tlsrpt_contact: str = ""
    # Reputation guards (docs/relay.md "Reputation guards").
    reputation_window: int = 1000
    reputation_min_sample: int = 200
    max_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.001
    redis_prefix: str = "swiftmail:relay"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RelayConfig:
        """Build the relay config from ``[plugins.relay]`` plus explicit overrides."""
        raw = {**settings.plugin_settings("relay"), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown relay setting {unknown[0]!r}: see docs/relay.md for the list"
            )
        values: dict[str, Any] = {
            "spool_dir": Path(raw.pop("spool_dir", Path(settings.data_dir) / "spool"))
        }
        for name, value in raw.items():
            values[name] = cls._coerce(name, value)
        config = cls(**values)
        config._check_relayhost()
        from swiftmail_relay.ip_pools import IpPools

        IpPools.from_config(config)  # names a bad pool setting at start-up
        return config

    def _check_relayhost(self) -> None:
        """Refuse an IP-literal relayhost the relay may not connect to.

        APPSEC: a relayhost does not bypass the address check; a loopback or
        private one must be listed in ``allow_networks`` like any MX.
        """
        try:
            ipaddress.ip_address(self.relayhost)
        except ValueError:
            return  # empty (MX routing) or a name, checked when resolved
        if not self.address_allowed(self.relayhost):
            raise ConfigurationError(
                f"relay setting 'relayhost' is {self.relayhost}, a non-global address: "
                "add its network to 'allow_networks' (SWIFTMAIL_PLUGIN_RELAY_ALLOW_NETWORKS)")

    @staticmethod
    def _coerce(name: str, value: Any) -> Any:
        if name in ("submission_listen", "bounce_listen", "metrics_listen", "intake_listen"):
            if value in (None, "", "off"):
                return None
            return value if isinstance(value, tuple) else _hostport(value, name)
        if name == "allow_networks":
            return _networks(value, name)
        if name in ("provider_groups", "policies", "source_addresses", "ip_pools",
                    "tenant_pools", "domain_pools"):
            if not isinstance(value, dict):
                raise ConfigurationError(f"relay setting {name!r} must be a table")
            return value
        if name in ("warmup_start_per_hour", "warmup_idle_days"):
            return int(value)
        if name == "warmup_factor":
            return float(value)
        if name == "relayhost":
            # Postfix writes [host] for "no MX lookup"; the relayhost never gets one.
            return str(value or "").strip().strip("[]").lower().rstrip(".")
        if name == "trusted_listeners":
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(p.strip() for p in parts if p.strip())
        try:
            if name in ("smtp_port", "max_message_size", "max_connections_per_site",
                        "messages_per_connection", "workers", "mta_sts_port",
                        "reputation_window", "reputation_min_sample", "intake_max_body"):
                return int(value)
            if name in ("max_age", "retry_base", "retry_cap", "connect_timeout", "dns_timeout",
                        "command_timeout", "scan_interval", "overdue_after", "max_bounce_rate", "max_complaint_rate",
                        "intake_clock_skew", "intake_dedupe_hours"):
                return float(value)
            if name in ("dkim_ed25519", "warmup", "mta_sts", "dane", "intake_tls"):
                return value if isinstance(value, bool) else str(value).lower() in (
                    "1", "true", "yes", "on")
        except (TypeError, ValueError) as ex:
            raise ConfigurationError(f"relay setting {name!r} is invalid: {ex}") from ex
        return str(value)

    @property
    def dedupe_seconds(self) -> float:
        """Return how long a taken ledger row's record is kept (at least while spooled)."""
        return self.intake_dedupe_hours * 3600.0 or self.max_age + 2 * DAY

    def address_allowed(self, address: str) -> bool:
        """Return True if the relay may connect to ``address``.

        APPSEC: loopback, private, link-local and other non-global addresses
        are refused unless an operator listed them in ``allow_networks``.
        """
        ip = ipaddress.ip_address(address)
        if any(ip in network for network in self.allow_networks):
            return True
        return ip.is_global and not ip.is_multicast
