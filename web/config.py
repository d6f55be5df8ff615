"""The web plugin's own options, from ``[plugins.web]`` or ``SWIFTMAIL_PLUGIN_WEB_*``."""

from __future__ import annotations

import dataclasses

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
