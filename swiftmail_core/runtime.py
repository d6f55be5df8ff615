"""Start-up: settings to live database handles, Redis and plugins, once per process."""

from __future__ import annotations

import dataclasses
import functools

import redis

from swiftmail_core import db, embedded
from swiftmail_core.db.targets import DatabaseTargets, database_targets
from swiftmail_core.plugins import PluginManager
from swiftmail_core.settings import Settings


@dataclasses.dataclass
class Runtime:
    """Everything a SwiftMail process needs, built from its settings."""

    settings: Settings
    targets: DatabaseTargets
    plugins: PluginManager

    @functools.cached_property
    def redis_url(self) -> str:
        """Return the Redis URL, starting the embedded Redis if none is configured."""
        if self.settings.uses_embedded_redis:
            return embedded.redis_url(self.settings.data_dir)
        assert self.settings.redis_url is not None
        return self.settings.redis_url

    @functools.cached_property
    def redis(self) -> redis.Redis:
        """Return a shared Redis client."""
        return redis.Redis.from_url(self.redis_url)

    def close(self) -> None:
        """Release pooled database connections."""
        db.disconnect()


def start(settings: Settings, *, plugins: PluginManager | None = None) -> Runtime:
    """Resolve the database, connect the app and system handles, load plugins."""
    targets = database_targets(settings)
    db.connect(targets, pool_size=settings.db_pool_size)
    manager = plugins or PluginManager.load(settings)
    return Runtime(settings=settings, targets=targets, plugins=manager)
