"""The web plugin's own options, from ``[plugins.web]`` or ``SWIFTMAIL_PLUGIN_WEB_*``."""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse

from swiftmail_core.errors import ConfigurationError
from swiftmail_core.settings import Settings


@dataclasses.dataclass(frozen=True)
class WebConfig:
    """Rate limits, the Redis key prefix, and the DNS records domains must publish.

    ``spf_include`` and ``return_path_target`` default to names under the host
    of ``public_url`` (``_spf.HOST`` and ``bounces.HOST``).
    """

    redis_prefix: str = "swiftmail:"
    rate_limit_per_tenant: int = 6000
    rate_limit_per_key: int = 3000
    spf_include: str = ""
    return_path_target: str = ""
    #: Cluster-wide gauges on /metrics: collected at most this often (seconds).
    ops_metrics_interval: int = 60
    #: At most this many tenants get a complaint-rate series.
    complaint_rate_tenants: int = 20
    #: Deliveries a tenant needs in 24 hours before its complaint rate is reported.
    complaint_rate_min_delivered: int = 1000

    def dns_targets(self, public_url: str) -> DnsTargets:
        """Return where sending domains' SPF and return-path records point, with warnings."""
        host = (urllib.parse.urlsplit(public_url).hostname or "localhost").lower()
        warnings = []
        if not (self.spf_include and self.return_path_target) and not _public_hostname(host):
            warnings.append(
                f"public_url is {public_url}, not a public hostname, so the SPF include and "
                "return-path target derived from it cannot resolve on the internet: set "
                "public_url (SWIFTMAIL_PUBLIC_URL) to the platform's public address, or set "
                "plugins.web.spf_include and plugins.web.return_path_target "
                "(SWIFTMAIL_PLUGIN_WEB_SPF_INCLUDE, SWIFTMAIL_PLUGIN_WEB_RETURN_PATH_TARGET)")
        return DnsTargets(self.spf_include or f"_spf.{host}",
                          self.return_path_target or f"bounces.{host}", tuple(warnings))

    @classmethod
    def from_settings(cls, settings: Settings) -> WebConfig:
        """Read ``[plugins.web]`` (or ``SWIFTMAIL_PLUGIN_WEB_<NAME>``) options."""
        raw = settings.plugin_settings("web")
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            if field.name not in raw:
                continue
            try:
                values[field.name] = (int(raw[field.name]) if field.type in ("int", int)
                                      else str(raw[field.name]))
            except ValueError as ex:
                raise ConfigurationError(
                    f"setting plugins.web.{field.name} must be an integer "
                    f"(SWIFTMAIL_PLUGIN_WEB_{field.name.upper()})") from ex
        return cls(**values)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class DnsTargets:
    """The names sending domains' SPF and return-path records point at."""

    spf_include: str
    return_path_target: str
    warnings: tuple[str, ...] = ()


# Names that never resolve on the public internet (RFC 6761, RFC 6762, RFC 2606).
_PRIVATE_SUFFIXES = (".localhost", ".local", ".test", ".invalid", ".internal", ".lan", ".home")


def _public_hostname(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return False  # an address literal cannot be an SPF include or a CNAME target
    except ValueError:
        pass
    return "." in host and host != "localhost" and not host.endswith(_PRIVATE_SUFFIXES)
