"""Start-up: settings to live database handles, Redis and plugins, once per process.

``start(settings, process=...)`` is the one place a SwiftMail process
starts: every command, server worker and app factory calls it, and it runs
the plugins' ``swiftmail_startup`` hook naming the kind of process.
"""

from __future__ import annotations

import dataclasses
import enum
import functools

import redis

from swiftmail_core import db, redis_clients
from swiftmail_core.db.schema_version import check_schema
from swiftmail_core.db.targets import DatabaseTargets, database_targets
from swiftmail_core.plugins import PluginManager
from swiftmail_core.settings import Settings


class ProcessKind(enum.StrEnum):
    """What a process is, as ``swiftmail_startup`` hears it (``process``)."""

    #: ``swiftmail serve``: each gunicorn worker of the API and public pages.
    API = "api"
    #: ``swiftmail_web.public.wsgi:app``: each worker of the lean public app.
    PUBLIC = "public"
    #: ``swiftmail tracking serve`` (``swiftmail_web.public.asgi``): each uvicorn worker.
    PUBLIC_ASGI = "public-asgi"
    #: ``swiftmail worker``: the sending worker (huey consumer and scheduler).
    WORKER = "worker"
    #: ``swiftmail relay run``: the MTA relay.
    RELAY = "relay"
    #: ``swiftmail tracking drain``: stores tracking hits as events.
    TRACKING_DRAINER = "tracking-drainer"
    #: ``swiftmail webhooks deliver``: posts outgoing webhooks.
    WEBHOOK_DELIVERER = "webhook-deliverer"
    #: ``swiftmail up``: the supervisor; its children start as their own kinds.
    SUPERVISOR = "up"
    #: any other ``swiftmail`` command that touches the database.
    CLI = "cli"
    #: a test session (``swiftmail_core.testing``).
    TEST = "test"
    #: a benchmark driver (``bench/``).
    BENCH = "bench"


#: Processes that refuse to start on a schema their code does not fit
#: (``swiftmail_core/db/schema_version.py``); admin commands (``migrate``
#: above all) and ``doctor`` must still run there.
SCHEMA_CHECKED = frozenset({
    ProcessKind.API, ProcessKind.PUBLIC, ProcessKind.PUBLIC_ASGI, ProcessKind.WORKER,
    ProcessKind.RELAY, ProcessKind.TRACKING_DRAINER, ProcessKind.WEBHOOK_DELIVERER,
})


@dataclasses.dataclass
class Runtime:
    """Everything a SwiftMail process needs, built from its settings."""

    settings: Settings
    targets: DatabaseTargets
    plugins: PluginManager

    @functools.cached_property
    def redis(self) -> redis.Redis:
        """Return a shared Redis client (a URL's server or the Sentinels' master)."""
        return redis_clients.client(self.settings)

    def close(self) -> None:
        """Release pooled database connections."""
        db.disconnect()


def start(
    settings: Settings, *, process: ProcessKind, plugins: PluginManager | None = None
) -> Runtime:
    """Connect the database handles, load plugins and run ``swiftmail_startup``.

    Call it once per process (after a fork, in the child), naming what the
    process is; every plugin's ``swiftmail_startup`` runs before this returns.
    A serving process whose code does not fit the database's schema raises
    ``SchemaVersionError`` before anything else.
    """
    targets = database_targets(settings)
    if process in SCHEMA_CHECKED:
        check_schema(targets)
    db.connect(targets, pool_size=settings.db_pool_size,
               failover_wait_seconds=settings.db_failover_wait_seconds)
    manager = plugins or PluginManager.load(settings)
    manager.startup(process)
    return Runtime(settings=settings, targets=targets, plugins=manager)
